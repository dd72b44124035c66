//! Three (or four) real `raftlb` processes on 127.0.0.1-4 forming one Raft
//! cluster: replication through any node, leader loss, restart and catch-up,
//! a learner joining, linearizable reads, and the data plane following the
//! replicated state.

use raftlb_tests::admin::Admin;
use raftlb_tests::backends::HttpBackend;
use raftlb_tests::client;
use raftlb_tests::cluster::{Cluster, add_marker, http_seed, marker};
use raftlb_tests::wait;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

async fn pool_addresses(admin: &mut Admin, stale: bool) -> Vec<SocketAddr> {
    let (state, _) = admin.read(stale).await.expect("read");
    let pool = state.spec().pool("app").expect("pool app");
    pool.backends.iter().map(|b| b.address).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_a_follower_is_visible_on_every_node() {
    let backend = HttpBackend::start("a").await;
    let cluster = Cluster::start(3, &http_seed("round_robin", &[backend.address])).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let follower = cluster
        .members
        .iter()
        .position(|m| m.id != leader)
        .expect("follower");

    let (status, out, err) = cluster.ctl(
        follower,
        &["backend", "add", "app", "10.0.0.1:80", "--weight", "2"],
    );
    assert!(status.success(), "ctl failed: {err}");
    assert!(out.contains("applied at log index"), "{out}");

    for (i, member) in cluster.members.iter().enumerate() {
        // Linearizable read through each node, then a stale read once it has applied.
        let mut admin = Admin::new(&member.raft, Duration::from_secs(5));
        assert!(
            pool_addresses(&mut admin, false)
                .await
                .contains(&"10.0.0.1:80".parse().expect("addr"))
        );
        let start = Instant::now();
        while !pool_addresses(&mut admin, true)
            .await
            .contains(&"10.0.0.1:80".parse().expect("addr"))
        {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "node {i} never applied the write"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (status, out, _) = cluster.ctl(i, &["pools", "--stale"]);
        assert!(status.success());
        assert!(out.contains("10.0.0.1:80"), "node {i}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_elects_a_new_leader_quickly_and_the_node_catches_up() {
    let backend = HttpBackend::start("a").await;
    let mut cluster = Cluster::start(3, &http_seed("round_robin", &[backend.address])).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let leader_index = cluster.index_of(leader);

    let killed_at = Instant::now();
    cluster.kill(leader_index);
    let survivor = (leader_index + 1) % 3;
    let new_leader = loop {
        if let Some(id) = cluster.leader_seen_by(survivor).await
            && id != leader
        {
            break id;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(2),
            "no new leader within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("new leader {new_leader} after {:?}", killed_at.elapsed());

    // Writes continue through either survivor while the old leader is down.
    let mut admin = Admin::new(&cluster.members[survivor].raft, Duration::from_secs(5));
    for n in 0..20 {
        assert!(admin.write(&add_marker(n)).await.expect("write").applied);
    }
    // Traffic keeps flowing through the survivors' listeners.
    let http = client::http1();
    let (status, body) = client::get(&http, &format!("http://{}/", cluster.members[survivor].http)).await;
    assert_eq!((status, body.as_str()), (200, "a"));

    cluster.spawn(leader_index);
    cluster.wait_ready(leader_index).await;
    let mut restarted = Admin::new(&cluster.members[leader_index].raft, Duration::from_secs(5));
    let start = Instant::now();
    loop {
        let seen = pool_addresses(&mut restarted, true).await;
        if (0..20).all(|n| seen.contains(&marker(n))) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "restarted node did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joins_is_promoted_and_the_cluster_serves_throughout() {
    let backend = HttpBackend::start("a").await;
    let mut cluster = Cluster::start(3, &http_seed("round_robin", &[backend.address])).await;
    let mut admin = Admin::new(&cluster.members[0].raft, Duration::from_secs(5));
    for n in 0..50 {
        admin.write(&add_marker(n)).await.expect("write");
    }
    // Traffic through node 1 for the whole join.
    let url = format!("http://{}/", cluster.members[0].http);
    let traffic = tokio::spawn(async move {
        let http = client::http1();
        let mut failures = 0;
        let mut served = 0;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(4) {
            match client::get(&http, &url).await {
                (200, _) => served += 1,
                _ => failures += 1,
            }
        }
        (served, failures)
    });

    let joiner = cluster.start_joiner(4).await;
    let address = cluster.members[joiner].raft.clone();
    let (status, out, err) = cluster.ctl(1, &["member", "add", "4", &address]);
    assert!(status.success(), "member add failed: {err}");
    assert!(out.contains("log index"), "{out}");
    cluster.wait_ready(joiner).await;

    let (status, out, _) = cluster.ctl(0, &["--json", "status"]);
    assert!(status.success());
    assert!(out.contains(&address), "{out}");
    let mut joined = Admin::new(&address, Duration::from_secs(5));
    let status = joined.status().await.expect("status");
    let me = status
        .members
        .iter()
        .find(|m| m.id == 4)
        .expect("node 4 is a member");
    assert_eq!(me.role, "voter");
    assert!(pool_addresses(&mut joined, true).await.contains(&marker(49)));
    let (status, body) = client::get(
        &client::http1(),
        &format!("http://{}/", cluster.members[joiner].http),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "a"));

    let (served, failures) = traffic.await.expect("traffic");
    assert_eq!(failures, 0, "requests failed during the join ({served} served)");
    assert!(served > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_writes_are_linearizable_across_nodes() {
    let backend = HttpBackend::start("a").await;
    let cluster = Cluster::start(3, &http_seed("round_robin", &[backend.address])).await;
    let mut admins: Vec<Admin> = cluster
        .members
        .iter()
        .map(|m| Admin::new(&m.raft, Duration::from_secs(5)))
        .collect();
    for n in 0..30u32 {
        let writer = n as usize % 3;
        let reader = (writer + 1 + n as usize % 2) % 3;
        let written = admins[writer].write(&add_marker(n)).await.expect("write");
        assert!(written.applied);
        let (state, applied) = admins[reader].read(false).await.expect("read");
        assert!(
            applied >= written.index,
            "read at {applied} misses write at {}",
            written.index
        );
        let pool = state.spec().pool("app").expect("pool");
        assert!(
            pool.backends.iter().any(|b| b.address == marker(n)),
            "write {n} through node {writer} not seen by a linearizable read on node {reader}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_plane_follows_backends_added_and_drained_on_another_node() {
    let a = HttpBackend::start_slow("a").await;
    let b = HttpBackend::start("b").await;
    let cluster = Cluster::start(3, &http_seed("round_robin", &[a.address])).await;
    let http = client::http1();
    let node1 = format!("http://{}/", cluster.members[0].http);

    // Added through node 3, serving on node 1 within a second.
    let added = Instant::now();
    let (status, _, err) = cluster.ctl(2, &["backend", "add", "app", &b.address.to_string()]);
    assert!(status.success(), "{err}");
    loop {
        let (_, body) = client::get(&http, &node1).await;
        if body == "b" {
            break;
        }
        assert!(
            added.elapsed() < Duration::from_secs(1),
            "new backend took no traffic within 1 s"
        );
    }

    // A slow request in flight on `a` finishes although `a` is drained meanwhile.
    let slow_url = format!("http://{}/slow?ms=1500", cluster.members[0].http);
    let slow = tokio::spawn(async move { client::get(&client::http1(), &slow_url).await });
    wait::until("slow request in flight", Duration::from_secs(5), || {
        a.in_flight() == 1
    })
    .await;
    let (status, out, err) = cluster.ctl(1, &["backend", "drain", "app", &a.address.to_string()]);
    assert!(status.success(), "{err}");
    assert!(out.contains("applied"), "{out}");
    let start = Instant::now();
    // Every node stops sending new requests to `a` within a second.
    for member in &cluster.members {
        let url = format!("http://{}/", member.http);
        loop {
            let (_, body) = client::get(&http, &url).await;
            let (_, again) = client::get(&http, &url).await;
            if body == "b" && again == "b" {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "drain not followed within 1 s"
            );
        }
    }
    let (status, body) = slow.await.expect("slow request");
    assert_eq!(
        (status, body.as_str()),
        (200, "a"),
        "the in-flight request was cut"
    );
    // Once every node has followed (the write returns when the node that
    // took it has applied it; the others apply within a heartbeat), `a`
    // gets nothing new from any node.
    let served_before = a.served();
    for member in &cluster.members {
        let url = format!("http://{}/", member.http);
        for _ in 0..10 {
            client::get(&http, &url).await;
        }
    }
    assert_eq!(a.served(), served_before, "a drained backend got new requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_errors_are_one_line_and_never_hang() {
    let backend = HttpBackend::start("a").await;
    let mut cluster = Cluster::start(3, &http_seed("round_robin", &[backend.address])).await;

    // Without a certificate, against a TLS cluster: one line saying what to give.
    let (status, _, err) =
        raftlb_tests::process::run_to_end(&["ctl", "--node", &cluster.members[0].raft, "status"]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("--ca, --cert and --key"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // No quorum: two of three down, a write says so within the timeout.
    cluster.kill(1);
    cluster.kill(2);
    let start = Instant::now();
    let (status, _, err) = cluster.ctl(0, &["--timeout", "8s", "backend", "add", "app", "10.9.9.9:80"]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("quorum") || err.contains("leader"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(9),
        "took {:?}",
        start.elapsed()
    );

    let dead = cluster.members[1].raft.clone();
    let (status, _, err) = raftlb_tests::cluster::ctl(&dead, &["status"]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("cannot reach"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_diff_and_apply_reconcile_the_cluster_with_a_file_and_restarts_warn_of_drift() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let mut cluster = Cluster::start(3, &http_seed("round_robin", &[a.address])).await;
    let original = cluster.config(0);

    // The operator's edited file: `b` added with weight 3.
    let dir = raftlb_tests::process::TempDir::new("apply");
    let edited = original.replace(
        &format!("{{ address = \"{}\" }}", a.address),
        &format!(
            "{{ address = \"{}\" }}, {{ address = \"{}\", weight = 3 }}",
            a.address, b.address
        ),
    );
    assert_ne!(edited, original);
    let file = dir.write("edited.toml", &edited);
    let file = file.to_str().expect("utf8");

    let (status, out, err) = cluster.ctl(1, &["diff", "--config", file]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains(&format!("+ add backend {} (weight 3) to pool app", b.address)),
        "{out}"
    );
    let (status, out, err) = cluster.ctl(2, &["apply", "--config", file]);
    assert!(status.success(), "{err}");
    assert!(out.contains("applied 1 change at log index"), "{out}");
    let (status, out, _) = cluster.ctl(0, &["diff", "--config", file]);
    assert!(status.success());
    assert!(out.contains("no difference"), "{out}");
    let (status, out, _) = cluster.ctl(0, &["apply", "--config", file]);
    assert!(status.success());
    assert!(out.contains("nothing to apply"), "{out}");

    // Node 1 restarts with its old file: it serves the cluster state and says so.
    cluster.kill(0);
    cluster.spawn(0);
    cluster.wait_ready(0).await;
    let http = client::http1();
    let url = format!("http://{}/", cluster.members[0].http);
    // Once caught up (it replays its own log first), it serves `b` too.
    let start = Instant::now();
    while client::get(&http, &url).await.1 != "b" {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "node 1 keeps serving its old file"
        );
    }
    let process = cluster.members[0].process.as_ref().expect("running");
    wait::until("the drift warning", Duration::from_secs(5), || {
        process.log().contains("differs from the cluster state")
    })
    .await;
    assert!(process.log().contains("raftlb ctl --node"), "{}", process.log());
}
