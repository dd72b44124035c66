//! One HTTP request through the proxy: find the listener's pool in the current
//! view, rewrite the request for the backend, send it on a pooled (or new)
//! keep-alive connection, and hand back the response with its body streaming.
//! A sticky pool's request goes to its session's backend first
//! ([`sticky`]); an `Upgrade` request becomes a tunnel ([`upgrade`]).
//! Local answers: 502 when no backend can be reached or the backend fails,
//! 504 when the backend's response headers do not arrive in time, 503 when
//! the listener has no pool in the current view, the backends are at their
//! `max_connections` past the pool's queue, or a stream waited the pool's
//! `response_timeout` for one of its connection's `max_backend_streams`,
//! 404 when no route takes the request and the listener has no pool, 413
//! when the body passes the listener's `max_body_bytes`, 408 when it falls
//! behind its pace.

use super::backend_conn::{self, BackendBody, Sender};
use super::body::{BoxError, ProxyBody, UpstreamBody};
use super::client_body::ClientBody;
use super::h1_client::{BackendError, SendError};
use super::h1_server::ClientUpgrade;
use super::headers;
use super::request_body::{self, BodyLimits, Cut, Late, RequestBody, RequestBodyError};
use super::upgrade::{self, UpgradeError};
use super::{retry, route, sticky};
use crate::access_log::{Record, StickyOutcome, TlsInfo};
use crate::backend::ActiveGuard;
use crate::balance;
use crate::dataplane::admission::{Admitted, Refusal};
use crate::dataplane::proxy_protocol::Origin;
use crate::dataplane::upstream::{self, ConnectError};
use crate::health::outlier::{self, Outcome};
use crate::view::{Attempts, PoolView, SharedView};
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use raftlb_config::BackendProtocol;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a request needs to know about the connection it came on.
#[derive(Debug)]
pub struct ConnContext {
    pub listener: String,
    pub client: SocketAddr,
    /// Whom backend connections' PROXY headers name (`origin.client` is `client`).
    pub origin: Origin,
    /// The TLS the listener terminated, if it did.
    pub tls: Option<TlsInfo>,
    pub forwarding: headers::Forwarding,
    pub view: SharedView,
    /// Where upgraded connections' tunnels are spawned, so a drain waits for them.
    pub tunnels: TaskTracker,
    /// Cancelled when the drain's time is up: tunnels close then.
    pub drain_deadline: CancellationToken,
    /// The connection as its source's limits count it.
    pub admitted: Admitted,
    /// The requests it may have at backends at once (`max_backend_streams`;
    /// HTTP/2 streams wait here, HTTP/1 has one request at a time).
    pub backend_streams: Arc<Semaphore>,
}

impl ConnContext {
    /// One of the connection's backend streams, waiting up to `wait` for one.
    async fn backend_stream(&self, wait: std::time::Duration) -> Option<OwnedSemaphorePermit> {
        let streams = Arc::clone(&self.backend_streams);
        match Arc::clone(&streams).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => tokio::time::timeout(wait, streams.acquire_owned())
                .await
                .ok()?
                .ok(),
        }
    }
}

