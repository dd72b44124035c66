//! Commands no admin (or stolen admin key) can crash the cluster with,
//! sent through the real admin API: a deeply nested batch, a header limit
//! hyper would assert on, a duration that overflows an `Instant`, a batch
//! over the message limit; each is refused with its reason and every node
//! keeps serving. And a large honest change, 100 000 backends added by one
//! `ctl apply --config`, goes through as one entry.

use raftlb_config::Command;
use raftlb_tests::admin::Admin;
use raftlb_tests::backends::HttpBackend;
use raftlb_tests::client;
use raftlb_tests::cluster::{Cluster, http_seed};
use raftlb_tests::process::TempDir;
use raftlb_tests::wait;
use std::time::{Duration, Instant};

/// Every node still commits a write and (with `http`) answers through its listener.
async fn every_node_serves(cluster: &Cluster, round: u32, http: bool) {
    let client = client::http1();
    for member in &cluster.members {
        if http {
            let (status, body) = client::get(&client, &format!("http://{}/", member.http)).await;
            assert_eq!(status, 200, "node {} after round {round}: {body}", member.id);
        }
        let mut admin = Admin::new(&member.raft, Duration::from_secs(5));
        let written = admin
            .write(&Command::SetWeight {
                pool: "app".to_string(),
                address: "127.0.0.1:1".parse().expect("address"),
                weight: 1,
            })
            .await;
        // The marker backend is not in the pool: refused by the state, so
        // the write was decoded, committed and applied.
        assert!(
            written.is_ok_and(|w| !w.applied),
            "node {} commits after round {round}",
            member.id
        );
    }
}

fn refused(result: Result<raftlb_tests::admin::Written, tonic::Status>, expected: &str) {
    match result {
        Err(status) => assert!(
            status.message().contains(expected),
            "expected \"{expected}\" in: {}",
            status.message()
        ),
        Ok(written) => panic!("not refused: {written:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_commands_are_refused_and_no_node_stops() {
    let backend = HttpBackend::start("a").await;
    let cluster = Cluster::start(3, &http_seed("round_robin", &[backend.address])).await;
    let mut admin = Admin::new(&cluster.members[1].raft, Duration::from_secs(10));
    let (state, _) = admin.read(false).await.expect("read");
    let web = state.spec().listeners[0].clone();
    let app = state.spec().pools[0].clone();

    // A million nested batches (postcard: variant 11 = Batch, one element).
    let mut nested = [11u8, 1].repeat(1_000_000);
    nested.extend_from_slice(&[6, 1, b'x']); // RemovePool { name: "x" }
    refused(admin.write_bytes(nested).await, "nested more than 2 deep");
    every_node_serves(&cluster, 1, true).await;

    // A head limit below what hyper can buffer.
    let mut tiny = web.clone();
    tiny.name = "tiny".to_string();
    tiny.bind = "127.0.0.1:1".parse().expect("address");
    tiny.http.max_header_bytes = 100;
    refused(
        admin.write(&Command::AddListener(tiny)).await,
        "max_header_bytes 100 is below 8192",
    );
    every_node_serves(&cluster, 2, true).await;

    // A duration no clock can add.
    let mut forever = app.clone();
    forever.response_timeout = Duration::from_secs(u64::MAX);
    refused(
        admin.write(&Command::UpdatePool(forever)).await,
        "response_timeout",
    );
    every_node_serves(&cluster, 3, true).await;

    // A batch longer than any entry may be (14 bytes a command: 14 MB,
    // under gRPC's 16 MiB, so the decoder's bound is what refuses it), and
    // a message over the 16 MiB limit: neither reaches Raft.
    let backends: Vec<Command> = (0..1_000_000u32)
        .map(|n| Command::AddBackend {
            pool: "app".to_string(),
            backend: raftlb_config::BackendSpec::new(raftlb_tests::cluster::marker(n)),
        })
        .collect();
    refused(
        admin.write(&Command::Batch(backends)).await,
        "a batch of 1000000 commands (at most 262144)",
    );
    let huge = Command::PutCertificate {
        name: "huge".to_string(),
        certificate: raftlb_config::Certificate {
            chain_pem: "A".repeat(20 << 20),
            key_pem: String::new(),
        },
    };
    let status = admin.write(&huge).await.expect_err("too large");
    assert!(
        status.message().contains("message length too large"),
        "{}",
        status.message()
    );
    every_node_serves(&cluster, 4, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_apply_adds_a_hundred_thousand_backends() {
    let backend = HttpBackend::start("a").await;
    // A 1–2 MB entry: see `Cluster::start_timed`.
    let cluster = Cluster::start_timed(3, &http_seed("round_robin", &[backend.address]), ("1s", "9s")).await;
    let mut addresses = vec![backend.address];
    addresses.extend((0..100_000u32).map(raftlb_tests::cluster::marker));
    let dir = TempDir::new("big-apply");
    let file = dir.write(
        "big.toml",
        &format!(
            "[node]\nid = 1\n\n{}",
            http_seed("round_robin", &addresses).replace(
                "{HTTP}",
                cluster.members[0].http.rsplit(':').next().expect("port")
            )
        ),
    );
    let started = Instant::now();
    let (status, out, err) = cluster.ctl(
        0,
        &[
            "--timeout",
            "60s",
            "apply",
            "--config",
            file.to_str().expect("utf-8"),
        ],
    );
    assert!(status.success(), "{err}");
    assert!(
        out.contains("applied 100000 changes"),
        "{}",
        out.lines().last().unwrap_or_default()
    );
    eprintln!(
        "ctl apply of 100 000 backend adds: {:?} end to end (debug build)",
        started.elapsed()
    );
    // Node 3 may still be busy with the entry (a debug build decodes and
    // applies 100 000 backends for seconds): ask until it has them.
    wait::value_of(
        "node 3 has all 100 001 backends",
        Duration::from_secs(60),
        || async {
            let mut admin = Admin::new(&cluster.members[2].raft, Duration::from_secs(10));
            let (state, _) = admin.read(false).await.ok()?;
            (state.spec().pools[0].backends.len() == 100_001).then_some(())
        },
    )
    .await;
    // (No HTTP now: the markers are addresses nothing may be sent to.)
    every_node_serves(&cluster, 1, false).await;
}
