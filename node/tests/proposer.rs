//! The batching proposer against a real 3-node control plane in this
//! process (real sled stores, real gRPC on loopback): a burst of proposals
//! on a follower is forwarded to the leader in a few log entries, not one
//! each, and every proposal gets its own outcome.

use raftlb_config::{BackendSpec, Command, Outcome};
use raftlb_node::control::ControlPlane;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PROPOSALS: u16 = 400;

fn free_port() -> u16 {
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    socket.local_addr().expect("local address").port()
}

fn config(id: u64, dir: &Path, ports: &[u16]) -> String {
    let peers: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("{} = \"127.0.0.1:{port}\"", i + 1))
        .collect();
    format!(
        "[node]\nid = {id}\ndata_dir = \"{dir}\"\n\n\
         [cluster]\nid = \"proposer-test\"\ntoken = \"t\"\nraft = \"127.0.0.1:{raft}\"\npeers = {{ {peers} }}\n\n\
         [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:1\"\npool = \"app\"\n\n\
         [[pool]]\nname = \"app\"\nbackends = [{{ address = \"127.0.0.1:2\" }}]\n",
        dir = dir.display(),
        raft = ports[id as usize - 1],
        peers = peers.join(", "),
    )
}

fn backend(n: u16) -> Command {
    Command::AddBackend {
        pool: "app".into(),
        backend: BackendSpec::new(SocketAddr::from(([10, 0, (n >> 8) as u8, n as u8], 80))),
    }
}

async fn wait_for(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < deadline, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_a_follower_commits_in_few_entries_with_one_outcome_each() {
    let root = std::env::temp_dir().join(format!("raftlb-proposer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let dir: PathBuf = root.join(format!("n{id}"));
        let path = root.join(format!("n{id}.toml"));
        let config = raftlb_config::parse("n.toml", &config(id, &dir, &ports)).expect("valid config");
        nodes.push(
            ControlPlane::start(&config, &path)
                .await
                .expect("control plane starts"),
        );
    }
    wait_for(
        "a bootstrapped state on every node",
        Duration::from_secs(10),
        || nodes.iter().all(|n| n.applied.borrow().state.is_bootstrapped()),
    )
    .await;
    let leader = nodes[0].raft.metrics().borrow().current_leader.expect("a leader");
    let follower = nodes
        .iter()
        .find(|n| n.raft.metrics().borrow().id != leader)
        .expect("a follower");
    let log_before = follower.raft.metrics().borrow().last_log_index.unwrap_or(0);

    let mut waiting = Vec::new();
    for n in 0..PROPOSALS {
        let proposer = follower.proposer.clone();
        waiting.push(tokio::spawn(async move { proposer.propose(backend(n)).await }));
    }
    // A proposal that must fail on its own without failing its batch.
    let doomed = follower
        .proposer
        .propose(Command::RemovePool { name: "nope".into() });
    match doomed.await {
        Ok(Outcome::Rejected(reason)) => assert!(reason.contains("nope"), "{reason}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    for proposal in waiting {
        let outcome = proposal.await.expect("task").expect("committed");
        assert_eq!(outcome, Outcome::Applied);
    }

    wait_for(
        "every node applies every proposal",
        Duration::from_secs(10),
        || {
            nodes.iter().all(|n| {
                let applied = n.applied.borrow();
                applied.state.spec().pools[0].backends.len() == usize::from(PROPOSALS) + 1
            })
        },
    )
    .await;
    let entries = follower.raft.metrics().borrow().last_log_index.unwrap_or(0) - log_before;
    println!(
        "{} proposals from a follower took {entries} log entries",
        PROPOSALS + 1
    );
    assert!(
        entries <= u64::from(PROPOSALS) / 4,
        "{entries} log entries for {} proposals: the proposer is not batching",
        PROPOSALS + 1
    );
    for node in nodes {
        node.stop().await;
    }
    let _ = std::fs::remove_dir_all(&root);
}
