//! Faults below the protocol: a node whose disk fills stops (exit 1, a
//! sentence naming the data dir) instead of acknowledging what it cannot
//! persist, the rest of the cluster keeps every acknowledged write, and the
//! node catches up once space is freed; a node whose peers are all down
//! starts anyway, says it is retrying, and forms the cluster when they come.

use raftlb_config::{BackendSpec, Command};
use raftlb_tests::admin::Admin;
use raftlb_tests::backends::HttpBackend;
use raftlb_tests::cluster::{Cluster, http_seed, marker};
use raftlb_tests::{root_or_skip, wait};
use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::{Duration, Instant};

/// A small tmpfs mounted over a data dir, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).expect("create the data dir");
        let status = Process::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs on {}", dir.display());
        SmallDisk(dir.to_path_buf())
    }

    /// Writes a filler file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).expect("create the filler");
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        // The last partial chunk may have found a few free bytes.
        while file.write_all(&[0u8; 512]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn add_marker(n: u32) -> Command {
    Command::AddBackend {
        pool: "app".to_string(),
        backend: BackendSpec::new(marker(n)),
    }
}

fn markers_in(state: &raftlb_config::ClusterState) -> BTreeSet<SocketAddr> {
    state.spec().pools[0].backends.iter().map(|b| b.address).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_that_node_and_loses_no_acknowledged_write() {
    if !root_or_skip("disk full", "mount a small tmpfs as a node's data dir") {
        return;
    }
    let backend = HttpBackend::start("a").await;
    let mut cluster = Cluster::new(3, &http_seed("round_robin", &[backend.address]));
    let disk = SmallDisk::mount(&cluster.members[2].data_dir, "8m");
    for i in 0..3 {
        cluster.spawn(i);
    }
    for i in 0..3 {
        cluster.wait_ready(i).await;
    }
    let filler = disk.fill();

    // Write through node 1 until node 3 can no longer persist and stops.
    let mut admin = Admin::new(&cluster.members[0].raft, Duration::from_secs(5));
    let mut requested = BTreeSet::new();
    let mut acknowledged = BTreeSet::new();
    let start = Instant::now();
    let mut n = 0;
    let status = loop {
        requested.insert(marker(n));
        if admin.write(&add_marker(n)).await.is_ok() {
            acknowledged.insert(marker(n));
        }
        n += 1;
        let full = cluster.members[2].process.as_mut().expect("node 3");
        if let Some(status) = full.try_exit() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "node 3 kept running on a full disk after {n} writes:\n{}",
            full.log()
        );
    };
    let log = cluster.members[2].process.as_ref().expect("node 3").log();
    assert_eq!(status.code(), Some(1), "exit status on a full disk:\n{log}");
    assert!(
        log.contains("is full") && log.contains(&cluster.members[2].data_dir.display().to_string()),
        "the last words name the full data dir:\n{log}"
    );
    println!(
        "node 3 stopped on a full disk after {n} writes: {}",
        log.lines().last().unwrap_or("")
    );

    // The other two still hold a quorum and acknowledge writes (after an
    // election, if node 3 was the leader). A retried write may find its
    // first attempt applied; either reply means it is in the log.
    let start = Instant::now();
    for _ in 0..20 {
        requested.insert(marker(n));
        while admin.write(&add_marker(n)).await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "writes stalled with 2 of 3 up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        acknowledged.insert(marker(n));
        n += 1;
    }

    // Space freed, node 3 comes back and has every acknowledged write.
    std::fs::remove_file(filler).expect("remove the filler");
    cluster.kill(2);
    cluster.spawn(2);
    cluster.wait_ready(2).await;
    let mut restarted = Admin::new(&cluster.members[2].raft, Duration::from_secs(5));
    let (_, target) = admin.read(false).await.expect("read the leader's state");
    let start = Instant::now();
    let state = loop {
        if let Ok((state, applied)) = restarted.read(true).await
            && applied >= target
        {
            break state;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "node 3 never caught up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let present = markers_in(&state);
    let lost: Vec<_> = acknowledged.difference(&present).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let invented: Vec<_> = present
        .iter()
        .filter(|a| **a != backend.address && !requested.contains(a))
        .collect();
    assert!(invented.is_empty(), "writes nobody asked for: {invented:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_with_every_peer_down_and_joins_when_they_come() {
    let backend = HttpBackend::start("a").await;
    let mut cluster = Cluster::new(3, &http_seed("round_robin", &[backend.address]));
    cluster.spawn(0);
    let peer = cluster.members[1].raft.clone();
    let alone = cluster.members[0].process.as_mut().expect("node 1");
    wait::until("a retry warning naming a peer", Duration::from_secs(10), || {
        let log = alone.log();
        log.contains("retrying with backoff") && log.contains(&peer)
    })
    .await;
    assert!(alone.try_exit().is_none(), "node 1 gave up:\n{}", alone.log());

    cluster.spawn(1);
    cluster.spawn(2);
    for i in 0..3 {
        cluster.wait_ready(i).await;
    }
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    assert!((1..=3).contains(&leader));
}
