//! QUIC through `udp` listeners with `quic = true`: a client's datagrams
//! follow its connection ID to the backend that serves it when its address
//! changes. The clients and backends are quinn endpoints; between client
//! and balancer sits a NAT of the test's own ([`Nat`]), which changes the
//! client's address (rebinding: a new source port, the client unaware, so
//! it keeps its connection ID) and sends to another balancer (as after a
//! VIP move). Without `quic = true` the same moves lose connections: the
//! test can fail. The last test does it through a real VIP that moves, in
//! network namespaces (root only).

use raftlb_tests::cluster::Cluster;
use raftlb_tests::nat::Nat;
use raftlb_tests::site::{Options, Site};
use raftlb_tests::{netns, root_or_skip};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// A QUIC backend: answers each stream with its name.
struct QuicBackend {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for QuicBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The certificate every test backend serves, and its DER for clients.
fn backend_identity() -> (Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["backend.test".to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("cert");
    (cert.der().to_vec(), key.serialize_der())
}

fn quic_backend(name: &'static str, identity: &(Vec<u8>, Vec<u8>)) -> QuicBackend {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a backend");
    quic_backend_on(name, identity, socket)
}

/// A QUIC backend on `socket` (made in a lab host's namespace, say).
fn quic_backend_on(
    name: &'static str,
    (cert, key): &(Vec<u8>, Vec<u8>),
    socket: std::net::UdpSocket,
) -> QuicBackend {
    let cert = rustls::pki_types::CertificateDer::from(cert.clone());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.clone().into());
    let config = quinn::ServerConfig::with_single_cert(vec![cert], key).expect("server config");
    let runtime = Arc::new(quinn::TokioRuntime);
    let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(config), socket, runtime)
        .expect("endpoint");
    let address = endpoint.local_addr().expect("address");
    let task = tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    let _ = recv.read_to_end(64).await;
                    let _ = send.write_all(name.as_bytes()).await;
                    let _ = send.finish();
                }
            });
        }
    });
    QuicBackend { address, task }
}

fn client_endpoint(cert: &[u8]) -> quinn::Endpoint {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a client");
    client_endpoint_on(cert, socket)
}

/// A QUIC client on `socket`, trusting the backends' certificate `cert`.
fn client_endpoint_on(cert: &[u8], socket: std::net::UdpSocket) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert.to_vec()))
        .expect("root");
    let mut config = quinn::ClientConfig::with_root_certificates(Arc::new(roots)).expect("client config");
    let mut transport = quinn::TransportConfig::default();
    // Long enough for a VIP move between two questions.
    transport.max_idle_timeout(Some(Duration::from_secs(10).try_into().expect("idle")));
    config.transport_config(Arc::new(transport));
    let runtime = Arc::new(quinn::TokioRuntime);
    let mut endpoint =
        quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime).expect("endpoint");
    endpoint.set_default_client_config(config);
    endpoint
}

/// One stream's answer: the backend's name, or why there was none.
async fn ask(connection: &quinn::Connection) -> Result<String, String> {
    let exchange = async {
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(b"who").await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        let answer = recv.read_to_end(64).await.map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer in 3 s".to_string()))
}

/// `endpoint`'s connection through `nat` and the first answer on it;
/// `who` names the client in a failure.
async fn connect_and_ask(endpoint: &quinn::Endpoint, nat: &Nat, who: &str) -> (quinn::Connection, String) {
    let connection = endpoint
        .connect(nat.address(), "backend.test")
        .expect("connect")
        .await
        .unwrap_or_else(|e| panic!("{who}: handshake: {e}"));
    let first = ask(&connection).await.unwrap_or_else(|e| panic!("{who}: {e}"));
    (connection, first)
}

/// A cluster of `nodes` with a udp listener on `port` (quic or not) to
/// `backends`, and a `source_ip` sticky table (which carries the learned
/// connection IDs to every node). (The http listener tells the test when
/// a node serves.)
async fn cluster(nodes: u64, quic: bool, backends: &[&QuicBackend], port: u16) -> Cluster {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{}\" }}", b.address))
        .collect();
    let seed = format!(
        "[[listener]]\nname = \"quic\"\nprotocol = \"udp\"\nbind = \"0.0.0.0:{port}\"\npool = \"app\"\n\
         idle_timeout = \"30s\"\nquic = {quic}\n\n\
         [[listener]]\nname = \"ready\"\nprotocol = \"http\"\nbind = \"0.0.0.0:{{HTTP}}\"\npool = \"app\"\n\n\
         [[pool]]\nname = \"app\"\nalgorithm = \"round_robin\"\nbackends = [{}]\n\n\
         [pool.sticky]\nkind = \"source_ip\"\n",
        list.join(", ")
    );
    Cluster::start(nodes, &seed).await
}

