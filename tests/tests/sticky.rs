//! Sticky sessions through a real three-node cluster on loopback: every
//! policy keeps a client on one backend; a tampered cookie is ignored;
//! sessions survive the death of the node that created them (`async` once
//! replicated, `sync` right up to the kill); a dead backend's sessions
//! re-stick and stay, drain keeps sessions, maintenance moves them; expiry
//! leaves identical tables on every node; a node restarted from a snapshot
//! and a node that joins later hold the same table.

use raftlb_tests::admin::Admin;
use raftlb_tests::backends::{HttpBackend, tcp_hello};
use raftlb_tests::client::{RawReply, raw_get};
use raftlb_tests::cluster::Cluster;
use raftlb_tests::{free_port, wait};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Listener ports of one test's cluster, by policy.
struct Ports {
    learn: u16,
    header: u16,
    source: u16,
    tcp: u16,
    sync: u16,
}

fn pool(name: &str, backends: &[SocketAddr], sticky: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{b}\" }}"))
        .collect();
    format!(
        "[[pool]]\nname = \"{name}\"\nalgorithm = \"round_robin\"\nbackends = [{}]\n\n[pool.sticky]\n{sticky}\n\n",
        list.join(", ")
    )
}

fn listener(name: &str, protocol: &str, port: &str, pool: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\nbind = \"0.0.0.0:{port}\"\npool = \"{pool}\"\n\n"
    )
}

/// A cluster with one listener per policy over `http` (and `tcp` for the
/// TCP listener) backends; `ttl` for every policy.
async fn start(http: &[SocketAddr], tcp: &[SocketAddr], ttl: &str) -> (Cluster, Ports) {
    let ports = Ports {
        learn: free_port(),
        header: free_port(),
        source: free_port(),
        tcp: free_port(),
        sync: free_port(),
    };
    let seed = [
        listener("cookie", "http", "{HTTP}", "cookie"),
        listener("learn", "http", &ports.learn.to_string(), "learn"),
        listener("header", "http", &ports.header.to_string(), "header"),
        listener("source", "http", &ports.source.to_string(), "source"),
        listener("tcp", "tcp", &ports.tcp.to_string(), "tcp"),
        listener("sync", "http", &ports.sync.to_string(), "sync"),
        pool("cookie", http, &format!("kind = \"cookie\"\nttl = \"{ttl}\"")),
        pool(
            "learn",
            http,
            &format!("kind = \"learn_cookie\"\nname = \"JSESSIONID\"\nttl = \"{ttl}\""),
        ),
        pool(
            "header",
            http,
            &format!("kind = \"header\"\nname = \"X-Session\"\nttl = \"{ttl}\""),
        ),
        pool("source", http, &format!("kind = \"source_ip\"\nttl = \"{ttl}\"")),
        pool("tcp", tcp, &format!("kind = \"source_ip\"\nttl = \"{ttl}\"")),
        pool(
            "sync",
            http,
            &format!("kind = \"header\"\nname = \"X-Session\"\nttl = \"{ttl}\"\ncontract = \"sync\""),
        ),
    ]
    .concat();
    (Cluster::start(3, &seed).await, ports)
}

fn at(cluster: &Cluster, node: usize, port: u16) -> SocketAddr {
    let ip: IpAddr = format!("127.0.0.{}", cluster.members[node].id)
        .parse()
        .expect("ip");
    (ip, port).into()
}

fn http_port(cluster: &Cluster) -> u16 {
    cluster.members[0]
        .http
        .rsplit(':')
        .next()
        .expect("port")
        .parse()
        .expect("port")
}

async fn get(target: SocketAddr, source: Option<IpAddr>, path: &str, headers: &[(&str, &str)]) -> RawReply {
    let reply = raw_get(target, source, path, headers).await;
    let reply = reply.unwrap_or_else(|| panic!("no reply from {target}{path}"));
    assert_eq!(reply.status, 200, "{target}{path}: {reply:?}");
    reply
}

