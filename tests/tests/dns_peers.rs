//! Peers named by DNS (`[cluster] advertise` and `peers` as `NAME:PORT`),
//! as a Kubernetes StatefulSet names its pods: three real nodes that dial
//! each other as `localhost:PORT` form a cluster whose membership records
//! the names, replicate a write, and elect a new leader when theirs dies;
//! `ctl node drain` with no id then drains the node it talks to.

use raftlb_tests::cluster::{CLUSTER_ID, ctl};
use raftlb_tests::process::Raftlb;
use raftlb_tests::{free_port, wait};
use std::time::Duration;

fn config(id: u64, ports: &[u16; 3], http: u16, metrics: u16, dir: &std::path::Path) -> String {
    let peers: Vec<String> = (1..=3u64)
        .map(|n| format!("{n} = \"localhost:{}\"", ports[n as usize - 1]))
        .collect();
    format!(
        "[node]\nid = {id}\ndata_dir = \"{data}\"\ndrain_timeout = \"2s\"\nbind_ip = \"127.0.0.{id}\"\n\
         metrics = \"127.0.0.{id}:{metrics}\"\n\n\
         [cluster]\nid = \"{CLUSTER_ID}\"\nraft = \"127.0.0.1:{port}\"\nadvertise = \"localhost:{port}\"\n\
         peers = {{ {peers} }}\n{tls}\n\
         [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"0.0.0.0:{http}\"\npool = \"app\"\n\n\
         [[pool]]\nname = \"app\"\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n",
        data = dir.join(format!("node{id}")).display(),
        port = ports[id as usize - 1],
        peers = peers.join(", "),
        tls = raftlb_tests::pki::shared(CLUSTER_ID).node_section(id),
    )
}

/// `ctl status` through node `id`, once it names a leader.
async fn status(ports: &[u16; 3], id: u64) -> String {
    let node = format!("127.0.0.1:{}", ports[id as usize - 1]);
    wait::value_of("a leader named", Duration::from_secs(15), || {
        let node = node.clone();
        async move {
            let (status, out, _) = ctl(&node, &["status"]);
            (status.success() && out.contains("leader ")).then_some(out)
        }
    })
    .await
}

#[tokio::test]
async fn nodes_that_dial_each_other_by_name_form_a_cluster_and_fail_over() {
    let ports = [free_port(), free_port(), free_port()];
    let (http, metrics) = (free_port(), free_port());
    let root = raftlb_tests::process::TempDir::new("dns-peers");
    let mut nodes: Vec<Option<Raftlb>> = Vec::new();
    for id in 1..=3 {
        let text = config(id, &ports, http, metrics, root.path());
        nodes.push(Some(Raftlb::spawn(&text)));
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        let address = format!("127.0.0.{}:{http}", i + 1);
        node.as_mut().expect("running").ready(&[&address]).await;
    }
    let out = status(&ports, 1).await;
    for (i, port) in ports.iter().enumerate() {
        assert!(
            out.contains(&format!("localhost:{port}")),
            "node {} is recorded by name:\n{out}",
            i + 1
        );
    }
    let leader: u64 = out
        .split("leader ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .expect("leader id");
    // A write through a follower reaches the leader by name.
    let follower = if leader == 1 { 2 } else { 1 };
    let node = format!("127.0.0.1:{}", ports[follower as usize - 1]);
    let (done, _, err) = ctl(&node, &["backend", "add", "app", "127.0.0.1:10"]);
    assert!(done.success(), "write through node {follower}: {err}");
    nodes[leader as usize - 1].take().expect("leader").kill();
    let survivor = (1..=3).find(|id| *id != leader).expect("survivor");
    let after = wait::value_of("a new leader", Duration::from_secs(15), || async move {
        let out = status(&ports, survivor).await;
        (!out.contains(&format!("leader {leader} "))).then_some(out)
    })
    .await;
    let survivor_node = format!("127.0.0.1:{}", ports[survivor as usize - 1]);
    let mut admin = raftlb_tests::admin::Admin::new(&survivor_node, Duration::from_secs(5));
    let (state, _) = admin.read(false).await.expect("linearizable read after failover");
    let pool = state.spec().pool("app").expect("pool app");
    assert!(
        pool.backends
            .iter()
            .any(|b| b.address.to_string() == "127.0.0.1:10"),
        "the write made through node {follower} survived the leader's death"
    );
    // `ctl node drain` with no id drains the node it talks to (preStop).
    let (drained, out, err) = ctl(&survivor_node, &["node", "drain"]);
    assert!(drained.success(), "{err}");
    assert!(out.starts_with(&format!("node {survivor} is draining")), "{out}");
    let status = nodes[survivor as usize - 1]
        .as_mut()
        .expect("survivor")
        .wait_exit(Duration::from_secs(20))
        .await;
    assert!(status.success(), "the drained node exits cleanly: {status}");
    println!("by name: leader {leader} killed; then:\n{after}\n{out}");
}
