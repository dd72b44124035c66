//! raftlb's HTTP/1.x server: one task per client connection reads a
//! request head ([`head`]), hands the request to the proxy, writes the
//! response ([`response`]) and, when both sides keep the connection, reads
//! the next head. There is no dispatcher between the connection and the
//! request (hyper's server has one, and channels to it): a keep-alive
//! request costs its reads, its writes and the proxying.
//!
//! - **Timeouts.** A head must arrive whole within the listener's
//!   `header_read_timeout`, counted from the connection's start for the
//!   first request and from its first byte for the next ones, however
//!   slowly the bytes come (slowloris); then the connection closes without
//!   an answer, counted as a `header_timeout` refusal. Between requests
//!   the connection may sit idle for `keepalive_timeout`. Writes that make
//!   no progress for `send_timeout` close it ([`response::Outbound`]).
//! - **Bodies.** A request body is read from the connection as the proxy
//!   forwards it ([`inbound::H1Body`]); once it has been read to its end
//!   the connection reads the next head. A response sent before its
//!   request's body was read closes the connection (`Connection: close`),
//!   its framing lost. `Expect: 100-continue` is answered before the body
//!   is read, unless the announced length is already over the limit.
//! - **Refusals.** A head refused ([`head::Refused`]) gets its status with
//!   `Connection: close`, and the connection lingers to read what the
//!   client still sends (up to a second), so that the answer is not lost
//!   to a reset.
//! - **Upgrades.** A request asking to upgrade carries a [`ClientUpgrade`];
//!   when its response is `101`, the connection, with what was read past
//!   the head, goes to the tunnel.
//! - **Drain.** When the node drains, the next response says
//!   `Connection: close`, and an idle connection waits at most
//!   [`DRAIN_IDLE`] for a request already on its way.
//! - **Memory.** An idle connection holds no buffer: the task, its state
//!   and its socket, a few kilobytes.

pub mod head;
mod inbound;
mod response;

use inbound::Returned;
use inbound::upgraded;
pub use inbound::{H1Body, Upgraded};

use super::client_body::ClientBody;
use super::client_conn::ConnWatch;
use super::headers::connection_has;
use super::proxy::{self, ConnContext};
use crate::access_log::Record;
use crate::dataplane::Shutdown;
use crate::dataplane::admission::Refusal;
use bytes::BytesMut;
use head::{BodyFraming, Head, HeadLimits, Refused};
use http::{Method, Request, StatusCode, Version, header};
use inbound::Inbound;
use response::{Asked, Outbound};
use std::future::poll_fn;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long a draining connection with no request in flight waits for its
/// client's next request (answered, with `Connection: close`): closing it
/// at once would race a request already on its way.
pub const DRAIN_IDLE: Duration = Duration::from_secs(1);
/// How long a closing connection reads (and drops) what its client still
/// sends after a refusal, and how much.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// The client connection of an upgrade request, once its `101` has gone
/// out.
#[derive(Debug)]
pub struct ClientUpgrade(pub oneshot::Receiver<Upgraded>);

/// A listener's settings for its HTTP/1 connections.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub head: HeadLimits,
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub send_timeout: Duration,
}

/// How waiting for a head ended without one.
enum NoHead {
    /// The client closed, or the connection failed.
    Closed,
    /// Idle past the keep-alive (or drain) time.
    Idle,
    /// The head's time ran out.
    Late,
    Refused(Refused),
}