/// Proxies one request; never fails (errors become local responses). The
/// permit, if any, is the backend stream the response holds until its
/// body ends. What happened goes in `record` (of `record.listener`).
/// `client_upgrade` is the client's connection for a tunnel, when it asks
/// to upgrade (HTTP/1 only).
pub async fn handle(
    mut request: Request<ClientBody>,
    client_upgrade: Option<ClientUpgrade>,
    conn: Arc<ConnContext>,
    record: &mut Record,
) -> (Response<ProxyBody>, Option<OwnedSemaphorePermit>) {
    let listener = Arc::clone(&record.listener);
    if let Err(retry_after) = conn
        .admitted
        .request(&listener.spec.limits, crate::health::now_ms())
    {
        return (too_many_requests(retry_after), None);
    }
    if listener.spec.http.redirect_https {
        return (redirect_to_https(&request), None);
    }
    let http1 = request.version() < Version::HTTP_2;
    let alt_svc = match request.version() {
        Version::HTTP_3 => None,
        _ => listener.alt_svc.clone(),
    };
    let upgrade =
        upgrade::requested(&request, &listener.spec.http.upgrades).map(|protocols| upgrade::Asked {
            protocols,
            client: client_upgrade,
        });
    prepare(&mut request, &conn.forwarding);
    let pool = match route::find(&listener.routes, &request) {
        Some(route) => {
            route.rewrite(request.headers_mut());
            &route.pool
        }
        None => match &listener.pool {
            Some(pool) => pool,
            None => return (local(StatusCode::NOT_FOUND, "no route for this request\n"), None),
        },
    };
    record.pool = Some(Arc::clone(pool));
    let Some(stream) = conn.backend_stream(pool.spec.response_timeout).await else {
        conn.admitted.count(Refusal::BackendStreams);
        let busy = "too many requests of this connection at backends\n";
        return (local(StatusCode::SERVICE_UNAVAILABLE, busy), None);
    };
    let affinity = sticky::affinity(pool, request.headers(), conn.client.ip());
    let preferred = affinity.as_ref().and_then(|a| a.preferred);
    let hash = balance::request_hash(
        &pool.spec,
        conn.client.ip(),
        request.headers(),
        request.uri().path(),
    );
    let limits = &listener.spec.http;
    let body_limits = BodyLimits::of(limits);
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    record.received = declared.unwrap_or(0);
    let outcome = if declared.is_some_and(|n| n > limits.max_body_bytes) {
        // Refused before any backend sees it.
        Err(Failure::Cut(Cut::TooLarge(limits.max_body_bytes)))
    } else if let Some(upgrade) = upgrade {
        upgrade::forward(
            request,
            upgrade,
            pool,
            preferred,
            Attempts::with_hash(hash),
            limits,
            &conn,
        )
        .await
        .map_err(Failure::from)
    } else {
        // A request that may be retried has a small body read whole, to send again.
        let replayable = retry::wanted(&pool.spec.health.retry, request.method(), request.headers())
            && declared.is_some_and(|n| n <= request_body::READ_AHEAD as u64);
        let (parts, body) = request.into_parts();
        let body = match declared {
            _ if body.is_end_stream() => Ok(RequestBody::complete(bytes::Bytes::new())),
            Some(_) if !replayable => Ok(RequestBody::streaming(body, body_limits)),
            _ => RequestBody::read_ahead(body, body_limits).await,
        };
        match body {
            Ok(body) => {
                if let Some(whole) = body.whole() {
                    record.received = whole.len() as u64;
                }
                let request = Request::from_parts(parts, body);
                forward(request, pool, Target { preferred, hash }, &conn.origin, record).await
            }
            Err(RequestBodyError::Cut(cut)) => Err(Failure::Cut(cut)),
            Err(RequestBodyError::Client(e)) => Err(Failure::BadBody(e)),
        }
    };
    let (response, backend) = match outcome {
        Ok((mut response, backend)) => {
            record.backend = Some(backend);
            record.sticky = StickyOutcome::of(pool.sticky.is_some(), preferred, backend);
            match sticky::settle(pool, affinity.as_ref(), backend, &mut response).await {
                Ok(()) => (response, Some(backend)),
                Err(reason) => {
                    tracing::warn!(listener = %conn.listener, pool = %pool.spec.name, %reason, "sticky session not committed (contract = \"sync\")");
                    (
                        local(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "session could not be replicated; retry\n",
                        ),
                        Some(backend),
                    )
                }
            }
        }
        Err(failure) => {
            tracing::warn!(listener = %conn.listener, pool = %pool.spec.name, error = %failure, "request failed");
            let mut response = failure.response();
            if let Failure::Cut(Cut::TimedOut(late)) = failure {
                conn.admitted.count(match late {
                    Late::Stalled(_) => Refusal::BodyTimeout,
                    Late::BelowRate(_) => Refusal::BodyRate,
                });
                // The rest of the body is not read: the connection is done.
                if http1 {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
            }
            (response, None)
        }
    };
    let mut response = response;
    if let Some(alt_svc) = alt_svc {
        response.headers_mut().insert(header::ALT_SVC, alt_svc);
    }
    // A local answer holds no backend.
    (response, backend.and(Some(stream)))
}

/// Rewrites a client's request into what the backend receives: HTTP/1.1 in
/// origin form with a Host header, hop-by-hop headers removed, forwarding
/// headers added.
fn prepare<B>(request: &mut Request<B>, forwarding: &headers::Forwarding) {
    if let Some(authority) = request.uri().authority()
        && !request.headers().contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(header::HOST, host);
    }
    if request.uri().scheme().is_some() {
        // Origin form: the path and query alone, moved (not copied and
        // parsed again); every HTTP/2 request comes here.
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        parts.scheme = None;
        parts.authority = None;
        parts
            .path_and_query
            .get_or_insert_with(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
    }
    *request.version_mut() = Version::HTTP_11;
    headers::remove_hop_by_hop(request.headers_mut());
    forwarding.apply(request.headers_mut());
}

/// Why a request got no backend response.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Connect(#[from] ConnectError),
    #[error("backend {backend}: {source}")]
    Backend {
        backend: SocketAddr,
        source: BackendError,
    },
    #[error("backend {backend}: no response headers within {timeout:?}")]
    Timeout {
        backend: SocketAddr,
        timeout: std::time::Duration,
    },
    #[error(transparent)]
    Cut(Cut),
    #[error("malformed request body: {0}")]
    BadBody(BoxError),
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
}

