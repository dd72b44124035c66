//! Which requests may be sent again to another backend, and the copy they
//! are sent again from. A request qualifies when it is idempotent (GET,
//! HEAD, OPTIONS, PUT, DELETE, TRACE, or marked with an `Idempotency-Key`
//! header), its pool allows retries, and its body was read whole (bodiless,
//! or small enough to be read ahead). Whether a retry happens also depends
//! on how the try failed (before any response byte) and on the pool's
//! retry budget: see [`proxy`](super::proxy).

use super::request_body::RequestBody;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, Version};
use raftlb_config::RetryPolicy;

/// The header that marks any request idempotent (IETF httpapi draft).
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Whether a request with `method` and `headers` may be sent twice.
pub fn idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key(IDEMPOTENCY_KEY)
}

/// Whether a request may be retried under `policy`, before its body is read
/// (the caller then reads a small body whole).
pub fn wanted(policy: &RetryPolicy, method: &Method, headers: &HeaderMap) -> bool {
    policy.attempts > 0 && idempotent(method, headers)
}

/// What a retry sends again.
#[derive(Debug)]
pub struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Replay {
    /// A copy of `request`, if it qualifies (see the module doc).
    pub fn of(request: &Request<RequestBody>, policy: &RetryPolicy) -> Option<Replay> {
        if !wanted(policy, request.method(), request.headers()) {
            return None;
        }
        Some(Replay {
            body: request.body().replay()?,
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        })
    }

    /// The request again.
    pub fn request(&self) -> Request<RequestBody> {
        let mut request = Request::new(RequestBody::complete(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods_and_marked_requests_qualify() {
        let none = HeaderMap::new();
        for method in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(idempotent(&method, &none), "{method}");
        }
        assert!(!idempotent(&Method::POST, &none));
        assert!(!idempotent(&Method::PATCH, &none));
        let mut marked = HeaderMap::new();
        marked.insert(IDEMPOTENCY_KEY, "8e03978e".parse().unwrap());
        assert!(idempotent(&Method::POST, &marked));
        let off = RetryPolicy {
            attempts: 0,
            ..RetryPolicy::default()
        };
        assert!(!wanted(&off, &Method::GET, &none));
    }

    #[test]
    fn only_a_body_read_whole_can_be_replayed() {
        let policy = RetryPolicy::default();
        let mut request = Request::new(RequestBody::complete(Bytes::from_static(b"abc")));
        *request.method_mut() = Method::PUT;
        let replay = Replay::of(&request, &policy).expect("a whole body replays");
        let again = replay.request();
        assert_eq!(again.method(), Method::PUT);
        assert_eq!(again.body().replay().as_deref(), Some(&b"abc"[..]));
        *request.method_mut() = Method::POST;
        assert!(Replay::of(&request, &policy).is_none(), "POST is not idempotent");
    }
}
