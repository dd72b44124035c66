//! One active health probe: a TCP connection, or an HTTP/1.1 request whose
//! status and body are checked. HTTP probes go the way traffic goes (over
//! TLS when the pool's backends speak it), on a fresh connection closed
//! after the answer. The error says what was wrong, for the log.

use crate::dataplane::l7::backend_conn;
use crate::dataplane::l7::request_body::RequestBody;
use crate::dataplane::upstream;
use crate::view::PoolView;
use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Limited};
use raftlb_config::{HealthCheck, HttpProbe, Probe};
use std::net::SocketAddr;

/// Most of a probe's answer body read to look for `expect_body`.
const MAX_BODY: usize = 64 * 1024;

/// Probes `address` (a backend of `pool`) once, within the check's timeout.
pub async fn probe(pool: &PoolView, address: SocketAddr, check: &HealthCheck) -> Result<(), String> {
    let attempt = async {
        match &check.probe {
            Probe::Tcp => upstream::connect_one(address, check.timeout)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Probe::Http(http) => http_probe(pool, address, http).await,
        }
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
    }
}

async fn http_probe(pool: &PoolView, address: SocketAddr, probe: &HttpProbe) -> Result<(), String> {
    let sender = backend_conn::handshake_http1(address, pool, None)
        .await
        .map_err(|e| e.to_string())?;
    ask(sender, address, probe).await.map(drop)
}

/// Probes a GSLB site at `address` once (plain TCP or HTTP/1.1 in the
/// clear), within the check's timeout; an HTTP answer's `X-Raftlb-Load`
/// is the load the site reports.
pub async fn probe_site(address: SocketAddr, check: &HealthCheck) -> Result<Option<u32>, String> {
    let attempt = async {
        let stream = upstream::connect_one(address, check.timeout)
            .await
            .map_err(|e| e.to_string())?;
        match &check.probe {
            Probe::Tcp => Ok(None),
            Probe::Http(http) => {
                let sender = backend_conn::http1_over(address, stream)
                    .await
                    .map_err(|e| e.to_string())?;
                ask(sender, address, http).await
            }
        }
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
    }
}

/// The header a raftlb `/readyz` reports its load in.
pub const LOAD_HEADER: &str = "x-raftlb-load";

/// Sends the probe's request on `sender` and checks the answer; the
/// load it reports, if it does.
async fn ask(
    mut sender: hyper::client::conn::http1::SendRequest<RequestBody>,
    address: SocketAddr,
    probe: &HttpProbe,
) -> Result<Option<u32>, String> {
    let host = probe.host.clone().unwrap_or_else(|| address.to_string());
    let request = Request::builder()
        .method(probe.method.as_str())
        .uri(probe.path.as_str())
        .header(HOST, host)
        .header(USER_AGENT, HeaderValue::from_static("raftlb-health-check"))
        .header(CONNECTION, HeaderValue::from_static("close"))
        .body(RequestBody::complete(Bytes::new()))
        .map_err(|e| format!("cannot build the probe request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP probe: {e}"))?;
    let status = response.status().as_u16();
    let (low, high) = probe.expect_status;
    if !(low..=high).contains(&status) {
        return Err(format!("status {status}, expected {low}-{high}"));
    }
    let load = response
        .headers()
        .get(LOAD_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    if let Some(expected) = &probe.expect_body {
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        if !contains(&body, expected.as_bytes()) {
            return Err(format!("body does not contain \"{expected}\""));
        }
    }
    Ok(load)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
