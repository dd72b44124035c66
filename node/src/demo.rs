//! `raftlb demo`: a three-node cluster and three small HTTP backends on
//! loopback, so a newcomer sees replicated balancing with one command and no
//! root. The nodes are real `raftlb run` processes on 127.0.0.1, .2 and .3
//! (so one can be killed); each backend answers every request with its own
//! name (`backend-1`, …). The cluster runs as a real one would, with mutual
//! TLS: the demo makes a CA and certificates in its run directory (a new
//! one each time, mode 0700) and a ctl config there, so the `raftlb ctl`
//! lines it prints work as printed.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Response, body::Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Child;

pub const BACKENDS: u16 = 3;
pub const NODES: u8 = 3;
const CLUSTER: &str = "demo";

/// Where the demo's processes listen.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Each node's HTTP listener, on 127.0.0.N.
    pub http: u16,
    /// Each node's Raft and admin gRPC, on 127.0.0.N.
    pub raft: u16,
    /// The first demo backend on 127.0.0.1; the others follow it.
    pub backend: u16,
}

/// Node `n`'s configuration, as the TOML an operator would write. All three
/// seed the same listener (bound on each node's own 127.0.0.N) and pool;
/// certificates are in `dir/pki` ([`make_certificates`]).
pub fn config_text(n: u8, ports: Ports, dir: &Path) -> String {
    let backends: Vec<String> = (0..BACKENDS)
        .map(|i| format!("  {{ address = \"127.0.0.1:{}\" }},", ports.backend + i))
        .collect();
    let peers: Vec<String> = (1..=NODES)
        .map(|id| format!("{id} = \"127.0.0.{id}:{}\"", ports.raft))
        .collect();
    format!(
        "[node]\nid = {n}\ndata_dir = \"{data}\"\ndrain_timeout = \"2s\"\nbind_ip = \"127.0.0.{n}\"\n\n\
         [cluster]\nid = \"{CLUSTER}\"\nraft = \"127.0.0.{n}:{raft}\"\npeers = {{ {peers} }}\n\n\
         [cluster.tls]\nca_file = \"{pki}/ca.pem\"\ncert_file = \"{pki}/node-{n}.pem\"\nkey_file = \"{pki}/node-{n}.key\"\n\n\
         [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"0.0.0.0:{http}\"\npool = \"demo\"\n\n\
         [[pool]]\nname = \"demo\"\nalgorithm = \"round_robin\"\nbackends = [\n{backends}\n]\n",
        data = dir.join(format!("node{n}")).display(),
        pki = dir.join("pki").display(),
        raft = ports.raft,
        peers = peers.join(", "),
        http = ports.http,
        backends = backends.join("\n"),
    )
}

