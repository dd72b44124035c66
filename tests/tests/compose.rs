//! The container image and the compose cluster (`deploy/container/`,
//! `deploy/compose/`), on this machine's Docker engine: the image is built
//! from this build's binary by `deploy/container/build.sh`; then for each
//! profile (three balancers; two balancers and a witness) `docker-compose
//! up` brings up the nodes, three backends and the certificates; a client
//! container gets answers through the VIP; `docker kill` of the VIP owner
//! and the VIP answers again within 1 s; `docker-compose down -v` leaves
//! no container, volume or network behind. Needs root (the Docker
//! socket) and docker and docker-compose; skipped, saying so, otherwise
//! (never where `RAFTLB_REQUIRE_TOOLS=1`).

use raftlb_tests::process::binary;
use raftlb_tests::wait;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const PROJECT: &str = "raftlbtest";
const IMAGE: &str = "raftlb:test";
const VIP: &str = "198.19.40.100";

fn deploy_dir(sub: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy")).join(sub)
}

/// `COMPOSE_PROFILES=profile docker-compose -p PROJECT ARGS…` in
/// deploy/compose, with the test image.
fn compose(profile: &str, args: &[&str]) -> Output {
    Command::new("docker-compose")
        .args(["-p", PROJECT])
        .args(args)
        .current_dir(deploy_dir("compose"))
        .env("RAFTLB_IMAGE", IMAGE)
        .env("COMPOSE_PROFILES", profile)
        .output()
        .expect("docker-compose")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("docker")
}

/// What of the project Docker still has: containers, volumes, networks.
fn leftovers() -> Vec<String> {
    let label = format!("label=com.docker.compose.project={PROJECT}");
    let mut left = Vec::new();
    for (kind, args) in [
        ("container", vec!["ps", "-a", "-q", "--filter", &label]),
        ("volume", vec!["volume", "ls", "-q", "--filter", &label]),
        ("network", vec!["network", "ls", "-q", "--filter", &label]),
    ] {
        let output = docker(&args);
        left.extend(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(|id| format!("{kind} {id}")),
        );
    }
    left
}

/// One `GET path` of `address` from this host (on the compose bridge):
/// the body of a 200 answer.
fn get(address: &str, path: &str, timeout: Duration) -> Option<String> {
    use std::io::{Read, Write};
    let address = address.parse().expect("address");
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: compose\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.trim().to_string())
}

fn get_vip(timeout: Duration) -> Option<String> {
    get(&format!("{VIP}:80"), "/", timeout)
}

/// The container of the node whose `/metrics` says it holds the VIP.
fn vip_owner() -> Option<String> {
    (1..=3).find_map(|n| {
        let metrics = get(
            &format!("198.19.40.1{n}:9100"),
            "/metrics",
            Duration::from_secs(1),
        )?;
        metrics
            .lines()
            .any(|l| l.starts_with("raftlb_vip_held{") && l.contains(VIP) && l.ends_with(" 1"))
            .then(|| format!("{PROJECT}_node{n}_1"))
    })
}

/// A client container asks the VIP once: it must get a backend's answer.
fn client_through_vip(profile: &str, when: &str) {
    let client = compose(
        profile,
        &[
            "run",
            "--rm",
            "client",
            "probe",
            "--url",
            &format!("http://{VIP}/"),
        ],
    );
    assert!(
        client.status.success() && text(&client).contains("200 backend-"),
        "the client container {when}: {}",
        text(&client)
    );
}

/// Takes the project down, whatever state it is in, on every exit.
struct Down(&'static str);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = compose(self.0, &["down", "-v", "--remove-orphans"]);
    }
}

#[test]
fn compose_cluster_serves_the_vip_fails_over_and_leaves_nothing() {
    if !raftlb_tests::root_or_skip("compose_cluster", "use the Docker engine")
        || !raftlb_tests::tool_or_skip("compose_cluster", "docker")
        || !raftlb_tests::tool_or_skip("compose_cluster", "docker-compose")
    {
        return;
    }
    let started = Instant::now();
    let build = Command::new("bash")
        .arg(deploy_dir("container").join("build.sh"))
        .arg(binary())
        .env("IMAGE", IMAGE)
        .output()
        .expect("build.sh");
    assert!(build.status.success(), "image build: {}", text(&build));
    println!("{}", String::from_utf8_lossy(&build.stdout).trim());
    let built = started.elapsed();

    println!("image built in {} ms", built.as_millis());
    // The image runs as its own user, and asks /readyz for its health.
    let inspect = docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Config.User}} {{json .Config.Healthcheck}}",
        IMAGE,
    ]);
    let config = text(&inspect);
    assert!(
        config.starts_with("65532") || config.starts_with("raftlb"),
        "image user: {config}"
    );
    assert!(config.contains("probe"), "image health check: {config}");
    for profile in ["balancer", "witness"] {
        up_kill_down(profile);
    }
}

