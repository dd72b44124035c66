//! Snapshot decoding (`node/src/control/state_machine.rs` and
//! `StickyTables::restore` in cluster-config): a snapshot's data as a
//! follower installs it from its leader, or `snapshot.bin` as a node reads
//! it at start (the input's first byte picks which).
//!
//! Checks: nothing panics and no allocation runs past what the bytes pay
//! for (libFuzzer's limits). What decodes encodes again (the cluster state,
//! then the sticky tables, as a snapshot is built) and decodes to the same
//! state and the same tables (entries and hash per pool).

#![no_main]

use libfuzzer_sys::fuzz_target;
use raftlb_config::StickyTables;
use raftlb_node::fuzzing::{snapshot_data, snapshot_file};

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let tables = StickyTables::default();
    let decoded = match which & 1 {
        0 => snapshot_data(bytes, &tables),
        _ => snapshot_file(bytes, &tables),
    };
    let Ok(state) = decoded else {
        return;
    };
    let again = postcard::to_stdvec(&state).expect("a state encodes");
    let again = tables.snapshot_into(again).expect("tables encode");
    let restored = StickyTables::default();
    assert_eq!(snapshot_data(&again, &restored).as_ref(), Ok(&state));
    assert_eq!(restored.stats(), tables.stats());
});
