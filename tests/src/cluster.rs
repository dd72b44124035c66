//! A cluster of real `raftlb run` processes, node N on 127.0.0.N, each with
//! its own Raft/admin address and its own bind of the replicated HTTP
//! listener, sharing one data directory root that outlives restarts. Admin
//! calls go through the real `raftlb ctl` binary.

use crate::admin::Admin;
use crate::free_port;
use crate::process::{Raftlb, TempDir, run_to_end};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

pub const CLUSTER_ID: &str = "test-lb";

/// One node's place in the cluster.
#[derive(Debug)]
pub struct Member {
    pub id: u64,
    /// Raft and admin gRPC address.
    pub raft: String,
    /// Where this node serves the HTTP listener.
    pub http: String,
    pub data_dir: PathBuf,
    pub process: Option<Raftlb>,
    /// A `[cluster.tls]` section of its own (replaceable files, say);
    /// `None`: the shared test certificates.
    pub tls: Option<String>,
}

/// Several nodes forming one cluster.
#[derive(Debug)]
pub struct Cluster {
    pub members: Vec<Member>,
    http_port: u16,
    /// Every node serves `/metrics` on 127.0.0.N:this port.
    pub metrics_port: u16,
    /// The seed listeners and pools every initial node's file carries.
    seed: String,
    /// `[cluster]` `heartbeat_interval` and `election_timeout` (e.g.
    /// `"50ms"`, `"3s"`) for nodes spawned from now on; `None`: defaults.
    pub timing: Option<(&'static str, &'static str)>,
    /// `insecure_cleartext = true` (every node is on loopback) instead of
    /// mutual TLS, for nodes spawned from now on: the figures compare.
    pub cleartext: bool,
    _root: TempDir,
}

impl Cluster {
    /// Starts `voters` nodes that form a cluster seeded with `seed` (TOML
    /// `[[listener]]`/`[[pool]]` text; its listeners should bind
    /// `0.0.0.0:{HTTP}`, replaced here by the cluster's HTTP port), and waits
    /// until every one is serving.
    pub async fn start(voters: u64, seed: &str) -> Cluster {
        Self::start_with(Cluster::new(voters, seed)).await
    }

    /// [`Cluster::start`] with `[cluster]` `heartbeat_interval` and
    /// `election_timeout` set, e.g. `("1s", "9s")` for entries of a few
    /// MB: openraft gives AppendEntries one heartbeat interval, and a debug
    /// build needs far more than the default 25 ms to replicate such an
    /// entry, and may be busy with it for seconds, longer than followers
    /// wait before they stand (`election_timeout`).
    pub async fn start_timed(voters: u64, seed: &str, timing: (&'static str, &'static str)) -> Cluster {
        let mut cluster = Cluster::new(voters, seed);
        cluster.timing = Some(timing);
        Self::start_with(cluster).await
    }

