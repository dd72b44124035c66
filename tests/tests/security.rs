//! Cluster security: every refusal of a certificate, a role or a sender
//! has its own sentence (and `raftlb ctl` exits 1 with it), bad
//! certificate files stop a node at start naming the file, a cleartext
//! client gets a TLS alert rather than a hang, and a node of another CA
//! cannot join. (Certificates over time: `renewal.rs`.)

use raftlb_node::control::transport::{Dialer, Links};
use raftlb_node::pki::{Expect, Files, Keyring};
use raftlb_proto::raft::RaftRequest;
use raftlb_proto::raft::raft_client::RaftClient;
use raftlb_tests::backends::HttpBackend;
use raftlb_tests::cluster::{CLUSTER_ID, Cluster, http_seed};
use raftlb_tests::pki::{self, Pki, certs, ctl_with, path, tls_section};
use raftlb_tests::process::{TempDir, run_to_end};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn refused(code: Option<i32>, line: &str, expected: &str) {
    assert_eq!(code, Some(1), "{line}");
    assert!(line.contains(expected), "expected \"{expected}\" in: {line}");
    assert_eq!(line.trim().lines().count(), 1, "one line: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refused_caller_is_told_why() {
    let backend = HttpBackend::start("a").await;
    let cluster = Cluster::start(3, &http_seed("round_robin", &[backend.address])).await;
    let node = cluster.members[0].raft.clone();
    let ours = pki::shared(CLUSTER_ID);
    let own = |who: &str| ours.credentials(who);
    let run = |creds: &[String], args: &[&str]| {
        let creds: Vec<&str> = creds.iter().map(String::as_str).collect();
        ctl_with(&node, &creds, args)
    };
    let add = ["backend", "add", "app", "10.9.9.9:80"];

    // The roles: read may read, not write; a node key is no admin key.
    let (code, out) = run(&own("client-reader"), &["pools"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, line) = run(&own("client-reader"), &add);
    refused(
        code,
        &line,
        "client \"reader\" has role read, which may not call Write",
    );
    let (code, line) = run(&own("node-1"), &add);
    refused(
        code,
        &line,
        "node 1's certificate may not call Write: a node certificate is not an admin key",
    );

    // Another CA (made again for this cluster): we do not trust the node's
    // certificate; ctl does not even send one the CA bundle does not sign.
    let stranger = TempDir::new("stranger-ca");
    let out = path(stranger.path()).to_string();
    certs(&[
        "init",
        "--cluster",
        CLUSTER_ID,
        "--out",
        &format!("{out}/pki"),
        "--nodes",
        "3",
    ]);
    let theirs = Pki {
        cluster: CLUSTER_ID.into(),
        dir: stranger.path().join("pki"),
    };
    let (code, line) = run(&theirs.credentials("client-admin"), &["status"]);
    refused(
        code,
        &line,
        "the node's certificate: its signature does not verify against the CA bundle's CA of that name",
    );
    let mut mixed = own("client-admin");
    mixed[3] = theirs.path("client-admin.pem").display().to_string();
    mixed[5] = theirs.path("client-admin.key").display().to_string();
    let (code, line) = run(&mixed, &["status"]);
    refused(
        code,
        &line,
        "client-admin.pem: its signature does not verify against the CA bundle",
    );

    // Expired: refused before it is sent.
    let expired = TempDir::new("expired");
    let ca_dir = ours.dir.display().to_string();
    certs(&[
        "client",
        "--dir",
        &ca_dir,
        "--out",
        path(expired.path()),
        "--name",
        "old",
        "--role",
        "admin",
        "--not-before",
        "2020-01-01",
        "--not-after",
        "2020-01-02",
    ]);
    let mut old = own("client-admin");
    old[3] = expired.path().join("client-old.pem").display().to_string();
    old[5] = expired.path().join("client-old.key").display().to_string();
    let (code, line) = run(&old, &["status"]);
    refused(
        code,
        &line,
        "client-old.pem: it expired on 2020-01-02 00:00:00 UTC",
    );

    // Another cluster's certificate, signed by a CA this cluster trusts:
    // ctl will not talk to a node of another cluster than its own (the
    // node's side of the same rule is `authz`'s unit test).
    let other = TempDir::new("other-cluster");
    let authority = raftlb_node::pki::issue::Authority::load(
        &std::fs::read_to_string(ours.path("ca.pem")).expect("ca.pem"),
        &std::fs::read_to_string(ours.path("ca.key")).expect("ca.key"),
    )
    .expect("the test CA");
    let issued = authority
        .certificate_for(
            &raftlb_node::pki::Identity::client("other-lb", "admin", raftlb_node::pki::Role::Admin),
            raftlb_node::pki::issue::KeyType::EcdsaP256,
            raftlb_node::pki::issue::Validity::days(1),
        )
        .expect("a certificate of another cluster");
    let cert = other.write("other.pem", &issued.cert_pem);
    let key = other.write("other.key", &issued.key_pem);
    let mut foreign = own("client-admin");
    foreign[3] = cert.display().to_string();
    foreign[5] = key.display().to_string();
    let (code, line) = run(&foreign, &["status"]);
    refused(
        code,
        &line,
        "the node's certificate: it is the certificate of node 1 of cluster \"test-lb\", and we belong to cluster \"other-lb\"",
    );

    // No certificate at all.
    let (code, line) = ctl_with(&node, &["--ca", path(&ours.path("ca.pem"))], &["status"]);
    refused(code, &line, "--cert and --key missing");
    let (code, line) = ctl_with(&node, &[], &["status"]);
    refused(
        code,
        &line,
        "the node speaks TLS (its cluster has [cluster.tls]): give --ca, --cert and --key",
    );

    // A cleartext client gets a TLS alert at once, and the node says so.
    let mut raw = tokio::net::TcpStream::connect(&node).await.expect("connect");
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer))
        .await
        .expect("the node closes the connection, no hang")
        .expect("read");
    assert_eq!(answer.first(), Some(&0x15), "a TLS alert record: {answer:?}");
    let log = cluster.members[0].process.as_ref().expect("running").log();
    assert!(log.contains("does not speak TLS (a cleartext client"), "{log}");
}