/// Node `i`'s udp listener, on `port`.
fn listener_of(i: usize, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, i as u8 + 1], port))
}

/// Entries in pool `app`'s sticky table on node `i`.
fn sticky_entries(cluster: &Cluster, i: usize) -> u64 {
    let (_, out, _) = cluster.ctl(i, &["--json", "sticky", "stats"]);
    entries_in(&out, i, "app")
}

/// Entries in pool `pool`'s table on node `i`, from `ctl --json sticky
/// stats` as node `i` answered it (0 when it says nothing of them).
fn entries_in(stats: &str, i: usize, pool: &str) -> u64 {
    let members: Vec<serde_json::Value> = serde_json::from_str(stats).unwrap_or_default();
    members
        .iter()
        .find(|m| m["id"] == i as u64 + 1)
        .and_then(|m| {
            m["stats"]["tables"]
                .as_array()?
                .iter()
                .find(|t| t["pool"] == pool)?["entries"]
                .as_u64()
        })
        .unwrap_or(0)
}

/// `clients` QUIC connections, each through its own NAT (from its own
/// address) to node 1, each asks once. Then each NAT rebinds (and, with
/// `move_to`, sends to that node from then on, once it holds what node 1
/// learned), and each client asks again. Returns how many kept their backend.
async fn moves(cluster: &Cluster, port: u16, clients: u8, move_to: Option<usize>, cert: &[u8]) -> usize {
    let mut connected = Vec::new();
    for i in 0..clients {
        let mut nat = Nat::start(listener_of(0, port), [127, 0, 1, i + 1], [127, 0, 2, i + 1]).await;
        let endpoint = client_endpoint(cert);
        let (connection, first) =
            connect_and_ask(&endpoint, &nat, &format!("client {i} through node 1")).await;
        if move_to.is_none() {
            nat.rebind().await;
        }
        connected.push((nat, endpoint, connection, first));
    }
    if let Some(node) = move_to {
        // Each client's source and at least one connection ID of its backend.
        let wanted = 2 * u64::from(clients);
        raftlb_tests::wait::until(
            "node 1's sessions and IDs on the other node",
            Duration::from_secs(10),
            || sticky_entries(cluster, node) >= wanted,
        )
        .await;
        for (nat, ..) in &mut connected {
            nat.rebind().await;
            nat.retarget(listener_of(node, port));
        }
    }
    let mut kept = 0;
    for (i, (_nat, _endpoint, connection, first)) in connected.iter().enumerate() {
        let again = ask(connection).await;
        println!("client {i}: {first}, then from a new address: {again:?}");
        if again.as_deref() == Ok(first.as_str()) {
            kept += 1;
        }
        connection.close(0u32.into(), b"");
    }
    kept
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebinding_quic_client_keeps_its_backend_through_one_balancer() {
    let identity = backend_identity();
    let (a, b) = (quic_backend("a", &identity), quic_backend("b", &identity));
    let port = raftlb_tests::free_port();
    let cluster = cluster(1, true, &[&a, &b], port).await;
    let kept = moves(&cluster, port, 6, None, &identity.0).await;
    assert_eq!(kept, 6, "every rebinding client keeps its backend");

    // The control: without routing by connection ID, rebinding loses some.
    drop(cluster);
    let port = raftlb_tests::free_port();
    let plain = self::cluster(1, false, &[&a, &b], port).await;
    let kept = moves(&plain, port, 6, None, &identity.0).await;
    assert!(
        kept < 6,
        "without quic = true every client kept its backend: the test proves nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_client_keeps_its_backend_on_another_balancer() {
    let identity = backend_identity();
    let (a, b) = (quic_backend("a", &identity), quic_backend("b", &identity));
    let port = raftlb_tests::free_port();
    let cluster = cluster(3, true, &[&a, &b], port).await;
    // Through node 1, then (rebound, as a NAT would after the VIP moved)
    // through node 2: the IDs learned on node 1 reached node 2 by Raft.
    let kept = moves(&cluster, port, 6, Some(1), &identity.0).await;
    assert_eq!(kept, 6, "every client keeps its backend on node 2");
}

/// How many QUIC clients each listener of the VIP test has.
const VIP_CLIENTS: u8 = 4;

/// The VIP test's listeners: `quic = true` on 4433, the control without it
/// on 4434, each with its own pool of the two backends (on the site's
/// backend host, 198.18.0.5), `ip_hash` and a `source_ip` table (which
/// carries the learned connection IDs to every balancer).
fn vip_listeners() -> String {
    [("quic", 4433, true), ("plain", 4434, false)]
        .iter()
        .map(|(name, port, quic)| {
            format!(
                "[[listener]]\nname = \"{name}\"\nprotocol = \"udp\"\nbind = \"0.0.0.0:{port}\"\npool = \"{name}\"\n\
                 idle_timeout = \"30s\"\nquic = {quic}\n\n\
                 [[pool]]\nname = \"{name}\"\nalgorithm = \"ip_hash\"\n\
                 backends = [{{ address = \"198.18.0.5:4431\" }}, {{ address = \"198.18.0.5:4432\" }}]\n\n\
                 [pool.sticky]\nkind = \"source_ip\"\n\n"
            )
        })
        .collect()
}

/// Entries in pool `pool`'s sticky table on balancer `i` of `site`.
fn site_sticky_entries(site: &Site, i: usize, pool: &str) -> u64 {
    entries_in(&site.ctl(i, &["--json", "sticky", "stats"]), i, pool)
}

/// One client of the VIP test: its NAT on the client host, its endpoint
/// there, its connection and the backend that first answered it.
struct VipClient {
    nat: Nat,
    _endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    first: String,
}

/// Through the VIP of a site in network namespaces (three balancers, a
/// client host, a backend host): QUIC clients, each behind a NAT of its
/// own on the client host, change address (a new IP each time, so the
/// `source_ip` table cannot be what keeps them) while one balancer holds
/// the VIP, and again after that balancer is killed and the VIP has
/// moved. Their NATs take replies only from the VIP, so the balancers
/// must answer from it. The listener without `quic = true` is the
/// control: its clients do not all keep their backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_client_keeps_its_backend_when_the_vip_moves() {
    if !root_or_skip(
        "QUIC clients through a VIP that moves",
        "build network namespaces",
    ) {
        return;
    }
    let mut site = Site::build(Options {
        extra: vip_listeners(),
        ..Options::default()
    })
    .await;
    let identity = backend_identity();
    let backends: Vec<QuicBackend> = [("a", 4431), ("b", 4432)]
        .into_iter()
        .map(|(name, port)| {
            let socket = netns::on_host(&site.lab.ns("backend"), move || {
                std::net::UdpSocket::bind(("198.18.0.5", port)).expect("bind a backend")
            });
            quic_backend_on(name, &identity, socket)
        })
        .collect();
    let client_ns = site.lab.ns("client");
    // The client host's addresses: 198.18.0.B+i for the first question,
    // +20 after the first move, +40 after the VIP moved (B: 41 for the
    // quic listener, 51 for the control).
    let host = |n: u8| format!("198.18.0.{n}");
    for n in (41..=46).chain(51..=56).flat_map(|n| [n, n + 20, n + 40]) {
        let output = std::process::Command::new("ip")
            .args([
                "-n",
                &client_ns,
                "addr",
                "add",
                &format!("{}/24", host(n)),
                "dev",
                "eth0",
            ])
            .output()
            .expect("run ip");
        assert!(output.status.success(), "ip addr add {}", host(n));
    }
    let mut listeners = Vec::new();
    for (port, base) in [(4433u16, 41u8), (4434, 51)] {
        let mut clients = Vec::new();
        for i in 0..VIP_CLIENTS {
            let target = SocketAddr::new(site.vip, port);
            let nat = Nat::start_in(
                Some(&client_ns),
                target,
                [198, 18, 0, base + i],
                [198, 18, 0, base + 20 + i],
            );
            let socket = netns::on_host(&client_ns, || {
                std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a client")
            });
            let endpoint = client_endpoint_on(&identity.0, socket);
            let who = format!("port {port} client {i} through the VIP");
            let (connection, first) = connect_and_ask(&endpoint, &nat, &who).await;
            clients.push(VipClient {
                nat,
                _endpoint: endpoint,
                connection,
                first,
            });
        }
        listeners.push((port, clients));
    }

    // Each client from a new address, through the same balancer.
    let mut kept_by_one = Vec::new();
    for (port, clients) in &mut listeners {
        let mut kept = 0;
        for (i, client) in clients.iter_mut().enumerate() {
            let from = client.nat.rebind().await;
            let again = ask(&client.connection).await;
            println!(
                "port {port} client {i}: {}, then from {from}: {again:?}",
                client.first
            );
            kept += usize::from(again.as_deref() == Ok(client.first.as_str()));
        }
        kept_by_one.push(kept);
    }

    // What the VIP's owner learned reaches the others by Raft; then it dies.
    let owner = site.owner().await;
    let learned = site_sticky_entries(&site, owner, "quic");
    assert!(
        learned >= 2 * u64::from(VIP_CLIENTS),
        "the owner holds each client's source and its backend's IDs: {learned} entries"
    );
    let others: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    raftlb_tests::wait::until(
        "the owner's sessions and IDs on the other balancers",
        Duration::from_secs(10),
        || {
            others
                .iter()
                .all(|i| site_sticky_entries(&site, *i, "quic") >= learned)
        },
    )
    .await;
    site.nodes[owner].kill();
    let killed = std::time::Instant::now();
    let answered = raftlb_tests::wait::value("the VIP answers again", Duration::from_secs(10), || {
        site.answered_since(killed)
    })
    .await;
    let new_owner = raftlb_tests::wait::value("the VIP on another balancer", Duration::from_secs(5), || {
        site.holders().into_iter().find(|h| *h != owner)
    })
    .await;
    println!(
        "node {} (VIP owner) killed; VIP answered after {} ms, now on node {}",
        owner + 1,
        answered.duration_since(killed).as_millis(),
        new_owner + 1
    );

    // Each client from yet another address, through the VIP's new owner.
    let mut kept_after_move = Vec::new();
    for (port, clients) in &mut listeners {
        let mut kept = 0;
        for (i, client) in clients.iter_mut().enumerate() {
            let ip = std::net::IpAddr::from([198, 18, 0, if *port == 4433 { 81 } else { 91 } + i as u8]);
            let from = client.nat.rebind_to(ip);
            let again = ask(&client.connection).await;
            println!(
                "port {port} client {i}: {}, after the move from {from}: {again:?}",
                client.first
            );
            kept += usize::from(again.as_deref() == Ok(client.first.as_str()));
        }
        kept_after_move.push(kept);
    }
    println!(
        "kept their backend (of {VIP_CLIENTS}): quic = true {} through one balancer, {} after the VIP moved; \
         without it {} and {}",
        kept_by_one[0], kept_after_move[0], kept_by_one[1], kept_after_move[1]
    );
    let all = usize::from(VIP_CLIENTS);
    assert_eq!(kept_by_one[0], all, "every rebinding client keeps its backend");
    assert_eq!(
        kept_after_move[0], all,
        "every client keeps its backend after the VIP moved"
    );
    assert!(
        kept_by_one[1] + kept_after_move[1] < 2 * all,
        "without quic = true every client kept its backend: the test proves nothing"
    );
    drop(backends);
}
