//! Secrets stay secret: admin replies carry no private key and no
//! sticky-cookie secret, and a removed certificate's key leaves every
//! node's data dir with the next snapshot (the log that held it is
//! purged), found by searching the files' bytes.

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::cluster::{Cluster, http_seed};
use raftlb_tests::process::TempDir;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A self-signed certificate for `site.example` and its key, as files; the
/// key's PEM body and DER, to search for.
struct Site {
    _dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
    key_body: String,
    key_der: Vec<u8>,
}

fn site() -> Site {
    let dir = TempDir::new("site-cert");
    let key = rcgen::KeyPair::generate().expect("key");
    let certificate = rcgen::CertificateParams::new(vec!["site.example".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    Site {
        cert: dir.write("site.pem", &certificate.pem()),
        key: dir.write("site.key", &key.serialize_pem()),
        key_body: key
            .serialize_pem()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect(),
        key_der: key.serialize_der(),
        _dir: dir,
    }
}

/// Every file under `dir` holding `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)) {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_replies_carry_no_secret() {
    let backend = HttpBackend::start("a").await;
    let cluster = Cluster::start(3, &http_seed("round_robin", &[backend.address])).await;
    let site = TempDir::new("site-cert");
    let key = rcgen::KeyPair::generate().expect("key");
    let site_cert = rcgen::CertificateParams::new(vec!["site.example".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let cert_file = site.write("site.pem", &site_cert.pem());
    let key_file = site.write("site.key", &key.serialize_pem());
    let (status, _, err) = cluster.ctl(
        0,
        &[
            "cert",
            "add",
            "site",
            "--cert-file",
            path(&cert_file),
            "--key-file",
            path(&key_file),
        ],
    );
    assert!(status.success(), "{err}");
    let key_body: String = key
        .serialize_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();

    for args in [
        &["--json", "cert", "list"][..],
        &["--json", "pools"],
        &["--json", "listeners"],
    ] {
        let (status, out, err) = cluster.ctl(1, args);
        assert!(status.success(), "{err}");
        assert!(
            !out.contains("PRIVATE KEY") && !out.contains(&key_body[..40]),
            "{args:?}: {out}"
        );
    }
    let (_, list, _) = cluster.ctl(1, &["cert", "list"]);
    assert!(
        list.contains("site.example") && list.contains("SHA-256"),
        "{list}"
    );

    let mut admin = raftlb_tests::admin::Admin::new(&cluster.members[2].raft, Duration::from_secs(5));
    let (state, _) = admin.read(false).await.expect("read");
    let served = &state.certificates()["site"];
    assert!(served.key_pem.is_empty(), "a read carries no private key");
    assert!(!served.chain_pem.is_empty(), "the chain is public");
    assert!(state.sticky_secret().is_none(), "a read carries no sticky secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_certificates_key_leaves_the_data_dir_with_the_next_snapshot() {
    let backend = HttpBackend::start("a").await;
    let cluster = Cluster::start(3, &http_seed("round_robin", &[backend.address])).await;
    let site = site();
    let (status, _, err) = cluster.ctl(
        0,
        &[
            "cert",
            "add",
            "site",
            "--cert-file",
            path(&site.cert),
            "--key-file",
            path(&site.key),
        ],
    );
    assert!(status.success(), "{err}");
    let needle = &site.key_body.as_bytes()[..40];
    // The log holds it sealed; a snapshot holds it plain, and the search
    // finds it there: it works.
    for (i, member) in cluster.members.iter().enumerate() {
        raftlb_tests::wait::until("the certificate applied", Duration::from_secs(10), || {
            cluster
                .ctl(i, &["cert", "list", "--stale"])
                .1
                .contains("site.example")
        })
        .await;
        assert_eq!(
            files_holding(&member.data_dir, needle),
            Vec::<PathBuf>::new(),
            "the log is sealed"
        );
        let (status, _, err) = cluster.ctl(i, &["snapshot"]);
        assert!(status.success(), "{err}");
        assert_eq!(
            files_holding(&member.data_dir, needle),
            vec![member.data_dir.join("snapshot.bin")],
            "node {}",
            member.id
        );
    }
    let (status, _, err) = cluster.ctl(0, &["cert", "remove", "site"]);
    assert!(status.success(), "{err}");
    for i in 0..cluster.members.len() {
        // Each node's own applied state must have the removal first.
        raftlb_tests::wait::until("the removal applied", Duration::from_secs(10), || {
            cluster
                .ctl(i, &["cert", "list", "--stale"])
                .1
                .contains("no certificates")
        })
        .await;
        let (status, out, err) = cluster.ctl(i, &["snapshot"]);
        assert!(status.success(), "{err}");
        assert!(out.contains("the log up to it is purged"), "{out}");
    }
    for member in &cluster.members {
        for needle in [&site.key_der[..], needle] {
            let holding = files_holding(&member.data_dir, needle);
            assert!(
                holding.is_empty(),
                "node {}: the removed key is still in {holding:?}",
                member.id
            );
        }
    }
}