/// Serves one HTTP/1 connection (`buf`: bytes read from it already) until
/// it closes.
pub async fn serve<S>(
    stream: S,
    buf: BytesMut,
    settings: Settings,
    context: Arc<ConnContext>,
    watch: Arc<ConnWatch>,
    shutdown: &Shutdown,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(stream);
    let mut inbound = Inbound::new(Box::pin(read), buf);
    let guard = Arc::clone(context.admitted.listener());
    let tls = context.tls.is_some();
    let mut out = Outbound::new(Box::pin(write), settings.send_timeout, guard, tls);
    let cancelled = shutdown.token.cancelled();
    tokio::pin!(cancelled);
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut conn = Waiting {
        settings,
        head_started: Some(watch.born()),
        idle_since: Instant::now(),
        draining: false,
    };
    loop {
        let head = conn
            .next_head(&mut inbound, timer.as_mut(), cancelled.as_mut())
            .await;
        let head = match head {
            Ok(head) => head,
            Err(NoHead::Refused(refused)) => {
                tracing::debug!(client = %context.client, %refused, "request head refused");
                let answer = response::refusal(refused.status(), refused.text());
                if out.write_all(&mut [IoSlice::new(&answer)]).await.is_ok() {
                    linger(&mut out, &mut inbound).await;
                }
                return;
            }
            Err(NoHead::Late) => {
                watch.refused(Refusal::HeaderTimeout);
                return;
            }
            Err(NoHead::Closed | NoHead::Idle) => return out.close().await,
        };
        // A next head already begun (pipelined) is timed from now: its time
        // runs while this response goes out.
        let next_began = (!inbound.buf.is_empty()).then(Instant::now);
        // Boxed: a request's state (the proxying, its retries and its
        // backend I/O) runs to kilobytes, which an idle connection's task
        // would otherwise keep for its whole life.
        let served = Box::pin(serve_request(head, inbound, &context, &watch, &mut out, shutdown)).await;
        inbound = match served {
            Served::KeepAlive(next) => next,
            Served::Close(None) => return,
            Served::Close(Some(mut unread)) => return linger(&mut out, &mut unread).await,
            Served::Upgrade(handover, inbound) => {
                let _ = handover.send(upgraded(inbound, out.into_inner()));
                return;
            }
        };
        inbound.shrink();
        conn.head_started = match inbound.buf.is_empty() {
            true => None,
            // (After a body: from when it ended, about now.)
            false => Some(next_began.unwrap_or_else(Instant::now)),
        };
        conn.idle_since = Instant::now();
    }
}

/// How a request left its connection.
enum Served {
    /// Ready for the next head.
    KeepAlive(Inbound),
    /// Closed; with its read side when input may be left unread.
    Close(Option<Inbound>),
    /// A `101` went out: the connection goes to the tunnel.
    Upgrade(oneshot::Sender<Upgraded>, Inbound),
}

/// One request: the proxy's answer, written.
async fn serve_request(
    head: Head,
    inbound: Inbound,
    context: &Arc<ConnContext>,
    watch: &Arc<ConnWatch>,
    out: &mut Outbound,
    shutdown: &Shutdown,
) -> Served {
    let Head {
        parts,
        body: framing,
        keep_alive,
        expects_continue,
    } = head;
    let asked = Asked {
        head: parts.method == Method::HEAD,
        version: parts.version,
    };
    let upgrade_asked = parts.version == Version::HTTP_11
        && parts.headers.contains_key(header::UPGRADE)
        && connection_has(&parts.headers, "upgrade");
    let (body, mut kept, mut lent) = match framing {
        BodyFraming::None => (ClientBody::Empty, Some(inbound), None),
        framing => {
            let (body, back) = H1Body::new(inbound, framing);
            (ClientBody::Http1(body), None, Some(back))
        }
    };
    let mut request = Request::from_parts(parts, body);
    let (upgrade, client_upgrade) = match upgrade_asked {
        true => {
            let (handover, taken) = oneshot::channel();
            (Some(handover), Some(ClientUpgrade(taken)))
        }
        false => (None, None),
    };
    let _in_flight = watch.request_started();
    let Some(listener) = context.view.load().listener(&context.listener).cloned() else {
        let gone = proxy::local(StatusCode::SERVICE_UNAVAILABLE, "no route for this listener\n");
        let _ = out.send(gone, asked, false).await;
        return Served::Close(None);
    };
    if expects_continue && within_body_limit(&request, listener.spec.http.max_body_bytes) {
        let continued = out
            .write_all(&mut [IoSlice::new(b"HTTP/1.1 100 Continue\r\n\r\n")])
            .await;
        if continued.is_err() {
            return Served::Close(None);
        }
    }
    let mut record = Record::http(listener, context.client, context.tls.clone(), &mut request);
    let handled = proxy::handle(request, client_upgrade, Arc::clone(context), &mut record);
    let (response, _backend_stream) = handled.await;
    // A body read to its end has given the connection back by now; one
    // dropped unread, with the rest of the body still to come.
    let mut unread = None;
    if let Some(Ok(Returned { inbound, ended })) = lent.as_mut().map(oneshot::Receiver::try_recv) {
        match ended {
            true => kept = Some(inbound),
            false => unread = Some(inbound),
        }
    }
    let status = response.status();
    record.status = Some(status.as_u16());
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let (result, _) = out.send(response, asked, true).await;
        record.finish();
        return match (result, upgrade, kept) {
            (Ok(_), Some(handover), Some(inbound)) => Served::Upgrade(handover, inbound),
            _ => Served::Close(None),
        };
    }
    let keep_alive = keep_alive && kept.is_some() && !shutdown.token.is_cancelled();
    let (result, sent) = out.send(response, asked, keep_alive).await;
    record.sent = sent;
    record.finish();
    match (result, kept) {
        (Ok(true), Some(inbound)) => Served::KeepAlive(inbound),
        // Input may be left unread: the rest of a body, or pipelined bytes.
        (Ok(_), kept) => match unread.or(kept.filter(|inbound| !inbound.buf.is_empty())) {
            Some(inbound) => Served::Close(Some(inbound)),
            None => {
                out.close().await;
                Served::Close(None)
            }
        },
        (Err(e), _) => {
            tracing::debug!(client = %context.client, error = %e, "response to the client cut off");
            Served::Close(None)
        }
    }
}

