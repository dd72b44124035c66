//! Which requests may be sent again to another backend. A request
//! qualifies when it is idempotent (GET, HEAD, OPTIONS, PUT, DELETE, TRACE,
//! or marked with an `Idempotency-Key` header), its pool allows retries, and
//! its body was read whole (bodiless, or small enough to be read ahead).
//! Whether a retry happens also depends on how the try failed (before any
//! response byte) and on the pool's retry budget: see [`proxy`](super::proxy).

use super::request_body::RequestBody;
use http::{HeaderMap, Method, Request};
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

/// A copy of `request` for a transport that takes requests whole (hyper's
/// HTTP/2 client), if its body was read whole; the original then stays
/// whole for a retry.
pub fn copy(request: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    let body = request.body().whole()?.clone();
    let mut copy = Request::new(RequestBody::complete(body));
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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
    fn only_a_body_read_whole_can_be_copied() {
        let mut request = Request::new(RequestBody::complete(Bytes::from_static(b"abc")));
        *request.method_mut() = Method::PUT;
        request.headers_mut().insert("x-a", "1".parse().unwrap());
        let copy = copy(&request).expect("a whole body is copied");
        assert_eq!(copy.method(), Method::PUT);
        assert_eq!(copy.headers()["x-a"], "1");
        assert_eq!(copy.body().whole().map(|b| &b[..]), Some(&b"abc"[..]));
        let taken = request.body_mut().take();
        assert!(copy_of_spent_is_none(&request), "a body handed on is not whole");
        assert_eq!(taken.whole().map(|b| &b[..]), Some(&b"abc"[..]));
    }

    fn copy_of_spent_is_none(request: &Request<RequestBody>) -> bool {
        copy(request).is_none()
    }
}