/// A Raft message over `node`'s certificate files, claiming to be from `from`.
async fn vote_as(pki: &Pki, certificate_of: u64, from: u64, target: &str) -> Result<(), tonic::Status> {
    let keyring = Keyring::load(Files {
        ca: pki.path("ca.pem"),
        cert: pki.path(&format!("node-{certificate_of}.pem")),
        key: pki.path(&format!("node-{certificate_of}.key")),
    })
    .expect("node certificate files");
    let dialer = Dialer::new(Links::Tls(keyring), Duration::from_secs(2));
    let channel = dialer.lazy(target, Expect::AnyNode).expect("a channel");
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(1, from), None);
    let request = RaftRequest {
        from,
        payload: postcard::to_allocvec(&vote).expect("encode"),
        ..RaftRequest::default()
    };
    RaftClient::new(channel).vote(request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_senders_are_their_certificate_and_a_member() {
    let backend = HttpBackend::start("a").await;
    let mut cluster = Cluster::start(3, &http_seed("round_robin", &[backend.address])).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let ours = pki::shared(CLUSTER_ID);
    let target = cluster.members[cluster.index_of(leader)].raft.clone();
    let other = (1..=3).find(|id| *id != leader).expect("a follower");
    let impostor = (1..=3)
        .find(|id| *id != leader && *id != other)
        .expect("a third node");

    let forged = vote_as(&ours, other, impostor, &target)
        .await
        .expect_err("a forged sender");
    assert_eq!(forged.code(), tonic::Code::PermissionDenied);
    assert!(
        forged.message().contains(&format!(
            "the message says it is from node {impostor}, but it came with node {other}'s certificate"
        )),
        "{}",
        forged.message()
    );
    // The same node as itself passes the certificate checks (what Raft
    // then says of an old term does not matter here).
    if let Err(status) = vote_as(&ours, other, other, &target).await {
        assert_ne!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{}",
            status.message()
        );
    }

    // A removed member's certificate stops working, with no CA change.
    let index = cluster.index_of(impostor);
    cluster.kill(index);
    let (status, _, err) = cluster.ctl(
        cluster.index_of(leader),
        &["member", "remove", &impostor.to_string()],
    );
    assert!(status.success(), "{err}");
    let removed = vote_as(&ours, impostor, impostor, &target)
        .await
        .expect_err("a removed member");
    assert!(
        removed
            .message()
            .contains(&format!("node {impostor} is not a member of cluster \"test-lb\"")),
        "{}",
        removed.message()
    );
    let as_removed = ours.credentials(&format!("node-{impostor}"));
    let as_removed: Vec<&str> = as_removed.iter().map(String::as_str).collect();
    let (code, line) = ctl_with(&target, &as_removed, &["status"]);
    refused(code, &line, &format!("node {impostor} is not a member"));
}

