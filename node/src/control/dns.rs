//! One round of DNS queries for a pool's discovery, sent to exactly the
//! configured resolvers (or the `nameserver`s of `/etc/resolv.conf`): UDP,
//! then TCP when the answer is truncated. hickory-proto builds the queries
//! and reads the answers; what is left here is sending them and telling a
//! timeout, SERVFAIL, NXDOMAIN and an empty answer apart.

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType as Wire};
use raftlb_config::discovery::{Answer, DiscoveryFailure, DiscoverySpec, Record, RecordType};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The largest UDP answer read (EDNS is not asked for: a longer answer
/// comes truncated and is asked again over TCP).
const UDP_BYTES: usize = 4096;
/// SRV targets the additional section did not resolve, asked one by one;
/// more are left out of the set.
const MAX_TARGET_QUERIES: usize = 64;

/// The resolvers `spec` asks: its own, else `/etc/resolv.conf`'s.
pub fn resolvers(spec: &DiscoverySpec) -> Vec<SocketAddr> {
    if !spec.resolvers.is_empty() {
        return spec.resolvers.clone();
    }
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    system_resolvers(&text)
}

/// The `nameserver` lines of a resolv.conf.
pub fn system_resolvers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .take(DiscoverySpec::MAX_RESOLVERS)
        .collect()
}

/// Asks for `spec`'s name; returns the answer and its smallest TTL.
pub async fn resolve(spec: &DiscoverySpec, servers: &[SocketAddr]) -> (Answer, Option<Duration>) {
    let Ok(name) = fqdn(&spec.name) else {
        return (Answer::Failed(DiscoveryFailure::Error), None);
    };
    let wire = match spec.record {
        RecordType::A => Wire::A,
        RecordType::Aaaa => Wire::AAAA,
        RecordType::Srv => Wire::SRV,
    };
    let message = match ask_any(servers, &name, wire, spec.timeout).await {
        Ok(message) => message,
        Err(failure) => return (Answer::Failed(failure), None),
    };
    let mut ttl: Option<u32> = None;
    let mut note = |t: u32| ttl = Some(ttl.map_or(t, |m| m.min(t)));
    let mut records = Vec::new();
    if spec.record != RecordType::Srv {
        for r in message.answers() {
            let address = match r.data() {
                RData::A(a) if wire == Wire::A => IpAddr::V4(a.0),
                RData::AAAA(a) if wire == Wire::AAAA => IpAddr::V6(a.0),
                _ => continue,
            };
            note(r.ttl());
            records.push(Record {
                address,
                port: 0,
                priority: 0,
                weight: 1,
            });
        }
    } else {
        // Targets' addresses from the additional section first.
        let mut known: HashMap<Name, Vec<(IpAddr, u32)>> = HashMap::new();
        for r in message.additionals().iter().chain(message.answers()) {
            let address = match r.data() {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => continue,
            };
            known
                .entry(r.name().clone())
                .or_default()
                .push((address, r.ttl()));
        }
        let mut asked = 0;
        for r in message.answers() {
            let RData::SRV(srv) = r.data() else { continue };
            // "." means the service is not available at this name.
            if srv.target().is_root() {
                continue;
            }
            note(r.ttl());
            if !known.contains_key(srv.target()) && asked < MAX_TARGET_QUERIES {
                asked += 1;
                let found = target(servers, srv.target(), spec.timeout).await;
                known.insert(srv.target().clone(), found);
            }
            for &(address, address_ttl) in known.get(srv.target()).into_iter().flatten() {
                note(address_ttl);
                records.push(Record {
                    address,
                    port: srv.port(),
                    priority: srv.priority(),
                    weight: srv.weight(),
                });
            }
        }
    }
    let ttl = ttl.map(|t| Duration::from_secs(t.into()));
    match records.is_empty() {
        true => (Answer::Failed(DiscoveryFailure::Empty), ttl),
        false => (Answer::Records(records), ttl),
    }
}

