//! Cluster certificates over time: a renewed node certificate is served
//! without a restart or an election, a bundle of two CAs carries a CA
//! rotation, and a node warns before its certificate expires.

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::cluster::{CLUSTER_ID, Cluster, http_seed};
use raftlb_tests::pki::{self, Pki, certs, ctl_with, path, tls_section};
use raftlb_tests::process::TempDir;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The leaf certificate `address` presents, as DER.
async fn presented(address: &str, client: &Pki) -> Vec<u8> {
    #[derive(Debug)]
    struct Record(std::sync::Mutex<Vec<u8>>);
    impl rustls::client::danger::ServerCertVerifier for Record {
        fn verify_server_cert(
            &self,
            end_entity: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            *self.0.lock().expect("lock") = end_entity.to_vec();
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(client.path("client-admin.pem"))
        .expect("client cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("client cert");
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_file(client.path("client-admin.key")).expect("client key");
    let record = Arc::new(Record(std::sync::Mutex::default()));
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(
                Arc::clone(&record) as Arc<dyn rustls::client::danger::ServerCertVerifier>
            )
            .with_client_auth_cert(chain, key)
            .expect("client auth");
    let tcp = tokio::net::TcpStream::connect(address).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("node").expect("name");
    let _ = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    record.0.lock().expect("lock").clone()
}

fn der_of(pem_file: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(pem_file)
        .expect("a certificate")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_node_certificate_is_served_without_restart_or_election() {
    let ours = pki::shared(CLUSTER_ID);
    let own = TempDir::new("renewal");
    let cert = pki::copy(&ours, "node-1.pem", own.path());
    let key = pki::copy(&ours, "node-1.key", own.path());
    let backend = HttpBackend::start("a").await;
    let mut cluster = Cluster::new(3, &http_seed("round_robin", &[backend.address]));
    cluster.members[0].tls = Some(tls_section(&ours.path("ca.pem"), &cert, &key));
    for i in 0..3 {
        cluster.spawn(i);
    }
    for i in 0..3 {
        cluster.wait_ready(i).await;
    }
    cluster.wait_leader(Duration::from_secs(10)).await;
    let node = cluster.members[0].raft.clone();
    assert_eq!(presented(&node, &ours).await, der_of(&cert));
    let term = |cluster: &Cluster| {
        let (status, out, err) = cluster.ctl(0, &["--json", "status"]);
        assert!(status.success(), "{err}");
        let parsed: serde_json::Value = serde_json::from_str(&out).expect("json");
        parsed["term"].as_u64().expect("a term")
    };
    let term_before = term(&cluster);
    let pid = cluster.members[0].process.as_ref().expect("running").pid();

    let renewed = TempDir::new("renewed");
    certs(&[
        "node",
        "--dir",
        path(&ours.dir),
        "--out",
        path(renewed.path()),
        "--id",
        "1",
    ]);
    let new_der = der_of(&renewed.path().join("node-1.pem"));
    assert_ne!(new_der, der_of(&cert));
    std::fs::rename(renewed.path().join("node-1.key"), &key).expect("replace the key");
    std::fs::rename(renewed.path().join("node-1.pem"), &cert).expect("replace the certificate");
    let replaced = Instant::now();
    loop {
        if presented(&node, &ours).await == new_der {
            break;
        }
        assert!(
            replaced.elapsed() < Duration::from_secs(5),
            "the new certificate is not served after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("renewed certificate served after {:?}", replaced.elapsed());
    assert_eq!(
        cluster.members[0].process.as_ref().expect("running").pid(),
        pid,
        "no restart"
    );
    assert_eq!(term(&cluster), term_before, "no election");
    let log = cluster.members[0].process.as_ref().expect("running").log();
    assert!(log.contains("cluster certificate files re-read"), "{log}");
    // The cluster still works through the renewed node.
    let (status, _, err) = cluster.ctl(
        0,
        &["backend", "weight", "app", &backend.address.to_string(), "3"],
    );
    assert!(status.success(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_of_two_cas_lets_nodes_of_both_form_one_cluster() {
    // CA rotation half-way: a new CA made for the same cluster, both in
    // every bundle; node 3 and a client already hold the new CA's.
    let ours = pki::shared(CLUSTER_ID);
    let rotated = TempDir::new("rotation");
    let new_ca = rotated.path().join("new");
    certs(&[
        "init",
        "--cluster",
        CLUSTER_ID,
        "--out",
        path(&new_ca),
        "--nodes",
        "3",
    ]);
    let bundle = rotated.write(
        "bundle.pem",
        &(std::fs::read_to_string(ours.path("ca.pem")).expect("old CA")
            + &std::fs::read_to_string(new_ca.join("ca.pem")).expect("new CA")),
    );
    let backend = HttpBackend::start("a").await;
    let mut cluster = Cluster::new(3, &http_seed("round_robin", &[backend.address]));
    for (i, member) in cluster.members.iter_mut().enumerate() {
        let (cert, key) = match i {
            2 => (new_ca.join("node-3.pem"), new_ca.join("node-3.key")),
            _ => (
                ours.path(&format!("node-{}.pem", i + 1)),
                ours.path(&format!("node-{}.key", i + 1)),
            ),
        };
        member.tls = Some(tls_section(&bundle, &cert, &key));
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    for i in 0..3 {
        cluster.wait_ready(i).await;
    }
    let (client_cert, client_key) = (new_ca.join("client-admin.pem"), new_ca.join("client-admin.key"));
    let creds = [
        "--ca",
        path(&bundle),
        "--cert",
        path(&client_cert),
        "--key",
        path(&client_key),
    ];
    // (The fixture's own clients hold the old bundle only: ask with the new.)
    for member in &cluster.members {
        let start = Instant::now();
        loop {
            let weight = ["backend", "weight", "app", &backend.address.to_string(), "2"];
            let (code, out) = ctl_with(&member.raft, &creds, &weight);
            if code == Some(0) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "through node {}: {out}",
                member.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (code, status) = ctl_with(&cluster.members[0].raft, &creds, &["status"]);
    assert_eq!(code, Some(0), "{status}");
    assert_eq!(status.matches("voter").count(), 3, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_warns_two_weeks_before_its_certificate_expires() {
    let ours = pki::shared(CLUSTER_ID);
    let soon = TempDir::new("expiring");
    certs(&[
        "node",
        "--dir",
        path(&ours.dir),
        "--out",
        path(soon.path()),
        "--id",
        "1",
        "--days",
        "10",
    ]);
    let backend = HttpBackend::start("a").await;
    let mut cluster = Cluster::new(1, &http_seed("round_robin", &[backend.address]));
    cluster.members[0].tls = Some(tls_section(
        &ours.path("ca.pem"),
        &soon.path().join("node-1.pem"),
        &soon.path().join("node-1.key"),
    ));
    cluster.spawn(0);
    cluster.wait_ready(0).await;
    let process = cluster.members[0].process.as_ref().expect("running");
    raftlb_tests::wait::until("the expiry warning", Duration::from_secs(5), || {
        process
            .log()
            .contains("this node's cluster certificate expires on")
    })
    .await;
    let log = process.log();
    assert!(
        log.contains("(9 days left)") || log.contains("(10 days left)"),
        "{log}"
    );
    assert!(log.contains("raftlb certs node --id 1"), "{log}");
    let metrics = raftlb_tests::client::get(
        &raftlb_tests::client::http1(),
        &format!("http://127.0.0.1:{}/metrics", cluster.metrics_port),
    )
    .await
    .1;
    assert!(
        metrics.contains("raftlb_cluster_certificate_expiring 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("raftlb_cluster_certificate_expiry_seconds "),
        "{metrics}"
    );
}
