//! The body a backend receives. A body of announced length streams
//! through as it arrives. A chunked body (no length) is read ahead up to
//! [`READ_AHEAD`] bytes before any backend is chosen, so a malformed one
//! is answered 400 without a backend seeing the request (request
//! smuggling), and a small one goes on with a `Content-Length`; a longer
//! one streams on after what was read ahead. Either way the body is cut
//! off ([`Cut`]) once it passes the listener's `max_body_bytes` (413), or
//! when it falls behind its [`Pace`] (408: a client stalling or trickling a
//! body would hold a backend connection): its next piece is `body_timeout`
//! late (nginx's `client_body_timeout`), or less than `body_timeout +
//! received / body_min_rate` has passed since it started (Apache's
//! `mod_reqtimeout` `MinRate`). One timer per body, moved only when it
//! fires early, so a body that keeps its pace costs no timer operation per
//! piece.

use super::body::BoxError;
use super::client_body::ClientBody;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// How much of a chunked body is read before the request is forwarded.
pub const READ_AHEAD: usize = 64 * 1024;

/// Why the proxy cut a client's request body off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Cut {
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the request body {0}")]
    TimedOut(Late),
}

/// Which of its deadlines a late body missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Late {
    /// No piece for `body_timeout`.
    #[error("stalled for {0:?}")]
    Stalled(Duration),
    /// Fewer than `body_min_rate` bytes a second, after `body_timeout`.
    #[error("came slower than {0} bytes/s")]
    BelowRate(u32),
}

/// Why a request body ended early.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// Malformed framing, or the client went away.
    #[error(transparent)]
    Client(BoxError),
    #[error(transparent)]
    Cut(#[from] Cut),
}

/// The listener's limits on a request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: u64,
    pub timeout: Duration,
    /// Bytes a second; `0`: no rate.
    pub min_rate: u32,
}

impl BodyLimits {
    /// A listener's limits on bodies.
    pub fn of(limits: &raftlb_config::HttpLimits) -> Self {
        BodyLimits {
            max_bytes: limits.max_body_bytes,
            timeout: limits.body_timeout,
            min_rate: limits.body_min_rate,
        }
    }
}

/// How far a body has come, against its deadlines (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    started: Instant,
    /// When the last piece arrived (or the body started).
    last: Instant,
    received: u64,
}

impl Pace {
    pub fn new(now: Instant) -> Self {
        Pace {
            started: now,
            last: now,
            received: 0,
        }
    }

    /// `bytes` more arrived at `now`.
    pub fn arrived(&mut self, now: Instant, bytes: u64) {
        self.last = now;
        self.received = self.received.saturating_add(bytes);
    }

    /// When the body is late, and which deadline that is.
    pub fn due(&self, limits: &BodyLimits) -> (Instant, Late) {
        let stall = (
            self.last.checked_add(limits.timeout).unwrap_or_else(far_future),
            Late::Stalled(limits.timeout),
        );
        if limits.min_rate == 0 {
            return stall;
        }
        let earned = Duration::from_millis(self.received.saturating_mul(1000) / u64::from(limits.min_rate));
        let rate = self
            .started
            .checked_add(limits.timeout)
            .and_then(|t| t.checked_add(earned))
            .unwrap_or_else(far_future);
        match rate < stall.0 {
            true => (rate, Late::BelowRate(limits.min_rate)),
            false => stall,
        }
    }
}

/// Later than any deadline a body could meet (a year after now).
fn far_future() -> Instant {
    Instant::now() + raftlb_config::limits::MAX_DURATION
}

#[derive(Debug)]
pub struct RequestBody {
    /// Read ahead, sent first.
    ahead: Option<Bytes>,
    /// The rest, if the body had not ended.
    rest: Option<ClientBody>,
    limits: BodyLimits,
    /// Bytes handed on so far; `u64::MAX` once [spent](RequestBody::spent).
    seen: u64,
    pace: Pace,
    /// At or before the pace's deadline (while there is a rest).
    deadline: Option<Pin<Box<Sleep>>>,
}

impl RequestBody {
    /// Streams `body` as it arrives.
    pub fn streaming(body: ClientBody, limits: BodyLimits) -> Self {
        let pace = Pace::new(Instant::now());
        RequestBody {
            ahead: None,
            rest: Some(body),
            limits,
            seen: 0,
            pace,
            deadline: Some(Box::pin(tokio::time::sleep_until(pace.due(&limits).0))),
        }
    }

    /// A body already read whole (maybe empty).
    pub fn complete(bytes: Bytes) -> Self {
        RequestBody {
            ahead: Some(bytes),
            rest: None,
            limits: BodyLimits {
                max_bytes: u64::MAX,
                timeout: Duration::ZERO,
                min_rate: 0,
            },
            seen: 0,
            pace: Pace::new(Instant::now()),
            deadline: None,
        }
    }

    /// A body handed on already ([`RequestBody::take`]): empty, and never
    /// whole, so that nothing sends it again.
    pub fn spent() -> Self {
        RequestBody {
            seen: u64::MAX,
            ..RequestBody::complete(Bytes::new())
        }
    }

    /// The body, leaving this one [spent](RequestBody::spent).
    pub fn take(&mut self) -> Self {
        std::mem::replace(self, RequestBody::spent())
    }

    /// The whole body, if it was read whole and none of it sent yet: what
    /// a retry can send again.
    pub fn whole(&self) -> Option<&Bytes> {
        static EMPTY: Bytes = Bytes::new();
        match (&self.rest, self.seen) {
            (None, 0) => Some(self.ahead.as_ref().unwrap_or(&EMPTY)),
            _ => None,
        }
    }