#[test]
fn bad_certificate_files_stop_the_node_naming_the_file() {
    let ours = pki::shared(CLUSTER_ID);
    let dir = TempDir::new("bad-tls");
    let ca = ours.path("ca.pem");
    let node_cert = ours.path("node-1.pem");
    let node_key = ours.path("node-1.key");
    let garbage = dir.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    );
    let empty = dir.write("empty.pem", "");
    let encrypted = dir.write(
        "encrypted.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let expired_dir = dir.path().join("expired");
    certs(&[
        "node",
        "--dir",
        path(&ours.dir),
        "--out",
        path(&expired_dir),
        "--id",
        "1",
        "--not-before",
        "2020-01-01",
        "--not-after",
        "2020-01-02",
    ]);
    let missing = dir.path().join("missing.pem");
    let authority = raftlb_node::pki::issue::Authority::load(
        &std::fs::read_to_string(&ca).expect("ca.pem"),
        &std::fs::read_to_string(ours.path("ca.key")).expect("ca.key"),
    )
    .expect("the test CA");
    let other = authority
        .certificate_for(
            &raftlb_node::pki::Identity::node("other-lb", 1),
            raftlb_node::pki::issue::KeyType::EcdsaP256,
            raftlb_node::pki::issue::Validity::days(1),
        )
        .expect("a node certificate of another cluster");
    let other_cert = dir.write("other.pem", &other.cert_pem);
    let other_key = dir.write("other.key", &other.key_pem);
    let cases: Vec<(PathBuf, PathBuf, PathBuf, String)> = vec![
        (ca.clone(), missing.clone(), node_key.clone(), format!("{}: cannot read it", missing.display())),
        (ca.clone(), garbage.clone(), node_key.clone(), format!("{}: the certificate cannot be parsed as X.509", garbage.display())),
        (ca.clone(), empty.clone(), node_key.clone(), format!("{}: it holds no PEM certificate", empty.display())),
        (ca.clone(), node_cert.clone(), ours.path("node-2.key"), format!("{}: this key does not belong to the certificate", ours.path("node-2.key").display())),
        (ca.clone(), node_cert.clone(), node_cert.clone(), "it holds no PEM private key".to_string()),
        (ca.clone(), node_cert.clone(), encrypted.clone(), format!("{}: it holds no PEM private key (PKCS#8, PKCS#1 or SEC1; unencrypted)", encrypted.display())),
        (node_cert.clone(), node_cert.clone(), node_key.clone(), "is the certificate of node 1 of cluster \"test-lb\", not a CA".to_string()),
        (ca.clone(), ours.path("node-2.pem"), ours.path("node-2.key"), "it is the certificate of node 2 of cluster \"test-lb\", but this node is node 1".to_string()),
        (ca.clone(), ours.path("client-admin.pem"), ours.path("client-admin.key"), "it is the certificate of client \"admin\" (admin) of cluster \"test-lb\", but this node is node 1".to_string()),
        (ca.clone(), other_cert, other_key, "it is the certificate of node 1 of cluster \"other-lb\", but this node is node 1 of cluster \"test-lb\"".to_string()),
        (ca.clone(), expired_dir.join("node-1.pem"), expired_dir.join("node-1.key"), "it expired on 2020-01-02 00:00:00 UTC".to_string()),
    ];
    for (ca, cert, key, expected) in cases {
        let config = format!(
            "[node]\nid = 1\ndata_dir = \"{}\"\n[cluster]\nid = \"{CLUSTER_ID}\"\nraft = \"127.0.0.1:1\"\n{}",
            dir.path().join("data").display(),
            tls_section(&ca, &cert, &key)
        );
        let file = dir.write("node.toml", &config);
        let (status, _, stderr) = run_to_end(&["check", "--config", path(&file)]);
        assert_eq!(status.code(), Some(1), "{expected}: {stderr}");
        assert!(stderr.contains("[cluster.tls] "), "{stderr}");
        assert!(stderr.contains(&expected), "expected \"{expected}\" in: {stderr}");
    }
    // `run` stops the same way, before it touches its data dir.
    let config = format!(
        "[node]\nid = 1\ndata_dir = \"{}\"\n[cluster]\nid = \"{CLUSTER_ID}\"\nraft = \"127.0.0.1:1\"\n{}",
        dir.path().join("data").display(),
        tls_section(
            &ca,
            &expired_dir.join("node-1.pem"),
            &expired_dir.join("node-1.key")
        )
    );
    let file = dir.write("node.toml", &config);
    let (status, _, stderr) = run_to_end(&["run", "--config", path(&file)]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("it expired on 2020-01-02"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "the data dir was touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_cas_certificate_cannot_join_and_both_sides_say_why() {
    let stranger = TempDir::new("stranger-node");
    let out = stranger.path().join("pki");
    certs(&[
        "init",
        "--cluster",
        CLUSTER_ID,
        "--out",
        path(&out),
        "--nodes",
        "3",
    ]);
    let backend = HttpBackend::start("a").await;
    let mut cluster = Cluster::new(3, &http_seed("round_robin", &[backend.address]));
    cluster.members[2].tls = Some(tls_section(
        &out.join("ca.pem"),
        &out.join("node-3.pem"),
        &out.join("node-3.key"),
    ));
    for i in 0..3 {
        cluster.spawn(i);
    }
    for i in 0..2 {
        cluster.wait_ready(i).await;
    }
    let log = |i: usize| cluster.members[i].process.as_ref().expect("running").log();
    raftlb_tests::wait::until("both sides to log the refusal", Duration::from_secs(10), || {
        log(0).contains("TLS handshake from 127.0.0.1 failed: it refused this node's certificate: its signature does not verify")
            && log(2).contains("the node's certificate: its signature does not verify")
    })
    .await;
    assert!(!log(2).contains("raftlb node ready"), "{}", log(2));
}