/// The `RLBSESS=…` pair of a reply's cookie.
fn session_cookie(reply: &RawReply) -> String {
    let header = reply
        .set_cookies
        .iter()
        .find(|c| c.starts_with("RLBSESS="))
        .unwrap_or_else(|| panic!("no RLBSESS cookie in {reply:?}"));
    header.split(';').next().expect("pair").to_string()
}

/// Every member's `ctl sticky stats --json`, by node id.
fn stats(cluster: &Cluster, via: usize) -> BTreeMap<u64, Value> {
    let (status, out, err) = cluster.ctl(via, &["--json", "sticky", "stats"]);
    assert!(status.success(), "sticky stats: {err}");
    let members: Vec<Value> = serde_json::from_str(&out).expect("json");
    members
        .into_iter()
        .filter_map(|m| Some((m["id"].as_u64()?, m["stats"].clone())))
        .filter(|(_, s)| !s.is_null())
        .collect()
}

/// (entries, hash) of `pool` in one node's stats.
fn table(stats: &Value, pool: &str) -> (u64, String) {
    stats["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["pool"] == pool))
        .map_or((0, String::new()), |t| {
            (
                t["entries"].as_u64().unwrap_or(0),
                t["hash"].as_str().unwrap_or("").to_string(),
            )
        })
}

async fn http_backends(n: usize) -> Vec<HttpBackend> {
    let mut backends = Vec::new();
    for i in 1..=n {
        backends.push(HttpBackend::start(&format!("b{i}")).await);
    }
    backends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_keeps_a_client_on_one_backend() {
    let backends = http_backends(3).await;
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    let mut tcp = Vec::new();
    for i in 1..=3 {
        tcp.push(tcp_hello(&format!("t{i}")).await);
    }
    let tcp_addresses: Vec<SocketAddr> = tcp.iter().map(|(a, _)| *a).collect();
    let (cluster, ports) = start(&addresses, &tcp_addresses, "30m").await;
    let node = |port| at(&cluster, 0, port);
    let other = |port| at(&cluster, 1, port);

    // cookie: the first answer sets it; 50 requests with it stay, on any node.
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let first = get(node(http_port(&cluster)), None, "/", &[]).await;
        let cookie = session_cookie(&first);
        seen.insert(first.body.clone());
        for i in 0..50 {
            let target = if i % 2 == 0 {
                node(http_port(&cluster))
            } else {
                other(http_port(&cluster))
            };
            let reply = get(target, None, "/", &[("Cookie", &cookie)]).await;
            assert_eq!(reply.body, first.body, "cookie {cookie} moved on request {i}");
        }
        // A tampered cookie is ignored: a fresh backend, a fresh cookie, no error.
        let value = cookie.trim_start_matches("RLBSESS=");
        let flipped = if value.starts_with('A') { "B" } else { "A" };
        let tampered = format!("RLBSESS={flipped}{}", &value[1..]);
        let reply = get(node(http_port(&cluster)), None, "/", &[("Cookie", &tampered)]).await;
        assert_ne!(session_cookie(&reply), tampered, "a tampered cookie is replaced");
    }
    assert!(seen.len() > 1, "new sessions spread over backends: {seen:?}");

    // learn_cookie: the application's JSESSIONID, learned from its Set-Cookie.
    let mut seen = BTreeSet::new();
    for s in 0..6 {
        let id = format!("sess-{s}");
        let login = get(node(ports.learn), None, &format!("/login?id={id}"), &[]).await;
        seen.insert(login.body.clone());
        let cookie = format!("JSESSIONID={id}");
        for i in 0..50 {
            let reply = get(node(ports.learn), None, "/", &[("Cookie", &cookie)]).await;
            assert_eq!(reply.body, login.body, "{id} moved on request {i}");
        }
    }
    assert!(seen.len() > 1, "logins spread over backends: {seen:?}");

    // header: the value of X-Session.
    for s in 0..6 {
        let user = format!("user-{s}");
        let first = get(node(ports.header), None, "/", &[("X-Session", &user)]).await;
        for i in 0..50 {
            let reply = get(node(ports.header), None, "/", &[("X-Session", &user)]).await;
            assert_eq!(reply.body, first.body, "{user} moved on request {i}");
        }
    }

    // source_ip over HTTP and TCP: each client address stays put.
    let mut seen = BTreeSet::new();
    for c in 10..16u8 {
        let client: IpAddr = format!("127.0.0.{c}").parse().expect("ip");
        let first = get(node(ports.source), Some(client), "/", &[]).await;
        let first_tcp = tcp_read(node(ports.tcp), client).await;
        seen.insert(first_tcp.clone());
        for i in 0..50 {
            assert_eq!(
                get(node(ports.source), Some(client), "/", &[]).await.body,
                first.body,
                "{client} HTTP moved on {i}"
            );
            assert_eq!(
                tcp_read(node(ports.tcp), client).await,
                first_tcp,
                "{client} TCP moved on {i}"
            );
        }
    }
    assert!(seen.len() > 1, "TCP clients spread over backends: {seen:?}");
    let stats = stats(&cluster, 0);
    let hits = stats[&1]["hits"].as_u64().unwrap_or(0);
    assert!(hits >= 1000, "node 1 counted {hits} sticky hits");
    // The same counters, scraped from /metrics.
    let scrape = at(&cluster, 0, cluster.metrics_port);
    let metrics = get(scrape, None, "/metrics", &[]).await.body;
    let scraped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("raftlb_sticky_hits_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no raftlb_sticky_hits_total in\n{metrics}"));
    assert!(
        scraped >= hits as f64,
        "/metrics says {scraped} hits, ctl said {hits}"
    );
    assert!(
        metrics.contains("raftlb_sticky_entries{pool=\"header\"} 6"),
        "{metrics}"
    );
}

