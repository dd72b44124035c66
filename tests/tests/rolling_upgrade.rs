//! `deploy/rolling-upgrade.sh` on a site of three nodes in network
//! namespaces ([`Site`]): every node replaced in place (SIGUSR2: its
//! sockets pass to a new process, only its Raft restarts), followers
//! first, the leader last after handing leadership over, while a patient
//! client requests the VIP; not one request may fail. Needs root;
//! otherwise skips, saying so.

use raftlb_tests::process::binary;
use raftlb_tests::site::{BALANCERS, CLUSTER, Load, Site};
use raftlb_tests::vip_load::failures;
use raftlb_tests::{root_or_skip, wait};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The pids the data dirs' locks name (the processes that hold them).
fn holders(locks: &[PathBuf]) -> Vec<u32> {
    locks
        .iter()
        .filter_map(|lock| std::fs::read_to_string(lock).ok())
        .filter_map(|text| text.trim().strip_prefix("pid=").and_then(|p| p.parse().ok()))
        .collect()
}

/// The processes that took over (children of the ones the site started),
/// killed when the test ends, passed or not.
struct Successors(Vec<PathBuf>);

impl Drop for Successors {
    fn drop(&mut self) {
        for pid in holders(&self.0) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rolling_upgrade_script_fails_no_request() {
    if !root_or_skip("deploy/rolling-upgrade.sh", "build network namespaces") {
        return;
    }
    let mut site = Site::start().await;
    let locks: Vec<PathBuf> = (0..BALANCERS.len())
        .map(|i| site.data_dir(i).join("raftlb.lock"))
        .collect();
    let started = holders(&locks);
    let successors = Successors(locks.clone());
    let patient = Load::start(&site.lab.ns("client"), site.vip, Duration::from_secs(3));
    let began = Instant::now();
    wait::value("the patient client is answered", Duration::from_secs(5), || {
        patient.answered_since(began)
    })
    .await;

    let root = site
        .data_dir(0)
        .parent()
        .expect("the site's root")
        .display()
        .to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/rolling-upgrade.sh");
    let upgrading = Instant::now();
    let output = Command::new("ip")
        .args(["netns", "exec", &site.lab.ns("client"), "bash", script])
        .args([
            "--node",
            &format!("{}:7000", site.lab.address(BALANCERS[0])),
            "--",
        ])
        .args(raftlb_tests::pki::shared(CLUSTER).ctl_args("admin"))
        .env("RAFTLB", binary())
        .env(
            "UPGRADE_CMD",
            format!("kill -USR2 $(sed -n 's/^pid=//p' {root}/node{{id}}/raftlb.lock)"),
        )
        .env("NODE_TIMEOUT", "30")
        .output()
        .expect("run the script");
    let took = upgrading.elapsed();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    println!("{stdout}{stderr}");
    assert!(output.status.success(), "the script failed: {stderr}");
    assert_eq!(stdout.matches(" upgraded in ").count(), 3, "{stdout}");
    let done = format!("done; cluster version {}", raftlb_config::format::CURRENT);
    assert!(stdout.contains(&done), "{stdout}");

    // Every node runs in a new process, and the old ones are gone.
    let now = holders(&successors.0);
    assert_eq!(now.len(), 3);
    for (before, after) in started.iter().zip(&now) {
        assert_ne!(before, after, "a node was not replaced");
    }
    for node in &mut site.nodes {
        assert!(node.wait_exit(Duration::from_secs(10)).await.success());
    }
    let owner = site.owner().await;
    let attempts = patient.finish();
    let failed = attempts.iter().filter(|a| !a.ok).count();
    println!(
        "rolling in-place upgrade of 3 nodes in {took:?}: {} requests, {failed} failed; VIP on node {}",
        attempts.len(),
        owner + 1
    );
    assert!(attempts.len() > 100, "only {} requests", attempts.len());
    assert_eq!(
        failed,
        0,
        "requests failed during the rolling upgrade: {:#?}",
        failures(&attempts)
    );
}