/// An SRV target's addresses (A, else AAAA); none when it does not resolve.
async fn target(servers: &[SocketAddr], name: &Name, timeout: Duration) -> Vec<(IpAddr, u32)> {
    for wire in [Wire::A, Wire::AAAA] {
        let Ok(message) = ask_any(servers, name, wire, timeout).await else {
            continue;
        };
        let found: Vec<(IpAddr, u32)> = message
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some((IpAddr::V4(a.0), r.ttl())),
                RData::AAAA(a) => Some((IpAddr::V6(a.0), r.ttl())),
                _ => None,
            })
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    Vec::new()
}

fn fqdn(name: &str) -> Result<Name, hickory_proto::ProtoError> {
    let mut name = Name::from_ascii(name)?;
    name.set_fqdn(true);
    Ok(name)
}

/// Asks the servers in turn until one answers NOERROR or NXDOMAIN (a
/// definite answer); otherwise the last failure (timeout if none answered).
async fn ask_any(
    servers: &[SocketAddr],
    name: &Name,
    wire: Wire,
    timeout: Duration,
) -> Result<Message, DiscoveryFailure> {
    let mut failure = DiscoveryFailure::Timeout;
    for server in servers {
        match ask(*server, name, wire, timeout).await {
            Ok(message) => match message.response_code() {
                ResponseCode::NoError => return Ok(message),
                ResponseCode::NXDomain => return Err(DiscoveryFailure::NxDomain),
                ResponseCode::ServFail => failure = DiscoveryFailure::ServFail,
                _ => failure = DiscoveryFailure::Error,
            },
            Err(Some(kind)) => failure = kind,
            Err(None) => {}
        }
    }
    Err(failure)
}

/// One query to one server: UDP, then TCP if truncated. `Err(None)`: no
/// answer in time (or the server could not be reached).
async fn ask(
    server: SocketAddr,
    name: &Name,
    wire: Wire,
    timeout: Duration,
) -> Result<Message, Option<DiscoveryFailure>> {
    let mut id = [0u8; 2];
    let _ = getrandom::fill(&mut id);
    let id = u16::from_be_bytes(id);
    let mut query = Message::new();
    query
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name.clone(), wire));
    let bytes = query.to_vec().map_err(|_| Some(DiscoveryFailure::Error))?;
    let answer = tokio::time::timeout(timeout, async {
        let message = udp(server, &bytes, id).await?;
        match message.truncated() {
            true => tcp(server, &bytes, id).await,
            false => Ok(message),
        }
    })
    .await;
    match answer {
        Ok(Ok(message)) => Ok(message),
        Ok(Err(kind)) => Err(kind),
        Err(_) => Err(None),
    }
}

async fn udp(server: SocketAddr, query: &[u8], id: u16) -> Result<Message, Option<DiscoveryFailure>> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(|_| None)?;
    socket.connect(server).await.map_err(|_| None)?;
    socket.send(query).await.map_err(|_| None)?;
    let mut buffer = vec![0u8; UDP_BYTES];
    loop {
        // A refused port (ICMP) ends the wait at once: no answer.
        let n = socket.recv(&mut buffer).await.map_err(|_| None)?;
        match Message::from_vec(&buffer[..n]) {
            Ok(message) if message.id() == id && message.message_type() == MessageType::Response => {
                return Ok(message);
            }
            // Not our answer (late, spoofed or garbled): keep waiting.
            _ => continue,
        }
    }
}