/// Connects to `target` from `source` and returns what the TCP backend wrote.
async fn tcp_read(target: SocketAddr, source: IpAddr) -> String {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind((source, 0).into()).expect("bind");
    let mut stream = socket.connect(target).await.expect("connect");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    text
}

/// Creates `n` header sessions through `target`; returns user → backend.
async fn sessions(target: SocketAddr, prefix: &str, n: usize) -> BTreeMap<String, String> {
    let mut made = BTreeMap::new();
    for s in 0..n {
        let user = format!("{prefix}-{s}");
        made.insert(
            user.clone(),
            get(target, None, "/", &[("X-Session", &user)]).await.body,
        );
    }
    made
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_the_death_of_the_node_that_made_them() {
    let backends = http_backends(3).await;
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    let (mut cluster, ports) = start(&addresses, &addresses, "30m").await;
    let leader = cluster.index_of(cluster.wait_leader(Duration::from_secs(10)).await);
    let survivor = (leader + 1) % 3;

    // async: 200 sessions, then one replication window (all nodes hold them).
    let made = sessions(at(&cluster, leader, ports.header), "async", 200).await;
    wait::until(
        "200 sessions replicated to every node",
        Duration::from_secs(10),
        || {
            stats(&cluster, survivor)
                .values()
                .filter(|s| table(s, "header").0 >= 200)
                .count()
                == 3
        },
    )
    .await;

    // sync: sessions made on the leader right up to its death.
    let target = at(&cluster, leader, ports.sync);
    let maker = tokio::spawn(async move {
        let mut made = BTreeMap::new();
        for s in 0.. {
            let user = format!("sync-{s}");
            match raw_get(target, None, "/", &[("X-Session", &user)]).await {
                Some(reply) if reply.status == 200 => {
                    made.insert(user, reply.body);
                }
                _ => return made,
            }
        }
        made
    });
    wait::until("sync sessions under way", Duration::from_secs(10), || {
        stats(&cluster, survivor)
            .get(&cluster.members[leader].id)
            .is_some_and(|s| table(s, "sync").0 >= 50)
    })
    .await;
    cluster.kill(leader);
    let sync_made = maker.await.expect("maker");
    assert!(sync_made.len() >= 50, "only {} sync sessions", sync_made.len());

    // The new leader, once it has applied what its predecessor committed
    // (a linearizable read waits for that): what the VIP's new owner is.
    let old_leader = cluster.members[leader].id;
    let mut new_leader = old_leader;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while new_leader == old_leader {
        assert!(std::time::Instant::now() < deadline, "no new leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
        new_leader = cluster.wait_leader(Duration::from_secs(10)).await;
    }
    let new_leader = cluster.index_of(new_leader);
    let mut admin = Admin::new(&cluster.members[new_leader].raft, Duration::from_secs(2));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Err(e) = admin.read(false).await {
        assert!(
            std::time::Instant::now() < deadline,
            "no linearizable read on the new leader: {e}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (user, backend) in &made {
        let reply = get(
            at(&cluster, new_leader, ports.header),
            None,
            "/",
            &[("X-Session", user)],
        )
        .await;
        assert_eq!(&reply.body, backend, "async session {user} moved after the kill");
    }
    for (user, backend) in &sync_made {
        let reply = get(
            at(&cluster, new_leader, ports.sync),
            None,
            "/",
            &[("X-Session", user)],
        )
        .await;
        assert_eq!(&reply.body, backend, "sync session {user} moved after the kill");
    }
    println!(
        "kill -9 of the node that made them: {} async and {} sync sessions all kept their backend",
        made.len(),
        sync_made.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backends_resticks_drain_keeps_maintenance_moves() {
    let mut backends = http_backends(3).await;
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    let (cluster, ports) = start(&addresses, &addresses, "30m").await;
    let target = at(&cluster, 0, ports.header);
    let made = sessions(target, "u", 30).await;
    let on = |name: &str| {
        made.iter()
            .filter(|(_, b)| *b == name)
            .map(|(u, _)| u.clone())
            .collect::<Vec<_>>()
    };

    // b3 dies: its sessions move once, then stay where they moved.
    let (dead, dead_users) = ("b3", on("b3"));
    assert!(!dead_users.is_empty(), "some sessions on b3: {made:?}");
    drop(backends.remove(2));
    wait::port_closed(&addresses[2].to_string(), Duration::from_secs(5)).await;
    for user in &dead_users {
        let moved = get(target, None, "/", &[("X-Session", user)]).await.body;
        assert_ne!(moved, dead);
        for _ in 0..5 {
            assert_eq!(
                get(target, None, "/", &[("X-Session", user)]).await.body,
                moved,
                "{user} re-stuck twice"
            );
        }
        // Every node agrees on where it went.
        let port = if moved == "b1" {
            addresses[0].port()
        } else {
            addresses[1].port()
        };
        wait::until(
            &format!("every node has {user} on {moved}"),
            Duration::from_secs(5),
            || {
                (0..3).all(|node| {
                    let (_, out, _) =
                        cluster.ctl(node, &["--json", "sticky", "get", user, "--pool", "header"]);
                    out.contains(&format!(":{port}\""))
                })
            },
        )
        .await;
    }

    // Drain b1: its sessions stay; new ones avoid it.
    let b1 = addresses[0].to_string();
    let (status, _, err) = cluster.ctl(0, &["backend", "drain", "header", &b1]);
    assert!(status.success(), "{err}");
    let b1_users: Vec<String> = on("b1");
    assert!(!b1_users.is_empty());
    for user in &b1_users {
        let reply = get(target, None, "/", &[("X-Session", user)]).await;
        assert_eq!(reply.body, "b1", "drain moved {user}");
    }
    // `ctl` returns once node 0 applied the change; its data plane takes
    // the new view a moment later (its own task), so the first check waits.
    let deadline = Instant::now() + Duration::from_secs(2);
    for attempt in 0.. {
        let fresh = sessions(target, &format!("after-drain-{attempt}"), 10).await;
        if fresh.values().all(|b| b == "b2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new sessions on a draining backend: {fresh:?}"
        );
    }

    // Maintenance on b1: its sessions move (once the data plane has the
    // change, as above).
    let (status, _, err) = cluster.ctl(0, &["backend", "maintenance", "header", &b1]);
    assert!(status.success(), "{err}");
    let deadline = Instant::now() + Duration::from_secs(2);
    while get(target, None, "/", &[("X-Session", &b1_users[0])]).await.body != "b2" {
        assert!(Instant::now() < deadline, "{} stayed in maintenance", b1_users[0]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for user in &b1_users {
        assert_eq!(
            get(target, None, "/", &[("X-Session", user)]).await.body,
            "b2",
            "{user} stayed in maintenance"
        );
    }
    let stats = stats(&cluster, 0);
    assert!(stats[&1]["resticks"].as_u64().unwrap_or(0) >= (dead_users.len() + b1_users.len()) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_leaves_identical_tables_on_every_node() {
    let backends = http_backends(3).await;
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    let (cluster, ports) = start(&addresses, &addresses, "2s").await;
    // Sessions made over about 1.5 s through all three nodes, so they expire
    // at different times.
    for round in 0..5 {
        for node in 0..3 {
            sessions(at(&cluster, node, ports.header), &format!("r{round}n{node}"), 10).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Compare every node at the same applied index, as sessions expire,
    // until all are gone.
    let mut compared = BTreeSet::new();
    wait::until("every session expired", Duration::from_secs(15), || {
        let all = stats(&cluster, 0);
        let indexes: BTreeSet<u64> = all.values().filter_map(|s| s["applied_index"].as_u64()).collect();
        if all.len() == 3 && indexes.len() == 1 {
            let tables: BTreeSet<(u64, String)> = all.values().map(|s| table(s, "header")).collect();
            assert_eq!(tables.len(), 1, "nodes differ at one applied index: {all:?}");
            compared.extend(tables.into_iter().map(|(entries, _)| entries));
        }
        compared.contains(&0) && compared.len() >= 2
    })
    .await;
    println!("identical tables on all nodes at entry counts {compared:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_and_joined_nodes_hold_the_same_table() {
    let backends = http_backends(3).await;
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    let (mut cluster, ports) = start(&addresses, &addresses, "30m").await;
    sessions(at(&cluster, 0, ports.header), "before", 300).await;

    // Node 3 snapshots (and purges its log), more sessions follow, node 3
    // restarts: it starts from the snapshot and replays the rest.
    let (status, out, err) = cluster.ctl(2, &["snapshot"]);
    assert!(status.success(), "{err}");
    println!("{}", out.trim());
    sessions(at(&cluster, 0, ports.header), "after", 100).await;
    cluster.kill(2);
    cluster.spawn(2);
    cluster.wait_ready(2).await;
    // If node 3 led, the cluster elects again (a restarted node never
    // resumes leading).
    cluster.wait_leader(Duration::from_secs(10)).await;

    let joiner = cluster.start_joiner(4).await;
    let (status, _, err) = cluster.ctl(0, &["member", "add", "4", &cluster.members[joiner].raft.clone()]);
    assert!(status.success(), "member add: {err}");
    cluster.wait_ready(joiner).await;

    wait::until(
        "all four nodes hold the same 400 sessions",
        Duration::from_secs(15),
        || {
            let all = stats(&cluster, 0);
            let tables: BTreeSet<(u64, String)> = all.values().map(|s| table(s, "header")).collect();
            all.len() == 4 && tables.len() == 1 && tables.iter().all(|(n, _)| *n == 400)
        },
    )
    .await;
    let user = "before-7";
    let expected = get(at(&cluster, 0, ports.header), None, "/", &[("X-Session", user)])
        .await
        .body;
    for node in [2, joiner] {
        let reply = get(
            at(&cluster, node, ports.header),
            None,
            "/",
            &[("X-Session", user)],
        )
        .await;
        assert_eq!(reply.body, expected, "node index {node} sends {user} elsewhere");
    }

    // Flush forgets the pool's sessions on every node.
    let (status, out, err) = cluster.ctl(1, &["sticky", "flush", "header"]);
    assert!(status.success(), "flush: {err}");
    assert!(
        out.contains("flushed the sticky sessions of pool header"),
        "{out}"
    );
    wait::until("no session left on any node", Duration::from_secs(10), || {
        let all = stats(&cluster, 0);
        all.len() == 4 && all.values().all(|s| table(s, "header").0 == 0)
    })
    .await;
    let (_, out, _) = cluster.ctl(0, &["sticky", "get", user]);
    assert!(out.contains("no session"), "{out}");
}
