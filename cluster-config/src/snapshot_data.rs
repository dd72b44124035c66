//! Snapshot data: the cluster state and the sticky tables of one log
//! position, as a snapshot file holds them and a lagging follower installs
//! them, encoded in the cluster's effective format version (see
//! [`format`](crate::format)).
//!
//! - Format 1: `postcard(ClusterState) ‖ postcard(tables)`. The state's
//!   first byte is a bool (0 or 1).
//! - Format 2 and later: [`MAGIC`] (its first byte is neither 0 nor 1), the
//!   format and the cluster version (big-endian u16 each), then the same
//!   two encodings.
//!
//! The format written is the state's cluster version, so a follower still
//! on the version before can install what its leader sends.

use crate::format::Formats;
use crate::state::ClusterState;
use crate::state::encoding::VERSIONED;
use crate::sticky_table::StickyTables;

/// Starts snapshot data of format 2 and later.
pub const MAGIC: &[u8; 4] = b"RLBD";
const HEADER_LEN: usize = MAGIC.len() + 4;

/// `state` and `tables` as snapshot data.
pub fn encode(state: &ClusterState, tables: &StickyTables) -> Result<Vec<u8>, postcard::Error> {
    let version = state.cluster_version();
    let mut out = Vec::new();
    if version >= 2 {
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&version.to_be_bytes());
    }
    let out = postcard::to_extend(state, out)?;
    tables.snapshot_into(out)
}

/// The cluster state of snapshot data; the sticky tables are restored
/// into `tables` when given, else only checked to be there.
pub fn decode(data: &[u8], tables: Option<&StickyTables>) -> Result<ClusterState, String> {
    let (version, body) = match data.strip_prefix(MAGIC.as_slice()) {
        None => (1, data),
        Some(rest) => {
            if rest.len() < HEADER_LEN - MAGIC.len() {
                return Err("its header is cut short".to_string());
            }
            let format = u16::from_be_bytes([rest[0], rest[1]]);
            let version = u16::from_be_bytes([rest[2], rest[3]]);
            if !Formats::BUILT.contains(format) || format < 2 {
                return Err(format!(
                    "it is of format {format}, but this binary reads formats {}",
                    Formats::BUILT
                ));
            }
            if version < 2 || version > format {
                return Err(format!("it records cluster version {version} in format {format}"));
            }
            (version, &rest[4..])
        }
    };
    let (mut state, rest) = postcard::take_from_bytes::<ClusterState>(body)
        .map_err(|e| format!("its cluster state cannot be decoded: {e}"))?;
    // A state from version 3 on says its version itself; the header must
    // agree, or the state would hold settings its version cannot carry.
    let said = state.cluster_version();
    if (said >= VERSIONED || version >= VERSIONED) && said != version {
        return Err(format!(
            "its header records cluster version {version}, but its cluster state is of version {said}"
        ));
    }
    if let Some(tables) = tables {
        tables
            .restore(rest)
            .map_err(|e| format!("its sticky tables cannot be decoded: {e}"))?;
    }
    state.restore_cluster_version(version);
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;

    #[test]
    fn format_one_has_no_header_and_later_ones_keep_the_version() {
        let tables = StickyTables::default();
        let mut state = ClusterState::default();
        let one = encode(&state, &tables).unwrap();
        assert!(matches!(one[0], 0 | 1));
        assert_eq!(decode(&one, Some(&tables)).unwrap().cluster_version(), 1);

        assert!(state.apply(Command::SetClusterVersion(2)).is_applied());
        let two = encode(&state, &tables).unwrap();
        assert!(two.starts_with(MAGIC));
        assert_eq!(&two[HEADER_LEN..], one.as_slice());
        let decoded = decode(&two, Some(&tables)).unwrap();
        assert_eq!(decoded.cluster_version(), 2);
        assert_eq!(decoded, state);
    }

    #[test]
    fn a_header_that_disagrees_with_its_state_is_refused() {
        let tables = StickyTables::default();
        let mut state = ClusterState::default();
        for version in 2..=VERSIONED {
            assert!(state.apply(Command::SetClusterVersion(version)).is_applied());
        }
        let three = encode(&state, &tables).unwrap();
        assert_eq!(decode(&three, Some(&tables)).unwrap(), state);
        // The same state behind no header (format 1) or a version-2 header.
        let bare = &three[HEADER_LEN..];
        let error = decode(bare, Some(&tables)).unwrap_err();
        assert!(
            error.contains("records cluster version 1, but its cluster state is of version 3"),
            "{error}"
        );
        let mut two = three.clone();
        two[4..8].copy_from_slice(&[0, 3, 0, 2]);
        let error = decode(&two, Some(&tables)).unwrap_err();
        assert!(
            error.contains("version 2, but its cluster state is of version 3"),
            "{error}"
        );
        // And an unversioned state behind a version-3 header.
        let mut old = ClusterState::default();
        assert!(old.apply(Command::SetClusterVersion(2)).is_applied());
        let mut forged = three[..HEADER_LEN].to_vec();
        forged.extend_from_slice(&encode(&old, &tables).unwrap()[HEADER_LEN..]);
        let error = decode(&forged, Some(&tables)).unwrap_err();
        assert!(
            error.contains("version 3, but its cluster state is of version 1"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_format_or_a_cut_header_is_refused_in_words() {
        let tables = StickyTables::default();
        let mut data = MAGIC.to_vec();
        data.extend([0, 9, 0, 2]);
        let error = decode(&data, Some(&tables)).unwrap_err();
        assert!(error.contains("format 9"), "{error}");
        assert!(
            decode(b"RLBD\x00", Some(&tables))
                .unwrap_err()
                .contains("cut short")
        );
    }
}