async fn tcp(server: SocketAddr, query: &[u8], id: u16) -> Result<Message, Option<DiscoveryFailure>> {
    let mut stream = TcpStream::connect(server).await.map_err(|_| None)?;
    let length = u16::try_from(query.len()).map_err(|_| Some(DiscoveryFailure::Error))?;
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.map_err(|_| None)?;
    let length = stream.read_u16().await.map_err(|_| None)?;
    let mut buffer = vec![0u8; usize::from(length)];
    stream.read_exact(&mut buffer).await.map_err(|_| None)?;
    match Message::from_vec(&buffer) {
        Ok(message) if message.id() == id => Ok(message),
        _ => Err(Some(DiscoveryFailure::Error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Record as Rr;
    use hickory_proto::rr::rdata::{A, SRV};

    /// A DNS server on a real loopback socket that answers every query
    /// with what `answer` builds from it (hickory encodes it).
    async fn server(answer: fn(&Message) -> Message) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let address = socket.local_addr().expect("address");
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok((n, peer)) = socket.recv_from(&mut buffer).await {
                let Ok(query) = Message::from_vec(&buffer[..n]) else {
                    continue;
                };
                let mut reply = answer(&query);
                reply
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .add_queries(query.queries().to_vec());
                let _ = socket.send_to(&reply.to_vec().expect("encode"), peer).await;
            }
        });
        address
    }

    fn code(code: ResponseCode) -> Message {
        let mut reply = Message::new();
        reply.set_response_code(code);
        reply
    }

    fn a(name: &Name, last: u8, ttl: u32) -> Rr {
        Rr::from_rdata(
            name.clone(),
            ttl,
            RData::A(A::from(Ipv4Addr::new(10, 0, 0, last))),
        )
    }

    fn spec(record: RecordType) -> DiscoverySpec {
        DiscoverySpec {
            name: "app.test".into(),
            record,
            port: 80,
            timeout: Duration::from_millis(300),
            ..DiscoverySpec::default()
        }
    }

    #[tokio::test]
    async fn answers_become_records_with_the_smallest_ttl() {
        let dns = server(|q| {
            let name = q.queries()[0].name();
            let mut reply = code(ResponseCode::NoError);
            reply.add_answer(a(name, 2, 30)).add_answer(a(name, 1, 7));
            reply
        })
        .await;
        let (answer, ttl) = resolve(&spec(RecordType::A), &[dns]).await;
        let Answer::Records(records) = answer else {
            panic!("{answer:?}")
        };
        let addresses: Vec<IpAddr> = records.iter().map(|r| r.address).collect();
        assert_eq!(
            addresses,
            [IpAddr::from([10, 0, 0, 2]), IpAddr::from([10, 0, 0, 1])]
        );
        assert_eq!(ttl, Some(Duration::from_secs(7)));
    }

    #[tokio::test]
    async fn srv_targets_come_from_the_additional_section() {
        let dns = server(|q| {
            let target = Name::from_ascii("b1.test.").expect("name");
            let mut reply = code(ResponseCode::NoError);
            let srv = SRV::new(10, 3, 9001, target.clone());
            reply.add_answer(Rr::from_rdata(q.queries()[0].name().clone(), 60, RData::SRV(srv)));
            reply.add_additional(a(&target, 9, 60));
            reply
        })
        .await;
        let (answer, _) = resolve(&spec(RecordType::Srv), &[dns]).await;
        let expected = Record {
            address: IpAddr::from([10, 0, 0, 9]),
            port: 9001,
            priority: 10,
            weight: 3,
        };
        assert_eq!(answer, Answer::Records(vec![expected]));
    }

    #[tokio::test]
    async fn each_failure_is_told_apart() {
        let servfail = server(|_| code(ResponseCode::ServFail)).await;
        let nxdomain = server(|_| code(ResponseCode::NXDomain)).await;
        let empty = server(|_| code(ResponseCode::NoError)).await;
        let refused = server(|_| code(ResponseCode::Refused)).await;
        let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let silent_address = silent.local_addr().expect("address");
        let spec = spec(RecordType::A);
        for (servers, expected) in [
            (vec![servfail], DiscoveryFailure::ServFail),
            (vec![nxdomain], DiscoveryFailure::NxDomain),
            (vec![empty], DiscoveryFailure::Empty),
            (vec![refused], DiscoveryFailure::Error),
            (vec![silent_address], DiscoveryFailure::Timeout),
            (Vec::new(), DiscoveryFailure::Timeout),
            // The next resolver is asked after a SERVFAIL.
            (vec![servfail, nxdomain], DiscoveryFailure::NxDomain),
        ] {
            let (answer, _) = resolve(&spec, &servers).await;
            assert_eq!(answer, Answer::Failed(expected), "{servers:?}");
        }
    }

    #[test]
    fn resolv_conf_nameservers_on_port_53() {
        let text = "# comment\nsearch example.org\nnameserver 10.0.0.2\nnameserver ::1\nnameserver bogus\n";
        let servers = system_resolvers(text);
        assert_eq!(
            servers,
            vec!["10.0.0.2:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }
}
