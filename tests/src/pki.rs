//! The test clusters' certificates, made by the real `raftlb certs` once
//! per cluster id and shared by every test of every test binary: a CA,
//! node certificates for ids 1 to [`NODES`], an `admin` client and a
//! `reader` (role read). They live in one directory per cluster id under
//! the system's temp dir, made in a scratch directory and renamed into
//! place, so concurrent test processes agree on one set.

use crate::process::run_to_end;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Node ids with a certificate.
pub const NODES: u64 = 9;
/// Bumped whenever what `raftlb certs` writes changes shape.
const LAYOUT: &str = "v1";

/// One cluster's certificate directory.
#[derive(Debug)]
pub struct Pki {
    pub cluster: String,
    pub dir: PathBuf,
}

/// The certificates of cluster `cluster`, made on first use.
pub fn shared(cluster: &str) -> Arc<Pki> {
    static MADE: OnceLock<Mutex<HashMap<String, Arc<Pki>>>> = OnceLock::new();
    let mut made = MADE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    Arc::clone(
        made.entry(cluster.to_string())
            .or_insert_with(|| Arc::new(Pki::make(cluster))),
    )
}

impl Pki {
    fn make(cluster: &str) -> Pki {
        let dir = std::env::temp_dir()
            .join(format!("raftlb-test-pki-{LAYOUT}"))
            .join(cluster);
        if !dir.join("client-reader.key").exists() {
            let scratch = dir.with_extension(format!("new{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&scratch);
            let nodes: Vec<String> = (1..=NODES).map(|n| n.to_string()).collect();
            let out = scratch.to_str().expect("utf-8 temp dir");
            certs(&[
                "init",
                "--cluster",
                cluster,
                "--out",
                out,
                "--nodes",
                &nodes.join(","),
            ]);
            certs(&["client", "--dir", out, "--name", "reader", "--role", "read"]);
            std::fs::create_dir_all(dir.parent().expect("parent")).expect("pki root");
            // Another process may have won the race: then use its set.
            if std::fs::rename(&scratch, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&scratch);
            }
        }
        Pki {
            cluster: cluster.to_string(),
            dir,
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// `[cluster.tls]` for node `id`.
    pub fn node_section(&self, id: u64) -> String {
        tls_section(
            &self.path("ca.pem"),
            &self.path(&format!("node-{id}.pem")),
            &self.path(&format!("node-{id}.key")),
        )
    }

    /// `--ca … --cert … --key …` for `raftlb ctl` as client `name`
    /// (`admin` or `reader`).
    pub fn ctl_args(&self, name: &str) -> Vec<String> {
        self.credentials(&format!("client-{name}"))
    }

    /// `--ca … --cert STEM.pem --key STEM.key`: `raftlb ctl` with any
    /// certificate of this directory (`node-1`, say).
    pub fn credentials(&self, stem: &str) -> Vec<String> {
        vec![
            "--ca".to_string(),
            self.path("ca.pem").display().to_string(),
            "--cert".to_string(),
            self.path(&format!("{stem}.pem")).display().to_string(),
            "--key".to_string(),
            self.path(&format!("{stem}.key")).display().to_string(),
        ]
    }

    /// The files of client `name`, for the Rust admin client.
    pub fn client_files(&self, name: &str) -> raftlb_node::pki::Files {
        raftlb_node::pki::Files {
            ca: self.path("ca.pem"),
            cert: self.path(&format!("client-{name}.pem")),
            key: self.path(&format!("client-{name}.key")),
        }
    }
}

/// Runs `raftlb certs ARGS`, which must succeed.
pub fn certs(args: &[&str]) -> String {
    let mut all = vec!["certs"];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = run_to_end(&all);
    assert!(status.success(), "raftlb certs {args:?}: {stderr}");
    stdout
}

/// A `[cluster.tls]` section naming these three files.
pub fn tls_section(ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "[cluster.tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// `raftlb ctl --node NODE` with exactly these credentials (none for
/// cleartext): its exit code, and its stdout if it succeeded, else its
/// stderr.
pub fn ctl_with(node: &str, credentials: &[&str], args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["ctl", "--node", node, "--timeout", "5s"];
    all.extend_from_slice(credentials);
    all.extend_from_slice(args);
    let (status, stdout, stderr) = run_to_end(&all);
    (status.code(), if status.success() { stdout } else { stderr })
}

/// A path as the `&str` a command line takes.
pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Copies `file` of `pki` into `dir` (for tests that replace or corrupt one).
pub fn copy(pki: &Pki, file: &str, dir: &Path) -> PathBuf {
    let to = dir.join(file);
    std::fs::copy(pki.path(file), &to).expect("copy a certificate file");
    to
}