/// Whether a request's announced body is within `max` (a chunked one is:
/// it is judged as it comes).
fn within_body_limit<B>(request: &Request<B>, max: u64) -> bool {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| head::parse_length(v.as_bytes()))
        .is_none_or(|n| n <= max)
}

/// After the last answer: the write side closed, what the client still
/// sends read and dropped for a while (see the module doc).
async fn linger(out: &mut Outbound, inbound: &mut Inbound) {
    let _ = tokio::time::timeout(LINGER, async {
        let _ = out.shutdown().await;
        inbound.discard(LINGER_BYTES).await;
    })
    .await;
}

/// Where a connection is between requests.
struct Waiting {
    settings: Settings,
    /// When the head being awaited started (its first byte; the first
    /// head's, the connection's start); `None` while idle.
    head_started: Option<Instant>,
    idle_since: Instant,
    /// The node drains: idle time is [`DRAIN_IDLE`] at most.
    draining: bool,
}

impl Waiting {
    /// The next head, read within its time.
    async fn next_head(
        &mut self,
        inbound: &mut Inbound,
        mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
        mut cancelled: std::pin::Pin<&mut tokio_util::sync::WaitForCancellationFuture<'_>>,
    ) -> Result<Head, NoHead> {
        loop {
            if !inbound.buf.is_empty() {
                if let Some(head) =
                    head::parse(&mut inbound.buf, self.settings.head).map_err(NoHead::Refused)?
                {
                    return Ok(head);
                }
                self.head_started.get_or_insert_with(Instant::now);
            }
            let deadline = match self.head_started {
                Some(started) => started + self.settings.header_read_timeout,
                None if self.draining => self.idle_since + self.settings.keepalive_timeout.min(DRAIN_IDLE),
                None => self.idle_since + self.settings.keepalive_timeout,
            };
            if Instant::now() >= deadline {
                return Err(match self.head_started {
                    Some(_) => NoHead::Late,
                    None => NoHead::Idle,
                });
            }
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            tokio::select! {
                biased;
                read = poll_fn(|cx| inbound.poll_fill(cx)) => match read {
                    Ok(0) | Err(_) => return Err(NoHead::Closed),
                    Ok(_) => {}
                },
                () = &mut timer => {}
                () = &mut cancelled, if !self.draining => self.draining = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection's memory is mostly its task, which is as large
    /// as the connection's future in its largest state.
    #[test]
    #[allow(unreachable_code)]
    fn a_connections_future_stays_small() {
        fn size<F>(_: &dyn Fn() -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let serve = size(&|| {
            serve::<tokio::net::TcpStream>(
                unreachable!(),
                unreachable!(),
                unreachable!(),
                unreachable!(),
                unreachable!(),
                unreachable!(),
            )
        });
        let request = size(&|| {
            serve_request(
                unreachable!(),
                unreachable!(),
                unreachable!(),
                unreachable!(),
                unreachable!(),
                unreachable!(),
            )
        });
        println!("serve: {serve} B, serve_request: {request} B");
        assert!(serve <= 1536, "h1_server::serve's future is {serve} bytes");
    }
}
