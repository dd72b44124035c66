//! A 3-node control plane in the test process: real sled stores in a temp
//! dir, real gRPC over mutual TLS on loopback ports (certificates made
//! with the same code as `raftlb certs`), no data plane.

#![allow(dead_code)] // each test file uses its own part

use raftlb_node::control::ControlPlane;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    socket.local_addr().expect("local address").port()
}

/// A CA and certificates for nodes 1 to 3 of cluster `name`, in `root`.
fn certificates(name: &str, root: &Path) {
    use raftlb_node::pki::issue::{Authority, KeyType, Validity};
    std::fs::create_dir_all(root).expect("create the test dir");
    let ca = Authority::new(name, KeyType::EcdsaP256, Validity::days(1)).expect("a CA");
    std::fs::write(root.join("ca.pem"), ca.cert_pem()).expect("write ca.pem");
    for id in 1..=3 {
        let node = ca
            .node(id, KeyType::EcdsaP256, Validity::days(1))
            .expect("a node certificate");
        std::fs::write(root.join(format!("node-{id}.pem")), &node.cert_pem).expect("write a certificate");
        std::fs::write(root.join(format!("node-{id}.key")), &node.key_pem).expect("write a key");
    }
}

fn config(name: &str, id: u64, dir: &Path, ports: &[u16], extra: &str) -> String {
    let peers: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("{} = \"127.0.0.1:{port}\"", i + 1))
        .collect();
    format!(
        "[node]\nid = {id}\ndata_dir = \"{dir}\"\n\n\
         [cluster]\nid = \"{name}\"\nraft = \"127.0.0.1:{raft}\"\npeers = {{ {peers} }}\n\n\
         [cluster.tls]\nca_file = \"{pki}/ca.pem\"\ncert_file = \"{pki}/node-{id}.pem\"\nkey_file = \"{pki}/node-{id}.key\"\n\n\
         [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:1\"\npool = \"app\"\n\n\
         [[pool]]\nname = \"app\"\nbackends = [{{ address = \"127.0.0.1:2\" }}]\n{extra}",
        dir = dir.display(),
        pki = dir.parent().expect("the root").display(),
        raft = ports[id as usize - 1],
        peers = peers.join(", "),
    )
}

/// Three control planes forming cluster `name`; the dir goes on drop.
pub struct Nodes {
    pub nodes: Vec<ControlPlane>,
    root: PathBuf,
}

impl Nodes {
    pub async fn start(name: &str) -> Nodes {
        Self::start_with(name, "").await
    }

    /// [`Nodes::start`] with `extra` TOML (more listeners and pools) in the seed.
    pub async fn start_with(name: &str, extra: &str) -> Nodes {
        let root = std::env::temp_dir().join(format!("raftlb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        certificates(name, &root);
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            let dir = root.join(format!("n{id}"));
            let text = config(name, id, &dir, &ports, extra);
            let config = raftlb_config::parse("n.toml", &text).expect("valid config");
            let path = root.join(format!("n{id}.toml"));
            nodes.push(
                ControlPlane::start(&config, &path)
                    .await
                    .expect("control plane starts"),
            );
        }
        wait_for(
            "a bootstrapped state on every node",
            Duration::from_secs(10),
            || nodes.iter().all(|n| n.applied().borrow().state.is_bootstrapped()),
        )
        .await;
        Nodes { nodes, root }
    }

    /// The leader's id, once every node names the same one (an election
    /// can still be settling just after the start).
    pub async fn leader(&self) -> u64 {
        let named = || {
            let leaders: Vec<Option<u64>> = self
                .nodes
                .iter()
                .map(|n| n.raft_metrics().borrow().current_leader)
                .collect();
            leaders[0].filter(|first| leaders.iter().all(|l| *l == Some(*first)))
        };
        wait_for("one leader named by every node", Duration::from_secs(10), || {
            named().is_some()
        })
        .await;
        named().expect("a leader")
    }

    /// The node with id `id`.
    pub fn node(&self, id: u64) -> &ControlPlane {
        &self.nodes[id as usize - 1]
    }

    pub async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub async fn wait_for(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < deadline, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