impl Failure {
    fn response(&self) -> Response<ProxyBody> {
        match self {
            Failure::Timeout { .. } | Failure::Upgrade(UpgradeError::Timeout { .. }) => {
                local(StatusCode::GATEWAY_TIMEOUT, "backend timed out\n")
            }
            Failure::Cut(Cut::TooLarge(_)) => {
                local(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
            }
            Failure::Cut(Cut::TimedOut(_)) => local(StatusCode::REQUEST_TIMEOUT, "request body too slow\n"),
            Failure::BadBody(_) => local(StatusCode::BAD_REQUEST, "malformed request body\n"),
            Failure::Connect(ConnectError::Queue { .. })
            | Failure::Upgrade(UpgradeError::Connect(ConnectError::Queue { .. })) => local(
                StatusCode::SERVICE_UNAVAILABLE,
                "every backend is at its connection limit\n",
            ),
            Failure::Connect(_) | Failure::Backend { .. } | Failure::Upgrade(_) => {
                local(StatusCode::BAD_GATEWAY, "no backend answered\n")
            }
        }
    }
}

/// Where a request should go first: a sticky session's backend, else the
/// balancer's pick for the key `hash`.
#[derive(Debug, Clone, Copy)]
struct Target {
    preferred: Option<SocketAddr>,
    hash: Option<u64>,
}

/// Sends the request to a backend of `pool` (`target`) and returns its
/// response; `record` gets the tries' retries and timings. A request that failed before any response byte is sent
/// again to another backend when it may be ([`retry`]), its body was read
/// whole, and the pool's retry budget allows. The request stays here
/// between tries: an HTTP/1.1 backend only reads it, and an HTTP/2 one is
/// given a copy when a retry may need the original.
async fn forward(
    mut request: Request<RequestBody>,
    pool: &PoolView,
    target: Target,
    origin: &Origin,
    record: &mut Record,
) -> Result<(Response<ProxyBody>, SocketAddr), Failure> {
    let policy = &pool.spec.health.retry;
    // With one backend there is nowhere to retry.
    let may_retry = pool.backends.len() > 1 && retry::wanted(policy, request.method(), request.headers());
    pool.runtime.retry_budget.deposit(policy);
    let mut attempts = Attempts::with_hash(target.hash);
    loop {
        let tried = try_backend(
            &mut request,
            may_retry,
            pool,
            target.preferred,
            &mut attempts,
            origin,
            record,
        );
        let failure = match tried.await {
            Ok(answered) => return Ok(answered),
            Err(failure) => failure,
        };
        if !may_retry
            || request.body().whole().is_none()
            || !matches!(failure, Failure::Backend { .. })
            || record.retries >= policy.attempts
            || !pool.can_try_another(&attempts)
        {
            return Err(failure);
        }
        if !pool.runtime.retry_budget.withdraw() {
            pool.runtime.retries_refused_total.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(pool = %pool.spec.name, "retry budget spent; not retrying");
            return Err(failure);
        }
        record.retries += 1;
        pool.runtime.retries_total.fetch_add(1, Ordering::Relaxed);
        tracing::info!(pool = %pool.spec.name, error = %failure, retry = record.retries, "retrying on another backend");
    }
}

/// One try: a backend of `pool` not yet in `attempts`, and its response
/// (`keep`: leave `request` whole for a retry). Each outcome counts for the
/// backend's outlier detection; the time from sending to the response
/// headers (or the timeout) is its latency sample for peak EWMA, and the
/// record's first byte time, beside the time to a ready connection.
async fn try_backend(
    request: &mut Request<RequestBody>,
    keep: bool,
    pool: &PoolView,
    preferred: Option<SocketAddr>,
    attempts: &mut Attempts,
    origin: &Origin,
    record: &mut Record,
) -> Result<(Response<ProxyBody>, SocketAddr), Failure> {
    let connecting = Instant::now();
    let (mut sender, mut guard, mut fresh) = checkout(pool, preferred, attempts, origin).await?;
    // One clock read ends the wait for a connection and starts the first
    // send's.
    let mut started = Instant::now();
    record.connect = Some(started - connecting);
    let mut backend = guard.backend().address();
    if pool.spec.backend_protocol == BackendProtocol::H2 {
        for_http2(request, backend, pool.tls.is_some());
    }
    let timeout = pool.spec.response_timeout;
    let failed = |guard: &ActiveGuard, failure: Failure| {
        outlier::record(pool, guard.backend(), Outcome::Failure);
        Err(failure)
    };
    loop {
        let due = tokio::time::Instant::from_std(started + timeout);
        let sent = tokio::time::timeout_at(due, sender.send(request, keep)).await;
        let elapsed = started.elapsed();
        if let Err(_) | Ok(Ok(_)) = &sent {
            if pool.samples_latency() {
                guard.backend().latency().record(elapsed);
            }
            record.first_byte = Some(elapsed);
        }
        match &sent {
            Ok(Ok(response)) => guard
                .backend()
                .traffic()
                .response(response.status().as_u16(), elapsed),
            Err(_) | Ok(Err(SendError { unsent: false, .. })) => guard.backend().traffic().failure(),
            Ok(Err(_)) => {}
        }
        match sent {
            Err(_) => return failed(&guard, Failure::Timeout { backend, timeout }),
            Ok(Ok(response)) => {
                outlier::record(pool, guard.backend(), Outcome::of_status(response.status()));
                return Ok((wrap(response, guard, pool.tls.is_some()), backend));
            }
            // A pooled connection the backend closed before taking the
            // request: the request is intact, send it on a new connection,
            // to another backend if this one is gone.
            Ok(Err(SendError { unsent: true, .. })) if !fresh => {
                fresh = true;
                match backend_conn::handshake(backend, pool, origin).await {
                    Ok(new) => sender = new,
                    Err(e) => {
                        tracing::warn!(pool = %pool.spec.name, error = %e, "reconnect failed, trying another backend");
                        outlier::record(pool, guard.backend(), Outcome::Failure);
                        guard.backend().traffic().failure();
                        (sender, guard, _) = checkout(pool, None, attempts, origin).await?;
                        backend = guard.backend().address();
                    }
                }
            }
            Ok(Err(SendError { error, .. })) => {
                // The client's body, not the backend, failed.
                if let Some(cut) = error.cut() {
                    return Err(Failure::Cut(cut));
                }
                return failed(
                    &guard,
                    Failure::Backend {
                        backend,
                        source: error,
                    },
                );
            }
        }
        // Sent again on the new connection: its time starts now.
        started = Instant::now();
    }
}

/// Rewrites an HTTP/1.1-shaped request for an HTTP/2 backend: the version,
/// and the target in absolute form (`:scheme` and `:authority` come from it;
/// the authority is the client's `Host`, else the backend's address). Once
/// is enough: a request already in HTTP/2 form is left as it is.
fn for_http2(request: &mut Request<RequestBody>, backend: SocketAddr, tls: bool) {
    if request.version() == Version::HTTP_2 {
        return;
    }
    let authority = request
        .headers_mut()
        .remove(header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_string))
        .unwrap_or_else(|| backend.to_string());
    let scheme = if tls { "https" } else { "http" };
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    if let Ok(uri) = format!("{scheme}://{authority}{path}").parse::<Uri>() {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = Version::HTTP_2;
}

fn wrap(response: Response<BackendBody>, guard: ActiveGuard, tls: bool) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, ProxyBody::Upstream(UpstreamBody::new(body, guard, tls)))
}

