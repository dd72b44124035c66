//! A real `raftlb` process: the binary cargo built for this workspace,
//! started with a config file in a temporary directory, killed on drop. Its
//! stderr goes to a file printed when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Path of the `raftlb` binary: `$RAFTLB_BIN` if set, else the workspace's
/// own build. `cargo test` does not build another package's binary for this
/// crate's tests, so the first call runs `cargo build -p raftlb-node` (a no-op
/// when it is fresh) — the tests can never run against a stale binary.
pub fn binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(build_binary).clone()
}

fn build_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RAFTLB_BIN") {
        return PathBuf::from(path);
    }
    build_with_features("")
}

/// The target directory's profile directory (`target/debug`) this
/// executable was built in, and whether it is the release profile.
pub fn profile_dir() -> (PathBuf, bool) {
    let exe = std::env::current_exe().expect("current_exe");
    // A test runs from `target/<profile>/deps`; a binary of this workspace
    // that uses these fixtures (raftlb-jepsen) from `target/<profile>`.
    let exe_dir = exe.parent().expect("the executable's directory");
    let profile_dir = match exe_dir.file_name() {
        Some(name) if name == "deps" => exe_dir.parent().expect("target profile dir"),
        _ => exe_dir,
    };
    let release = profile_dir.file_name().is_some_and(|name| name == "release");
    (profile_dir.to_path_buf(), release)
}

/// Runs `cargo build -p raftlb-node --bin raftlb --features FEATURES` into
/// the target directory and profile this executable was built in (as
/// [`binary`] does) and returns the binary's path, which the next build
/// with other features overwrites.
pub fn build_with_features(features: &str) -> PathBuf {
    let (profile_dir, release) = profile_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", "raftlb-node", "--bin", "raftlb"]);
    if !features.is_empty() {
        build.args(["--features", features]);
    }
    // Into the target directory this executable was built in, from the
    // workspace, whatever the caller's directory and $CARGO_TARGET_DIR.
    build
        .arg("--target-dir")
        .arg(profile_dir.parent().expect("target dir"))
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if release {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build for the raftlb binary");
    assert!(
        status.success(),
        "cargo build -p raftlb-node (features: {features:?}) failed: {status}"
    );
    let bin = profile_dir.join("raftlb");
    assert!(bin.exists(), "{} is missing after cargo build", bin.display());
    bin
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("raftlb-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `raftlb ARGS…` to completion and returns (status, stdout, stderr).
pub fn run_to_end(args: &[&str]) -> (ExitStatus, String, String) {
    let output = Command::new(binary()).args(args).output().expect("run raftlb");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A running `raftlb run` process.
#[derive(Debug)]
pub struct Raftlb {
    child: Option<Child>,
    log: PathBuf,
    /// Shared with a successor (`raftlb run --upgrade`) on the same data dir.
    dir: Arc<TempDir>,
}

impl Raftlb {
    /// Starts `raftlb run` with `config` and waits until it has logged that
    /// it is ready and every address in `ready` accepts TCP connections.
    pub async fn start(config: &str, ready: &[&str]) -> Raftlb {
        let mut node = Raftlb::spawn(config);
        node.ready(ready).await;
        node
    }

    /// Starts `raftlb run` with `config` without waiting for it. The process
    /// runs in its own scratch directory, so relative paths in the config
    /// (the default `data_dir`) are private to it.
    pub fn spawn(config: &str) -> Raftlb {
        Self::spawn_with(Command::new(binary()), config)
    }

    /// [`Raftlb::spawn`] with its open-file limit (soft and hard) set to
    /// `open_files` (util-linux `prlimit`).
    pub fn spawn_limited(config: &str, open_files: u64) -> Raftlb {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={open_files}:{open_files}"))
            .arg(binary());
        Self::spawn_with(command, config)
    }

    /// [`Raftlb::spawn`] inside network namespace `ns`.
    pub fn spawn_in(ns: &str, config: &str) -> Raftlb {
        Self::spawn_in_as(ns, config, &binary(), &[])
    }

    /// [`Raftlb::spawn`] of the binary at `bin`, with `env` added to its
    /// environment.
    pub fn spawn_as(config: &str, bin: &Path, env: &[(String, String)]) -> Raftlb {
        let mut command = Command::new(bin);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        Self::spawn_with(command, config)
    }

    /// [`Raftlb::spawn_in`] of the binary at `bin`, with `env` added to
    /// its environment (the jepsen harness's failpoints).
    pub fn spawn_in_as(ns: &str, config: &str, bin: &Path, env: &[(String, String)]) -> Raftlb {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]).arg(bin);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        Self::spawn_with(command, config)
    }

    fn spawn_with(command: Command, config: &str) -> Raftlb {
        let dir = TempDir::new("node");
        dir.write("raftlb.toml", config);
        Self::launch(command, Arc::new(dir), "raftlb.log", &[])
    }

    /// Starts `raftlb run --upgrade` on this node's config file, in its
    /// directory (so on its data dir), logging to `log` there: the new
    /// process takes over from this one, which then drains and exits.
    pub fn spawn_successor(&self, log: &str) -> Raftlb {
        Self::launch(Command::new(binary()), Arc::clone(&self.dir), log, &["--upgrade"])
    }

    /// [`Raftlb::spawn_successor`] of the binary at `bin` inside network
    /// namespace `ns`, with `env` added (a node of a site).
    pub fn spawn_successor_in(&self, ns: &str, bin: &Path, env: &[(String, String)], log: &str) -> Raftlb {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]).arg(bin);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        Self::launch(command, Arc::clone(&self.dir), log, &["--upgrade"])
    }

    /// This node's scratch directory (its relative data dir lives there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn launch(mut command: Command, dir: Arc<TempDir>, log: &str, extra: &[&str]) -> Raftlb {
        let config_path = dir.path().join("raftlb.toml");
        let log = dir.path().join(log);
        let child = command
            .args(["run", "--config"])
            .arg(&config_path)
            .args(extra)
            .current_dir(dir.path())
            .env("RAFTLB_WORKER_THREADS", "2")
            .env("RUST_LOG", "info,raftlb_node=debug,openraft=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn raftlb");
        Raftlb {
            child: Some(child),
            log,
            dir,
        }
    }

    /// Waits until the node has logged that it is ready and every address
    /// in `ready` accepts TCP connections.
    pub async fn ready(&mut self, ready: &[&str]) {
        let start = Instant::now();
        while !self.log().contains("raftlb node ready") {
            if let Some(status) = self.try_exit() {
                panic!("raftlb exited ({status}) before it was ready:\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "raftlb not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for address in ready {
            let start = Instant::now();
            while tokio::net::TcpStream::connect(address).await.is_err() {
                if let Some(status) = self.try_exit() {
                    panic!(
                        "raftlb exited ({status}) before {address} opened:\n{}",
                        self.log()
                    );
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{address} never opened:\n{}",
                    self.log()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Sends SIGKILL and reaps the process: a crash, no cleanup.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends signal `name` (`"HUP"`, `"USR2"`…).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// The config file the process was started with (rewrite it, then
    /// SIGHUP or `raftlb reload`).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("raftlb.toml")
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                self.child = None;
                return status;
            }
            assert!(
                start.elapsed() < deadline,
                "raftlb did not exit within {deadline:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Raftlb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("--- raftlb log ---\n{}", self.log());
            }
        }
    }
}

/// Whether process `pid` is stopped (state `T` in /proc).
pub fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit(')')
                .next()
                .map(|rest| rest.trim_start().starts_with('T'))
        })
        .unwrap_or(false)
}