    async fn start_with(mut cluster: Cluster) -> Cluster {
        for i in 0..cluster.members.len() {
            cluster.spawn(i);
        }
        for i in 0..cluster.members.len() {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    /// The same roster and files as [`Cluster::start`], no process started.
    pub fn new(voters: u64, seed: &str) -> Cluster {
        let root = TempDir::new("cluster");
        let raft_port = free_port();
        let http_port = free_port();
        let members = (1..=voters)
            .map(|id| Member {
                id,
                raft: format!("127.0.0.{id}:{raft_port}"),
                http: format!("127.0.0.{id}:{http_port}"),
                data_dir: root.path().join(format!("node{id}")),
                process: None,
                tls: None,
            })
            .collect();
        Cluster {
            members,
            http_port,
            metrics_port: free_port(),
            seed: seed.replace("{HTTP}", &http_port.to_string()),
            timing: None,
            cleartext: false,
            _root: root,
        }
    }

    /// The config file of node `index` (0-based).
    pub fn config(&self, index: usize) -> String {
        let me = &self.members[index];
        let peers: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.id <= self.initial_voters())
            .map(|m| format!("{} = \"{}\"", m.id, m.raft))
            .collect();
        let timing = self.timing.map_or(String::new(), |(heartbeat, election)| {
            format!("heartbeat_interval = \"{heartbeat}\"\nelection_timeout = \"{election}\"\n")
        });
        format!(
            "[node]\nid = {id}\ndata_dir = \"{dir}\"\ndrain_timeout = \"5s\"\nbind_ip = \"127.0.0.{id}\"\nmetrics = \"127.0.0.{id}:{metrics}\"\n\n\
             [cluster]\nid = \"{CLUSTER_ID}\"\nraft = \"{raft}\"\npeers = {{ {peers} }}\n{timing}{tls}\n{seed}",
            id = me.id,
            dir = me.data_dir.display(),
            raft = me.raft,
            metrics = self.metrics_port,
            peers = peers.join(", "),
            tls = match (&me.tls, self.cleartext) {
                (_, true) => "insecure_cleartext = true\n".to_string(),
                (Some(tls), false) => tls.clone(),
                (None, false) => crate::pki::shared(CLUSTER_ID).node_section(me.id),
            },
            seed = self.seed,
        )
    }

    fn initial_voters(&self) -> u64 {
        self.members.iter().filter(|m| m.id <= 3).count() as u64
    }

    /// Starts node `index`'s process (again) without waiting.
    pub fn spawn(&mut self, index: usize) {
        let config = self.config(index);
        self.members[index].process = Some(Raftlb::spawn(&config));
    }

    /// Waits until node `index` serves the HTTP listener.
    pub async fn wait_ready(&mut self, index: usize) {
        let http = self.members[index].http.clone();
        let process = self.members[index].process.as_mut().expect("node running");
        process.ready(&[&http]).await;
    }

    /// Adds node `id` to the roster (not to the cluster: `ctl member add`
    /// does that) and starts it with the seed's listeners in its file.
    pub async fn start_joiner(&mut self, id: u64) -> usize {
        let index = self.push_joiner(id);
        self.spawn(index);
        index
    }

    /// [`Cluster::start_joiner`] of the binary at `bin` with `env` added to
    /// its environment (a failpoints build pretending another version).
    pub fn start_joiner_as(&mut self, id: u64, bin: &std::path::Path, env: &[(String, String)]) -> usize {
        let index = self.push_joiner(id);
        let config = self.config(index);
        self.members[index].process = Some(Raftlb::spawn_as(&config, bin, env));
        index
    }

    /// Adds node `id` to the roster, on the cluster's ports; its index.
    fn push_joiner(&mut self, id: u64) -> usize {
        let root = self.members[0].data_dir.parent().expect("root").to_path_buf();
        let raft_port = self.members[0].raft.rsplit(':').next().expect("port").to_string();
        self.members.push(Member {
            id,
            raft: format!("127.0.0.{id}:{raft_port}"),
            http: format!("127.0.0.{id}:{}", self.http_port),
            data_dir: root.join(format!("node{id}")),
            process: None,
            tls: None,
        });
        self.members.len() - 1
    }

    /// SIGKILLs node `index`.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut process) = self.members[index].process.take() {
            process.kill();
        }
    }

    /// Runs `raftlb ctl --node <node index's address> ARGS…`.
    pub fn ctl(&self, index: usize, args: &[&str]) -> (ExitStatus, String, String) {
        ctl(&self.members[index].raft, args)
    }

    /// An admin client of node `index`, over what the cluster speaks.
    pub fn admin(&self, index: usize, timeout: Duration) -> Admin {
        match self.cleartext {
            true => Admin::cleartext(&self.members[index].raft, timeout),
            false => Admin::new(&self.members[index].raft, timeout),
        }
    }

    /// The leader's id as node `index` reports it, if it knows one.
    pub async fn leader_seen_by(&self, index: usize) -> Option<u64> {
        let mut admin = self.admin(index, Duration::from_millis(500));
        let leader = admin.status().await.ok()?.leader_id;
        (leader != 0).then_some(leader)
    }

    /// Waits until every running node names the same leader; returns it.
    pub async fn wait_leader(&self, deadline: Duration) -> u64 {
        let start = Instant::now();
        loop {
            let mut seen: Vec<Option<u64>> = Vec::new();
            for i in (0..self.members.len()).filter(|i| self.members[*i].process.is_some()) {
                seen.push(self.leader_seen_by(i).await);
            }
            if let Some(Some(first)) = seen.first()
                && seen.iter().all(|s| s == &Some(*first))
            {
                return *first;
            }
            assert!(
                start.elapsed() < deadline,
                "no agreed leader after {deadline:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Index of the member with node id `id`.
    pub fn index_of(&self, id: u64) -> usize {
        self.members.iter().position(|m| m.id == id).expect("member")
    }
}

/// Runs `raftlb ctl` against `node` as this fixture's cluster's admin.
pub fn ctl(node: &str, args: &[&str]) -> (ExitStatus, String, String) {
    ctl_as("admin", node, args)
}

/// Runs `raftlb ctl` against `node` as client `who` (`admin` or `reader`).
pub fn ctl_as(who: &str, node: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let credentials = crate::pki::shared(CLUSTER_ID).ctl_args(who);
    let mut all = vec!["ctl", "--node", node];
    all.extend(credentials.iter().map(String::as_str));
    all.extend_from_slice(args);
    run_to_end(&all)
}

/// A seed with one HTTP listener (`web`, on every node's address) sending
/// to one pool (`app`) of `backends` balanced by `algorithm`.
pub fn http_seed(algorithm: &str, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{b}\" }}"))
        .collect();
    format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"0.0.0.0:{{HTTP}}\"\npool = \"app\"\n\n\
         [[pool]]\nname = \"app\"\nalgorithm = \"{algorithm}\"\nbackends = [{}]\n",
        list.join(", ")
    )
}

/// Adds [`marker`] `n` to pool `app` in maintenance, so it never takes
/// traffic: a write that changes nothing but the log.
pub fn add_marker(n: u32) -> raftlb_config::Command {
    raftlb_config::Command::AddBackend {
        pool: "app".to_string(),
        backend: raftlb_config::BackendSpec {
            state: raftlb_config::AdminState::Maintenance,
            ..raftlb_config::BackendSpec::new(marker(n))
        },
    }
}

/// An address no backend listens on, unique per `n`: a marker in the state.
pub fn marker(n: u32) -> SocketAddr {
    SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 9))
}
