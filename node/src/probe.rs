//! `raftlb probe`: one HTTP GET, for health checks where no curl exists
//! (the `FROM scratch` container's `HEALTHCHECK`, a client container of the
//! compose demo). With `--config`, it asks the node that file describes
//! for `/readyz` on its metrics address (an unspecified bind address is
//! asked on loopback). Prints the status line and body; succeeds on 2xx.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of an answer read.
const MAX_ANSWER: u64 = 1 << 20;

/// What to ask: an address and a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub address: SocketAddr,
    pub path: String,
}

impl Target {
    /// `http://HOST:PORT/PATH` (HOST an IP address; port 80 if absent).
    pub fn parse_url(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs can be probed"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let address = authority
            .parse::<SocketAddr>()
            .or_else(|_| authority.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 80)))
            .or_else(|_| {
                let ip = authority.trim_start_matches('[').trim_end_matches(']');
                ip.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 80))
            })
            .map_err(|_| format!("{url}: the host must be an IP address, with an optional port"))?;
        Ok(Target {
            host: authority.to_string(),
            address,
            path: path.to_string(),
        })
    }

    /// `/readyz` on a node's metrics address.
    pub fn readiness(metrics: SocketAddr) -> Target {
        let ip = match metrics.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let address = SocketAddr::new(ip, metrics.port());
        Target {
            host: address.to_string(),
            address,
            path: "/readyz".to_string(),
        }
    }
}

/// GETs `target` within `timeout`: (status, body).
pub async fn get(target: &Target, timeout: Duration) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(target.address)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", target.address))?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: raftlb-probe\r\nConnection: close\r\n\r\n",
            target.path, target.host
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("cannot send to {}: {e}", target.address))?;
        let mut answer = Vec::new();
        stream
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("no answer from {}: {e}", target.address))?;
        parse(&answer).ok_or_else(|| format!("{} did not answer in HTTP/1.1", target.address))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer from {} within {timeout:?}", target.address))?
}

/// The status and body of a `Connection: close` answer (a chunked body
/// is returned as sent).
fn parse(answer: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
    Some((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_metrics_addresses_become_targets() {
        let t = Target::parse_url("http://198.18.0.100:8080/x?y=1").unwrap();
        assert_eq!(t.address, "198.18.0.100:8080".parse().unwrap());
        assert_eq!(t.path, "/x?y=1");
        let t = Target::parse_url("http://10.0.0.1").unwrap();
        assert_eq!((t.address.port(), t.path.as_str()), (80, "/"));
        assert!(Target::parse_url("https://10.0.0.1/").is_err());
        assert!(Target::parse_url("http://example.com/").is_err());
        let t = Target::readiness("0.0.0.0:9100".parse().unwrap());
        assert_eq!(t.address, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(t.path, "/readyz");
    }

    #[test]
    fn answers_parse_to_status_and_body() {
        assert_eq!(
            parse(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 3\r\n\r\nno\n"),
            Some((503, "no\n".to_string()))
        );
        assert_eq!(parse(b"SSH-2.0-x\r\n\r\n"), None);
        assert_eq!(parse(b"HTTP/1.1 20"), None);
    }
}
