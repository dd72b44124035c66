//! The TOML config loader: `raftlb_config::parse`, which `raftlb` runs on a
//! config file's text (`node::load_config`, `raftlb check`).
//!
//! Checks: nothing panics, however the text is broken, and every error
//! renders (file, line, key). A file that parses seeds a cluster `apply`
//! accepts (the promise of cluster-config's `validate`): its `Bootstrap`
//! validates, applies to an empty state of the format it needs, and
//! survives encoding as it goes through the Raft log.

#![no_main]

use libfuzzer_sys::fuzz_target;
use raftlb_config::{ClusterState, Command, Proposal};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match raftlb_config::parse("fuzz.toml", text) {
        Ok(config) => config,
        Err(errors) => {
            let _ = errors.to_string();
            return;
        }
    };
    let bootstrap = Command::Bootstrap(config.cluster);
    assert_eq!(bootstrap.validate(), Ok(()));
    // In the format its keys need (a pool's `discovery`: 6), as a cluster
    // that runs that version writes and applies it.
    let format = bootstrap.format_needed();
    let bytes = Proposal::new(format, bootstrap.clone())
        .encode()
        .expect("a command encodes");
    assert_eq!(Command::decode(&bytes).as_ref(), Ok(&bootstrap));
    let mut state = ClusterState::default();
    for version in 2..=format {
        assert!(state.apply(Command::SetClusterVersion(version)).is_applied());
    }
    let outcome = state.apply(bootstrap);
    assert!(
        outcome.is_applied(),
        "a file that parses seeds a cluster: {outcome:?}"
    );
});
