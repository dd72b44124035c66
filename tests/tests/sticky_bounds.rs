//! Sticky tables bounded against hostile clients, through a real
//! three-node cluster on loopback: a `learn_cookie` value a client invents
//! creates no session.

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::client::{RawReply, raw_get};
use raftlb_tests::cluster::Cluster;
use raftlb_tests::wait;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

fn pool(name: &str, backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{b}\" }}"))
        .collect();
    format!(
        "[[pool]]\nname = \"{name}\"\nalgorithm = \"round_robin\"\nbackends = [{}]\n\n{extra}\n\n",
        list.join(", ")
    )
}

fn listener(name: &str, port: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nprotocol = \"http\"\nbind = \"0.0.0.0:{port}\"\npool = \"{name}\"\n\n"
    )
}

fn at(cluster: &Cluster, node: usize, port: u16) -> SocketAddr {
    let ip: IpAddr = format!("127.0.0.{}", cluster.members[node].id)
        .parse()
        .expect("ip");
    (ip, port).into()
}

fn http_port(cluster: &Cluster) -> u16 {
    let http = &cluster.members[0].http;
    http.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

async fn get(target: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawReply {
    let reply = raw_get(target, None, path, headers).await;
    let reply = reply.unwrap_or_else(|| panic!("no reply from {target}{path}"));
    assert_eq!(reply.status, 200, "{target}{path}: {reply:?}");
    reply
}

/// Node `node`'s `/metrics` text.
async fn scrape(cluster: &Cluster, node: usize) -> String {
    get(at(cluster, node, cluster.metrics_port), "/metrics", &[])
        .await
        .body
}

/// The value of `series` (name and labels) in a `/metrics` text; 0 if absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Every member's `ctl sticky stats --json`, by node id.
fn stats(cluster: &Cluster) -> BTreeMap<u64, Value> {
    let (status, out, err) = cluster.ctl(0, &["--json", "sticky", "stats"]);
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
            let hash = t["hash"].as_str().unwrap_or("").to_string();
            (t["entries"].as_u64().unwrap_or(0), hash)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_a_client_invents_creates_no_session() {
    let backends = [HttpBackend::start("b1").await, HttpBackend::start("b2").await];
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    let seed = listener("learn", "{HTTP}")
        + &pool(
            "learn",
            &addresses,
            "[pool.sticky]\nkind = \"learn_cookie\"\nname = \"JSESSIONID\"",
        );
    let cluster = Cluster::start(3, &seed).await;
    let port = http_port(&cluster);

    // Cookies the application never set, through nodes 1 and 2.
    for n in 0..100 {
        let cookie = format!("JSESSIONID=invented-{n}");
        get(at(&cluster, n % 2, port), "/", &[("Cookie", &cookie)]).await;
    }
    // A session the application starts, through each of those nodes.
    let mut logins = Vec::new();
    for node in 0..2 {
        let login = get(at(&cluster, node, port), &format!("/login?id=real-{node}"), &[]).await;
        logins.push(login.body);
    }
    wait::until(
        "both logins in every node's table",
        Duration::from_secs(10),
        || {
            let all = stats(&cluster);
            all.len() == 3 && all.values().all(|s| table(s, "learn").0 >= 2)
        },
    )
    .await;
    // A proposal is counted before the response leaves: each node proposed
    // its login and nothing else, and the tables hold the logins alone.
    for node in 0..2 {
        let proposals = sample(&scrape(&cluster, node).await, "raftlb_sticky_proposals_total");
        assert_eq!(proposals, 1.0, "node {} proposed {proposals}", node + 1);
    }
    assert!(
        stats(&cluster).values().all(|s| table(s, "learn").0 == 2),
        "{:?}",
        stats(&cluster)
    );
    let (_, out, _) = cluster.ctl(2, &["sticky", "get", "invented-0", "--pool", "learn"]);
    assert!(out.contains("no session"), "{out}");
    // The learned session sticks, sent through any node.
    for i in 0..20 {
        let reply = get(at(&cluster, i % 3, port), "/", &[("Cookie", "JSESSIONID=real-0")]).await;
        assert_eq!(reply.body, logins[0], "real-0 moved on request {i}");
    }
}