/// A ready connection to one of the pool's backends: an idle pooled one when
/// the chosen backend has one, else a new one (trying other backends when
/// connecting fails). The bool is true for a new connection.
async fn checkout(
    pool: &PoolView,
    preferred: Option<SocketAddr>,
    attempts: &mut Attempts,
    origin: &Origin,
) -> Result<(Sender, ActiveGuard, bool), ConnectError> {
    let ((sender, fresh), guard) = upstream::reach(pool, preferred, attempts, |backend| async move {
        while let Some(mut sender) = backend_conn::take_idle(backend.address(), pool, origin) {
            if sender.ready().await.is_ok() {
                return Ok((sender, false));
            }
        }
        Ok((
            backend_conn::handshake(backend.address(), pool, origin).await?,
            true,
        ))
    })
    .await?;
    Ok((sender, guard, fresh))
}

/// `301` to the same host (default port) and path over https.
fn redirect_to_https<B>(request: &Request<B>) -> Response<ProxyBody> {
    let host = request.uri().host().map(str::to_string).or_else(|| {
        let value = request.headers().get(header::HOST)?.to_str().ok()?;
        Some(value.parse::<http::uri::Authority>().ok()?.host().to_string())
    });
    let Some(host) = host else {
        return local(StatusCode::BAD_REQUEST, "no host to redirect to\n");
    };
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let mut response = local(StatusCode::MOVED_PERMANENTLY, "moved to https\n");
    if let Ok(location) = HeaderValue::from_str(&format!("https://{host}{path}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// `429` for a source over its request rate, with when to come back.
fn too_many_requests(retry_after_secs: u64) -> Response<ProxyBody> {
    let mut response = local(StatusCode::TOO_MANY_REQUESTS, "too many requests\n");
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

pub(super) fn local(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::local(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarding() -> headers::Forwarding {
        headers::Forwarding::new("10.0.0.9:4000".parse().unwrap(), "https", headers::Claims::Append)
    }

    #[test]
    fn an_absolute_target_becomes_origin_form_with_its_host() {
        // How HTTP/2 requests arrive (:scheme, :authority, :path).
        let mut request = Request::new(());
        *request.uri_mut() = "https://example.com:8443/a/b?c=d".parse().unwrap();
        *request.version_mut() = Version::HTTP_2;
        prepare(&mut request, &forwarding());
        assert_eq!(request.uri(), "/a/b?c=d");
        assert_eq!(request.uri().scheme(), None);
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()[header::HOST], "example.com:8443");
        assert_eq!(request.headers()["x-forwarded-for"], "10.0.0.9");
    }

    #[test]
    fn a_host_header_wins_over_the_authority() {
        let mut request = Request::new(());
        *request.uri_mut() = "http://a.example/".parse().unwrap();
        request
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_static("b.example"));
        prepare(&mut request, &forwarding());
        assert_eq!(request.uri(), "/");
        assert_eq!(request.headers()[header::HOST], "b.example");
    }

    #[test]
    fn an_origin_form_target_is_kept() {
        let mut request = Request::new(());
        *request.uri_mut() = "/x?y".parse().unwrap();
        prepare(&mut request, &forwarding());
        assert_eq!(request.uri(), "/x?y");
    }

    /// A request's future is copied whole when an HTTP/2 stream's task is
    /// spawned and when an HTTP/1 request starts, so the cold paths in it
    /// (connecting, TLS) are boxed: with them inline it was 11 KB.
    #[test]
    #[allow(unreachable_code)]
    fn a_requests_future_stays_small() {
        fn size<F>(_: &dyn Fn() -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let handle = size(&|| handle(unreachable!(), None, unreachable!(), unreachable!()));
        let checkout = size(&|| checkout(unreachable!(), None, unreachable!(), unreachable!()));
        assert!(handle <= 6 * 1024, "proxy::handle's future is {handle} bytes");
        assert!(checkout <= 1024, "checkout's future is {checkout} bytes");
    }
}
