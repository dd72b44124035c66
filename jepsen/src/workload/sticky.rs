//! W3, sticky sessions: a few hundred cookie sessions through the VIP, on
//! the site's `sync` listener (port 8081: pool `sync` learns the backends'
//! `JSESSIONID` cookie and answers a new session's first response only
//! once it is committed, so every session a client saw is one the cluster
//! holds). A session starts with `GET /login?id=jN` (the backend sets the
//! cookie) and goes on with `GET /` carrying it; each answer names its
//! backend. Recorded as `login` / `visit`, key the session, value the
//! backend (0-based); C4 judges whether a session ever moved.

use crate::history::{History, Kind, Op};
use crate::rng::Rng;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sessions in the workload.
pub const SESSIONS: u32 = 200;
/// Concurrent clients; client c owns the sessions ≡ c (mod CLIENTS), so one
/// session's requests never overlap.
const CLIENTS: u32 = 2;
/// The sync listener's port.
const PORT: u16 = 8081;
/// One request's budget: a `sync` first response waits for its commit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The backend (0-based) a body names: `b1` → 0.
fn backend(body: &str) -> Option<u64> {
    body.trim().strip_prefix('b')?.parse::<u64>().ok()?.checked_sub(1)
}

/// `GET path` to `to` on a new connection, with `cookie` if any; the
/// status and body, or why not.
async fn get(to: SocketAddr, path: &str, cookie: Option<&str>) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(to)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let cookie = cookie.map_or(String::new(), |c| format!("Cookie: JSESSIONID={c}\r\n"));
        let head = format!("GET {path} HTTP/1.1\r\nHost: vip\r\n{cookie}Connection: close\r\n\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| "no status line".to_string())?;
        let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        Ok((status, body.to_string()))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err("no answer".to_string()))
}

/// W3 until `until`: each client visits a random session of its own every
/// 10–30 ms, logging in first if it has not yet.
pub async fn sessions(history: History, vip: IpAddr, until: Instant, mut rng: Rng) {
    let to = SocketAddr::new(vip, PORT);
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (history, mut rng) = (history.clone(), rng.fork(u64::from(client)));
        clients.spawn(async move {
            let owned: Vec<u32> = (client..SESSIONS).step_by(CLIENTS as usize).collect();
            let mut logged_in = vec![false; owned.len()];
            let process = format!("st{client}");
            loop {
                tokio::time::sleep(rng.millis(10, 30)).await;
                if Instant::now() >= until {
                    break;
                }
                let slot = rng.below(owned.len() as u64) as usize;
                let session = owned[slot];
                let id = format!("j{session}");
                let (f, path, cookie) = match logged_in[slot] {
                    false => ("login", format!("/login?id={id}"), None),
                    true => ("visit", "/".to_string(), Some(id.as_str())),
                };
                let op = |kind| Op::new(process.as_str(), kind, f, history.now()).key(session);
                history.record(op(Kind::Invoke));
                match get(to, &path, cookie).await {
                    Ok((200, body)) => match backend(&body) {
                        Some(b) => {
                            logged_in[slot] = true;
                            history.record(op(Kind::Ok).value(Some(b)));
                        }
                        None => history.record(op(Kind::Fail).error(format!("body {body:?}"))),
                    },
                    Ok((status, _)) => history.record(op(Kind::Fail).error(format!("status {status}"))),
                    Err(why) => history.record(op(Kind::Fail).error(why)),
                }
            }
        });
    }
    while clients.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_body_names_its_backend() {
        assert_eq!(super::backend("b1"), Some(0));
        assert_eq!(super::backend("b3\n"), Some(2));
        assert_eq!(super::backend("b0"), None);
        assert_eq!(super::backend("backend"), None);
    }
}
