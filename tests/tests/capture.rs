//! What an eavesdropper on the balancers' network sees: every frame on the
//! bridge of a three-node site, captured from before the first node starts
//! through 100 admin writes, `ctl cert add`, the leader's kill and a
//! snapshot installed on a follower, holds no PEM header, no private key
//! (the added certificate's, a node's or the admin client's) and not the
//! sticky-cookie secret. The client's own HTTP through the VIP, which is
//! cleartext by design, is found: the capture does see what passes.
//! Needs root (namespaces, a packet socket); skipped with a message
//! otherwise.

use raftlb_config::Command;
use raftlb_tests::admin::Admin;
use raftlb_tests::netns;
use raftlb_tests::pki;
use raftlb_tests::process::{TempDir, binary};
use raftlb_tests::site::{BALANCERS, CLUSTER, Options, Site};
use raftlb_tests::{root_or_skip, wait};
use std::net::SocketAddr;
use std::process::Command as Process;
use std::time::Duration;

/// `raftlb ctl ARGS` from the client host against node `i`: ctl's traffic
/// crosses the bridge. Its stdout, or a panic with its stderr.
fn ctl_from_client(site: &Site, i: usize, args: &[&str]) -> String {
    let node = format!("{}:7000", site.lab.address(BALANCERS[i]));
    let output = Process::new("ip")
        .args(["netns", "exec", &site.lab.ns("client")])
        .arg(binary())
        .args(["ctl", "--node", &node])
        .args(pki::shared(CLUSTER).ctl_args("admin"))
        .args(args)
        .output()
        .expect("run raftlb ctl");
    assert!(
        output.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `count` weight changes through node `i`, sent from the client host.
fn admin_writes(site: &Site, i: usize, count: u32) {
    let node = format!("{}:7000", site.lab.address(BALANCERS[i]));
    let backend: SocketAddr = format!("{}:80", site.lab.address("backend"))
        .parse()
        .expect("address");
    netns::on_host(&site.lab.ns("client"), move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let mut admin = Admin::with_credentials(&node, Duration::from_secs(5), CLUSTER);
            for n in 0..count {
                let command = Command::SetWeight {
                    pool: "app".to_string(),
                    address: backend,
                    weight: 1 + n % 9,
                };
                let written = admin.write(&command).await.expect("an admin write");
                assert!(written.applied, "write {n}");
            }
        });
    });
}

/// The body of a PEM file (base64, no header), its first line.
fn pem_line(path: &std::path::Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).expect("a PEM file");
    text.lines()
        .find(|l| !l.starts_with("-----"))
        .expect("a PEM body")
        .as_bytes()
        .to_vec()
}

/// The leader's index, as the first node that knows one says.
async fn leader(site: &Site) -> usize {
    wait::value("a leader", Duration::from_secs(15), || {
        (0..BALANCERS.len()).find_map(|i| site.leader_seen_by(i))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_crosses_the_wire_in_the_clear() {
    if !root_or_skip(
        "nothing_secret_crosses_the_wire_in_the_clear",
        "build network namespaces and capture on their bridge",
    ) {
        return;
    }
    let mut site = Site::build(Options {
        capture: true,
        ..Options::default()
    })
    .await;

    admin_writes(&site, 0, 50);
    admin_writes(&site, 1, 50);

    let site_dir = TempDir::new("capture-site");
    let key = rcgen::KeyPair::generate().expect("key");
    let certificate = rcgen::CertificateParams::new(vec!["site.example".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let cert_file = site_dir.write("site.pem", &certificate.pem());
    let key_file = site_dir.write("site.key", &key.serialize_pem());
    ctl_from_client(
        &site,
        1,
        &[
            "cert",
            "add",
            "site",
            "--cert-file",
            cert_file.to_str().expect("utf-8"),
            "--key-file",
            key_file.to_str().expect("utf-8"),
        ],
    );

    // The leader dies; the others elect; it comes back.
    let dead = leader(&site).await;
    site.nodes[dead].kill();
    let survivor = (dead + 1) % BALANCERS.len();
    wait::until("a new leader", Duration::from_secs(15), || {
        site.leader_seen_by(survivor).is_some_and(|l| l != dead)
    })
    .await;
    site.nodes[dead] = site.spawn(dead);
    site.nodes[dead].ready(&[]).await;

    // A follower that misses a purged log gets the snapshot over the wire.
    let leading = leader(&site).await;
    let follower = (leading + 1) % BALANCERS.len();
    assert!(!site.data_dir(follower).join("snapshot.bin").exists());
    site.nodes[follower].kill();
    admin_writes(&site, leading, 20);
    ctl_from_client(&site, leading, &["snapshot"]);
    site.nodes[follower] = site.spawn(follower);
    site.nodes[follower].ready(&[]).await;
    wait::until(
        "the follower installed the leader's snapshot",
        Duration::from_secs(20),
        || site.data_dir(follower).join("snapshot.bin").exists(),
    )
    .await;
    admin_writes(&site, follower, 5);

    let frames = site.capture.take().expect("capturing").finish();
    let state =
        raftlb_node::control::state_machine::snapshot_state(&site.data_dir(leading)).expect("a snapshot");
    let secret = state.sticky_secret().expect("the sticky-cookie secret").0;
    let ours = pki::shared(CLUSTER);
    let key_der = key.serialize_der();
    let site_key_line = pem_line(&key_file);
    let node_key_line = pem_line(&ours.path("node-1.key"));
    let client_key_line = pem_line(&ours.path("client-admin.key"));
    eprintln!(
        "captured {} frames, {} bytes ({} over the cap); {} of TCP port 7000",
        frames.frames.len(),
        frames.bytes,
        frames.dropped,
        frames.tcp_port(7000)
    );
    assert_eq!(frames.dropped, 0, "the capture kept every frame");
    assert!(
        frames.tcp_port(7000) > 1000,
        "the Raft and admin traffic was captured"
    );
    assert!(
        frames.holding(b"X-Request-Id") > 0,
        "the client's cleartext HTTP is seen"
    );
    for (what, needle) in [
        ("a PEM header", &b"-----BEGIN"[..]),
        ("PRIVATE KEY", b"PRIVATE KEY"),
        ("the added certificate's key (PEM)", &site_key_line),
        ("the added certificate's key (DER)", &key_der),
        ("node 1's key", &node_key_line),
        ("the admin client's key", &client_key_line),
        ("the sticky-cookie secret", &secret),
    ] {
        assert_eq!(frames.holding(needle), 0, "{what} crossed the wire in the clear");
    }
}
