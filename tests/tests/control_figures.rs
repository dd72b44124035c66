//! The control plane's figures, measured on a real 3-node cluster on
//! loopback, with mutual TLS (as deployed) and, to compare, in cleartext.
//! Ignored by default (they take minutes and only mean something on a
//! quiet machine); run with
//! `RAFTLB_BIN=target/release/raftlb cargo test --release -p raftlb-tests --test control_figures -- --ignored --nocapture --test-threads 1`
//! (a release client too: the reconnect figure times the client's handshake as well).
//! Each figure still asserts the bound the design promises, so a regression fails.

use raftlb_config::Command;
use raftlb_tests::admin::Admin;
use raftlb_tests::cluster::Cluster;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn seed() -> String {
    "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"0.0.0.0:{HTTP}\"\npool = \"app\"\n\n\
     [[pool]]\nname = \"app\"\nalgorithm = \"weighted_round_robin\"\nbackends = [{ address = \"127.0.0.1:40001\" }]\n"
        .to_string()
}

fn set_weight(n: u32) -> Command {
    Command::SetWeight {
        pool: "app".to_string(),
        address: SocketAddr::from(([127, 0, 0, 1], 40001)),
        weight: 1 + n % 1000,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.50), percentile(&samples, 0.99));
    println!(
        "{name}: n={} p50={p50:?} p99={p99:?} max={:?}",
        samples.len(),
        samples[samples.len() - 1]
    );
    (p50, p99)
}

async fn applied_everywhere(admins: &mut [Admin], index: u64) {
    for admin in admins.iter_mut() {
        loop {
            let (_, applied) = admin.read(true).await.expect("stale read");
            if applied >= index {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run explicitly, in release, on a quiet machine"]
async fn control_plane_figures_mutual_tls() {
    figures(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run explicitly, in release, on a quiet machine"]
async fn control_plane_figures_cleartext() {
    figures(true).await;
}

/// A new connection and one call, as a node makes after a partition heals
/// (a TLS 1.3 handshake with client certificates, or a bare TCP connect).
async fn reconnects(cluster: &Cluster, samples: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        let mut admin = cluster.admin(0, Duration::from_secs(5));
        admin.status().await.expect("status");
        times.push(start.elapsed());
    }
    times
}

async fn figures(cleartext: bool) {
    let mode = if cleartext { "cleartext" } else { "mutual TLS" };
    println!("--- {mode} ---");
    let mut cluster = Cluster::new(3, &seed());
    cluster.cleartext = cleartext;
    for i in 0..3 {
        cluster.spawn(i);
    }
    for i in 0..3 {
        cluster.wait_ready(i).await;
    }
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let mut admins: Vec<Admin> = (0..3).map(|i| cluster.admin(i, Duration::from_secs(5))).collect();
    summary(
        "new connection and one call (reconnect)",
        reconnects(&cluster, 200).await,
    );
    let mut writer = admins[cluster.index_of(leader)].clone();

    // Write latency until applied on all three.
    let mut latencies = Vec::new();
    for n in 0..1000 {
        let start = Instant::now();
        let written = writer.write(&set_weight(n)).await.expect("write");
        applied_everywhere(&mut admins, written.index).await;
        latencies.push(start.elapsed());
    }
    let (_, p99) = summary("write → applied on all 3", latencies);
    assert!(
        p99 <= Duration::from_millis(20),
        "write p99 {p99:?} misses the 20 ms goal"
    );

    // Sequential and concurrent write throughput (acknowledged = committed and applied on the leader).
    let start = Instant::now();
    for n in 0..2000 {
        writer.write(&set_weight(n)).await.expect("write");
    }
    println!(
        "sequential writes: {:.0}/s",
        2000.0 / start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..64u32 {
        let mut client = writer.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..100 {
                client.write(&set_weight(w * 100 + n)).await.expect("write");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    println!(
        "concurrent writes (64 clients): {:.0}/s",
        6400.0 / start.elapsed().as_secs_f64()
    );

    // Restart to caught up: a follower down while 50 000 entries are written.
    let follower = (0..3)
        .find(|i| cluster.members[*i].id != leader)
        .expect("follower");
    cluster.kill(follower);
    let mut tasks = Vec::new();
    for w in 0..64u32 {
        let mut client = writer.clone();
        tasks.push(tokio::spawn(async move {
            for n in (w..50_000).step_by(64) {
                client.write(&set_weight(n)).await.expect("write");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let (_, target) = writer.read(false).await.expect("read");
    let start = Instant::now();
    cluster.spawn(follower);
    cluster.wait_ready(follower).await;
    let mut restarted = cluster.admin(follower, Duration::from_secs(5));
    loop {
        if let Ok((_, applied)) = restarted.read(true).await
            && applied >= target
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never caught up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "restart → caught up with 50 000 entries behind: {:?}",
        start.elapsed()
    );

    // Leader kill -9 → a new leader, over 20 trials.
    let mut elections = Vec::new();
    for _ in 0..20 {
        let leader = cluster.wait_leader(Duration::from_secs(10)).await;
        let index = cluster.index_of(leader);
        let survivor = (index + 1) % 3;
        let killed = Instant::now();
        cluster.kill(index);
        let mut probe = cluster.admin(survivor, Duration::from_millis(500));
        loop {
            if let Ok(status) = probe.status().await
                && status.leader_id != 0
                && status.leader_id != leader
            {
                break;
            }
            assert!(killed.elapsed() < Duration::from_secs(5), "no new leader");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        elections.push(killed.elapsed());
        cluster.spawn(index);
        cluster.wait_ready(index).await;
        // The next trial kills the leader of a healthy cluster: every node
        // caught up. (A node still catching up cannot win an election, and
        // a candidate refused for a short log waits longer to try again.)
        let (_, target) = probe.read(false).await.expect("read");
        let mut restarted = cluster.admin(index, Duration::from_millis(500));
        loop {
            if let Ok((_, applied)) = restarted.read(true).await
                && applied >= target
            {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "restarted node never caught up"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let (_, p99) = summary("leader kill -9 → new leader", elections);
    assert!(p99 < Duration::from_secs(2), "p99 {p99:?}");
}
