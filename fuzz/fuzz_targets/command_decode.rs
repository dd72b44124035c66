//! `Command::decode`: the postcard bytes of a command, as an admin client
//! sends them (`Write`) and as a peer's log entries carry them.
//!
//! Checks: nothing panics, and the decoder's bounds hold (no deep
//! recursion, no allocation the bytes do not pay for: libFuzzer's memory
//! and stack limits catch those). A proposal that decodes encodes again
//! (in its own format) and decodes to the same proposal; it displays; and applying it (to an empty
//! state and to a seeded cluster) never applies what `validate` refuses,
//! and leaves a state that encodes and decodes to itself as snapshot data.

#![no_main]

use libfuzzer_sys::fuzz_target;
use raftlb_config::{ClusterState, Command, Proposal, StickyTables, snapshot_data};
use raftlb_fuzz::seed;
use std::sync::LazyLock;

static SEEDED: LazyLock<ClusterState> = LazyLock::new(seed::state);

fuzz_target!(|data: &[u8]| {
    let Ok(proposal) = Proposal::decode(data) else {
        return;
    };
    // In its own format: a command read from a later format's envelope
    // may hold what format 1 cannot write.
    let bytes = proposal.encode().expect("a decoded proposal encodes");
    assert_eq!(Proposal::decode(&bytes).as_ref(), Ok(&proposal));
    let command = proposal.command;
    assert_eq!(Command::decode(data).as_ref(), Ok(&command));
    let _ = command.to_string();
    let valid = command.validate().is_ok();
    for mut state in [ClusterState::default(), SEEDED.clone()] {
        let outcome = state.apply_with(command.clone(), &StickyTables::default());
        assert!(
            valid || !outcome.is_applied(),
            "applied an invalid command: {outcome:?}"
        );
        let _ = outcome.rejection();
        // As snapshots keep it (the cluster version rides in the data's
        // header, not in the state's own encoding).
        let tables = StickyTables::default();
        let bytes = snapshot_data::encode(&state, &tables).expect("a state encodes");
        let again = snapshot_data::decode(&bytes, Some(&tables)).expect("a state decodes");
        assert_eq!(again, state);
    }
});