    /// Reads a chunked body ahead (see the module's doc); `Err` for a
    /// malformed, oversized or late one, before anything was forwarded.
    pub async fn read_ahead(mut body: ClientBody, limits: BodyLimits) -> Result<Self, RequestBodyError> {
        let mut pace = Pace::new(Instant::now());
        let mut ahead = BytesMut::new();
        while ahead.len() < READ_AHEAD {
            let (due, late) = pace.due(&limits);
            let frame = tokio::time::timeout_at(due, body.frame())
                .await
                .map_err(|_| Cut::TimedOut(late))?;
            match frame {
                None => {
                    return Ok(RequestBody {
                        ahead: Some(ahead.freeze()),
                        rest: None,
                        limits,
                        seen: 0,
                        pace,
                        deadline: None,
                    });
                }
                Some(frame) => {
                    if let Ok(data) = frame.map_err(RequestBodyError::Client)?.into_data() {
                        pace.arrived(Instant::now(), data.len() as u64);
                        ahead.extend_from_slice(&data);
                    }
                    if ahead.len() as u64 > limits.max_bytes {
                        return Err(Cut::TooLarge(limits.max_bytes).into());
                    }
                }
            }
        }
        Ok(RequestBody {
            ahead: Some(ahead.freeze()),
            rest: Some(body),
            limits,
            seen: 0,
            pace,
            deadline: Some(Box::pin(tokio::time::sleep_until(pace.due(&limits).0))),
        })
    }

    /// `Pending` from the client: has the body fallen behind?
    fn late(&mut self, cx: &mut Context<'_>) -> Option<Late> {
        let deadline = self.deadline.as_mut()?;
        while deadline.as_mut().poll(cx).is_ready() {
            let (due, late) = self.pace.due(&self.limits);
            if Instant::now() >= due {
                return Some(late);
            }
            deadline.as_mut().reset(due);
        }
        None
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        if let Some(ahead) = self.ahead.take() {
            self.seen += ahead.len() as u64;
            if !ahead.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(ahead))));
            }
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(rest).poll_frame(cx);
        match &polled {
            Poll::Pending => {
                if let Some(late) = self.late(cx) {
                    return Poll::Ready(Some(Err(Cut::TimedOut(late).into())));
                }
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let bytes = data.len() as u64;
                    self.pace.arrived(Instant::now(), bytes);
                    self.seen += bytes;
                    if self.seen > self.limits.max_bytes {
                        return Poll::Ready(Some(Err(Cut::TooLarge(self.limits.max_bytes).into())));
                    }
                }
            }
            _ => {}
        }
        polled.map(|frame| frame.map(|result| result.map_err(RequestBodyError::Client)))
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.as_ref().is_none_or(Bytes::is_empty)
            && self.rest.as_ref().is_none_or(ClientBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let ahead = self.ahead.as_ref().map_or(0, |a| a.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(ahead),
            Some(rest) => {
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + ahead);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + ahead);
                }
                hint
            }
        }
    }
}

/// The cut, if `error` (from sending a request) came from one.
pub fn cut(error: &(dyn std::error::Error + 'static)) -> Option<Cut> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(cut) = e.downcast_ref::<Cut>() {
            return Some(*cut);
        }
        if let Some(RequestBodyError::Cut(cut)) = e.downcast_ref::<RequestBodyError>() {
            return Some(*cut);
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(timeout_s: u64, min_rate: u32) -> BodyLimits {
        BodyLimits {
            max_bytes: u64::MAX,
            timeout: Duration::from_secs(timeout_s),
            min_rate,
        }
    }

    #[test]
    fn without_a_rate_only_a_stall_is_late() {
        let t0 = Instant::now();
        let limits = limits(10, 0);
        let mut pace = Pace::new(t0);
        assert_eq!(
            pace.due(&limits),
            (t0 + Duration::from_secs(10), Late::Stalled(limits.timeout))
        );
        // A byte every 9 s keeps it going for ever.
        for i in 1..=100 {
            pace.arrived(t0 + Duration::from_secs(9 * i), 1);
        }
        assert_eq!(pace.due(&limits).0, t0 + Duration::from_secs(910));
    }

    #[test]
    fn a_trickle_below_the_rate_is_late_at_timeout_plus_what_it_earned() {
        let t0 = Instant::now();
        let limits = limits(10, 1000);
        let mut pace = Pace::new(t0);
        // 100 bytes a second, never stalling: 2000 bytes by t = 20 s earned
        // 2 s beyond the first 10.
        for i in 1..=20 {
            pace.arrived(t0 + Duration::from_secs(i), 100);
        }
        assert_eq!(
            pace.due(&limits),
            (t0 + Duration::from_secs(12), Late::BelowRate(1000))
        );
    }

    #[test]
    fn a_body_at_the_rate_is_judged_by_its_stalls() {
        let t0 = Instant::now();
        let limits = limits(10, 1000);
        let mut pace = Pace::new(t0);
        // 50 kB in the first second: 60 s of credit, but a stall is still a stall.
        pace.arrived(t0 + Duration::from_secs(1), 50_000);
        assert_eq!(
            pace.due(&limits),
            (t0 + Duration::from_secs(11), Late::Stalled(limits.timeout))
        );
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let t0 = Instant::now();
        let mut pace = Pace::new(t0);
        pace.arrived(t0, u64::MAX);
        pace.arrived(t0, u64::MAX);
        let (due, late) = pace.due(&limits(u64::from(u32::MAX), 1));
        assert!(due > t0);
        assert_eq!(late, Late::Stalled(Duration::from_secs(u64::from(u32::MAX))));
    }
}