/// One profile's cluster: up, answers through the VIP, `docker kill` of
/// the VIP owner answered again within 1 s, down leaving nothing.
fn up_kill_down(profile: &'static str) {
    let started = Instant::now();
    let _ = compose(profile, &["down", "-v", "--remove-orphans"]);
    let _down = Down(profile);
    let up = compose(profile, &["up", "-d"]);
    assert!(
        up.status.success(),
        "docker-compose up ({profile}): {}",
        text(&up)
    );
    // `announce` asks the VIP once two balancers are healthy, then says where to go.
    let announced = wait::blocking_value("the announce line", Duration::from_secs(90), || {
        let logs = text(&compose(profile, &["logs", "--no-color", "announce"]));
        logs.contains("raftlb is up").then_some(logs)
    });
    assert!(announced.contains(&format!("curl http://{VIP}/")), "{announced}");
    let up_after = started.elapsed();

    // A client container, on the same network, through the VIP.
    client_through_vip(profile, "before the failover");
    let admin = compose(profile, &["run", "--rm", "ctl", "status"]);
    assert!(admin.status.success(), "ctl status: {}", text(&admin));
    assert!(
        text(&admin).contains("holds VIP 198.19.40.100/24"),
        "{}",
        text(&admin)
    );
    // Node 3 forwards traffic as a balancer, and none as a witness.
    let node3 = get("198.19.40.13:80", "/", Duration::from_secs(1));
    assert_eq!(
        node3.is_some(),
        profile == "balancer",
        "node 3 ({profile}) answered {node3:?}"
    );

    // Nodes hold the three network capabilities and no other.
    let caps = text(&docker(&[
        "inspect",
        "-f",
        "{{json .HostConfig.CapDrop}} {{json .HostConfig.CapAdd}}",
        &format!("{PROJECT}_node1_1"),
    ]));
    for cap in ["ALL", "NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"] {
        assert!(caps.contains(cap), "node 1's capabilities: {caps}");
    }
    // From the host too (its first packet to the VIP waits for ARP).
    let asked = Instant::now();
    wait::blocking_value("the VIP answers the host", Duration::from_secs(5), || {
        get_vip(Duration::from_secs(1))
    });
    println!(
        "the VIP answered the host after {} ms",
        asked.elapsed().as_millis()
    );
    let owner = wait::blocking_value("a VIP owner", Duration::from_secs(10), vip_owner);
    let killed = Instant::now();
    let kill = docker(&["kill", &owner]);
    assert!(kill.status.success(), "docker kill {owner}: {}", text(&kill));
    let deadline = Duration::from_secs(10);
    while get_vip(Duration::from_millis(100)).is_none() {
        if killed.elapsed() > deadline {
            let neighbour = Command::new("ip")
                .args(["neigh", "show", VIP])
                .output()
                .expect("ip");
            panic!(
                "the VIP did not answer within {deadline:?} of `docker kill {owner}` ({profile}); owner now {:?}, \
                 neighbour entry {}; logs:\n{}",
                vip_owner(),
                text(&neighbour),
                text(&compose(profile, &["logs", "--no-color", "--tail", "40"]))
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let failover = killed.elapsed();
    let new_owner = wait::blocking_value("a new VIP owner", Duration::from_secs(5), vip_owner);
    assert_ne!(new_owner, owner);
    assert!(
        failover < Duration::from_secs(1),
        "the VIP answered {failover:?} after `docker kill {owner}` ({profile})"
    );
    client_through_vip(profile, "after the failover");

    let down = compose(profile, &["down", "-v", "--remove-orphans"]);
    assert!(down.status.success(), "docker-compose down -v: {}", text(&down));
    let left = leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
    println!(
        "profile {profile}: up and announced in {} ms; `docker kill {owner}` → VIP answered \
         (from {new_owner}) after {} ms; down -v left nothing",
        up_after.as_millis(),
        failover.as_millis()
    );
}