/// Runs the demo until SIGINT/SIGTERM: backends in this process, three
/// `raftlb run` child processes forming one cluster, and a guide printed.
pub async fn run(ports: Ports) -> Result<(), String> {
    let stop = crate::node::stop_signal();
    let dir = fresh_dir()?;
    make_certificates(&dir, ports)?;
    start_backends(ports.backend).await.map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the raftlb binary: {e}"))?;
    let mut nodes = Vec::new();
    for n in 1..=NODES {
        let config = dir.join(format!("node{n}.toml"));
        std::fs::write(&config, config_text(n, ports, &dir))
            .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let log = std::fs::File::create(dir.join(format!("node{n}.log")))
            .map_err(|e| format!("cannot create the node log: {e}"))?;
        let child = tokio::process::Command::new(&exe)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start node {n}: {e}"))?;
        nodes.push(child);
    }
    let serving = wait_until_serving(ports, &mut nodes, &dir).await;
    if let Err(e) = serving {
        stop_nodes(&mut nodes).await;
        return Err(e);
    }
    print_guide(ports, &nodes, &dir, &exe);
    stop.await;
    // Whoever read the guide may have gone (a closed pipe is no reason to panic).
    let _ = writeln!(std::io::stdout(), "stopping the demo cluster");
    stop_nodes(&mut nodes).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A new directory of this user's alone, never one that existed before.
fn fresh_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for attempt in 0..100 {
        let mut salt = [0u8; 4];
        getrandom::fill(&mut salt).map_err(|e| format!("no randomness for the demo's directory: {e}"))?;
        let dir = base.join(format!(
            "raftlb-demo-{}-{:08x}",
            std::process::id(),
            u32::from_le_bytes(salt).wrapping_add(attempt)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    Err(format!("cannot find a new directory name in {}", base.display()))
}

/// The demo's CA, node certificates and admin client in `dir/pki`, and a
/// ctl config (`dir/ctl.toml`) that uses the admin client.
pub fn make_certificates(dir: &Path, ports: Ports) -> Result<(), String> {
    use crate::pki::Role;
    use crate::pki::issue::{Authority, KeyType, Validity};
    let pki = dir.join("pki");
    std::fs::create_dir(&pki).map_err(|e| format!("cannot create {}: {e}", pki.display()))?;
    let write = |name: &str, text: &str| {
        let path = pki.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    let ca = Authority::new(CLUSTER, KeyType::EcdsaP256, Validity::days(30))?;
    write("ca.pem", ca.cert_pem())?;
    for n in 1..=NODES {
        let node = ca.node(u64::from(n), KeyType::EcdsaP256, Validity::days(30))?;
        write(&format!("node-{n}.pem"), &node.cert_pem)?;
        write(&format!("node-{n}.key"), &node.key_pem)?;
    }
    let admin = ca.client("admin", Role::Admin, KeyType::EcdsaP256, Validity::days(30))?;
    write("client-admin.pem", &admin.cert_pem)?;
    write("client-admin.key", &admin.key_pem)?;
    let ctl = format!(
        "node = \"127.0.0.1:{}\"\nca = \"pki/ca.pem\"\ncert = \"pki/client-admin.pem\"\nkey = \"pki/client-admin.key\"\n",
        ports.raft
    );
    std::fs::write(dir.join("ctl.toml"), ctl).map_err(|e| format!("cannot write the ctl config: {e}"))
}

async fn wait_until_serving(ports: Ports, nodes: &mut [Child], dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    for (i, node) in nodes.iter_mut().enumerate() {
        let n = i + 1;
        let address = format!("127.0.0.{n}:{}", ports.http);
        loop {
            if TcpStream::connect(&address).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = node.try_wait() {
                let log = dir.join(format!("node{n}.log"));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                return Err(format!(
                    "demo node {n} exited ({status}); last lines of {}:\n{}",
                    log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("demo node {n} did not serve {address} within 20 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

fn print_guide(ports: Ports, nodes: &[Child], dir: &Path, exe: &Path) {
    let pids: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "node {} pid {}",
                i + 1,
                c.id().map_or("?".into(), |p| p.to_string())
            )
        })
        .collect();
    // The binary by its own path: the lines work as printed, on PATH or not.
    let ctl = format!(
        "{} ctl --ctl-config {}",
        exe.display(),
        dir.join("ctl.toml").display()
    );
    let first = ports.backend;
    println!(
        "raftlb demo: a 3-node cluster on 127.0.0.1-3, {BACKENDS} backends on 127.0.0.1:{first}-{last}.\n\
         Configs, data and logs: {dir}\n\n\
         Traffic, through any node:\n  for n in 1 2 3; do curl -s http://127.0.0.$n:{http}/; done\n\n\
         The cluster:\n  {ctl} status\n  {ctl} pools\n\n\
         Change it once, on any node; every node follows:\n  \
         {ctl} backend drain demo 127.0.0.1:{first}\n  \
         {ctl} backend enable demo 127.0.0.1:{first}\n  \
         {ctl} backend weight demo 127.0.0.1:{second} 5\n\n\
         Kill a node (the others elect a leader and keep serving):\n  kill -9 <pid>   ({pid_list})\n  \
         restart it: {exe} run --config {dir}/node<N>.toml\n\n\
         Ctrl-C stops the demo.",
        pid_list = pids.join(", "),
        last = first + BACKENDS - 1,
        second = first + 1,
        dir = dir.display(),
        exe = exe.display(),
        http = ports.http,
    );
}

async fn stop_nodes(nodes: &mut [Child]) {
    for node in nodes.iter() {
        if let Some(pid) = node.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for node in nodes.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(5), node.wait())
            .await
            .is_err()
        {
            let _ = node.kill().await;
        }
    }
}

/// Binds the demo backends and serves them in the background.
pub async fn start_backends(first_port: u16) -> std::io::Result<()> {
    for i in 0..BACKENDS {
        let address: SocketAddr = ([127, 0, 0, 1], first_port + i).into();
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("demo backend on {address}: {e}")))?;
        let name = Bytes::from(format!("backend-{}\n", i + 1));
        tokio::spawn(serve_backend(listener, name));
    }
    Ok(())
}

/// `raftlb backend`: one built-in backend on `listen`, answering every
/// request with `name` (the compose demo's backends).
pub async fn backend(listen: SocketAddr, name: String) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    eprintln!("backend {name} serving on {listen}");
    tokio::select! {
        () = serve_backend(listener, Bytes::from(format!("{name}\n"))) => Ok(()),
        () = crate::node::stop_signal() => Ok(()),
    }
}

async fn serve_backend(listener: TcpListener, name: Bytes) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors: pause rather than spin.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let name = name.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request: hyper::Request<Incoming>| {
                let name = name.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(name))) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
