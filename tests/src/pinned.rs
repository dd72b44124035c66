//! The `raftlb` binary of an earlier commit of this repository, for tests
//! that run old and new nodes side by side (rolling upgrades across format
//! versions). Commits are named by hash: only the commits of main reach CI.
//!
//! The commit's tree is taken with `git archive` into
//! `TARGET/pinned/COMMIT/src` (once) and built into the same target
//! directory as this workspace, so the two builds share every compiled
//! dependency. Two changes are made to the old tree, so that its build
//! never replaces anything of this one: the workspace's version becomes
//! `0.1.0-pinned.cCOMMIT` (cargo names a path crate's artifacts by its
//! name, version and path relative to its workspace, which would
//! otherwise be the same), and the binary is called `raftlb-COMMIT`.
//! Cargo makes the next call a no-op.

use crate::process::profile_dir;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The last commit before format versions (format 1).
pub const FORMAT_ONE: &str = "b834ab7d96af9fed0eee0be0317b75256a618043";

/// The built binary of `commit`; panics saying why it cannot be built.
pub fn binary(commit: &str) -> PathBuf {
    let (profile, release) = profile_dir();
    let target = profile.parent().expect("target dir").to_path_buf();
    let short = &commit[..commit.len().min(12)];
    let name = format!("raftlb-{short}");
    let src = target.join("pinned").join(short).join("src");
    if !src.join(".extracted").exists() {
        extract(commit, &src, &name);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args([
            "build",
            "--quiet",
            // Offline, and not --locked: the lock file's entries for the
            // renamed versions change, and nothing else does.
            "--offline",
            "-p",
            "raftlb-node",
            "--bin",
            &name,
        ])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(&src);
    if release {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build for the pinned binary");
    assert!(status.success(), "building raftlb at {commit} failed: {status}");
    let bin = profile.join(&name);
    assert!(bin.exists(), "{} is missing after cargo build", bin.display());
    bin
}

/// `git archive COMMIT` of this repository into `src`, with the binary
/// renamed to `name`.
fn extract(commit: &str, src: &Path, name: &str) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository");
    let _ = std::fs::remove_dir_all(src);
    std::fs::create_dir_all(src).expect("create the pinned source dir");
    let archive = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "git -C '{}' archive --format=tar {commit} | tar -x -C '{}'",
            repo.display(),
            src.display()
        ))
        .status()
        .expect("run git archive");
    assert!(
        archive.success(),
        "git archive {commit} failed ({archive}): the repository at {} must hold the commit (a full clone, not a shallow one)",
        repo.display()
    );
    let root = src.join("Cargo.toml");
    let text = std::fs::read_to_string(&root).expect("the pinned Cargo.toml");
    let short = &commit[..commit.len().min(12)];
    let versioned = text.replace("\"0.1.0\"", &format!("\"0.1.0-pinned.c{short}\""));
    assert_ne!(versioned, text, "the pinned Cargo.toml has no version 0.1.0");
    std::fs::write(&root, versioned).expect("write the pinned Cargo.toml");
    let manifest = src.join("node/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("the pinned node/Cargo.toml");
    let renamed = text.replacen(
        "name = \"raftlb\"\npath = \"src/main.rs\"",
        &format!("name = \"{name}\"\npath = \"src/main.rs\""),
        1,
    );
    assert_ne!(renamed, text, "the pinned node/Cargo.toml names no raftlb binary");
    std::fs::write(&manifest, renamed).expect("write the pinned node/Cargo.toml");
    std::fs::write(src.join(".extracted"), commit).expect("mark the pinned source extracted");
}
