//! Frozen samples of every format version's bytes (see
//! `raftlb_config::format`), decoded by this test forever: log entries
//! ([`Proposal`]) and snapshot data. A sample is recorded once, when its
//! version is released, and never re-recorded: a change that breaks one
//! breaks the rolling upgrade from that version. (Format 1's commands are
//! also in `wire.rs`, recorded when they were written.)

mod hex;

use hex::{hex, unhex};
use raftlb_config::discovery::{Discovered, DiscoveryFailure, DiscoveryUpdate};
use raftlb_config::format::{self, Formats};
use raftlb_config::{
    BackendSpec, ClusterState, Command, Proposal, StickyChange, StickyKey, StickyTables, snapshot_data,
};
use std::net::SocketAddr;

fn addr(port: u16) -> SocketAddr {
    ([10, 0, 0, 1], port).into()
}

/// Log entries' payloads of each version, with what they decode to.
fn entries() -> Vec<(Proposal, &'static str)> {
    let add = Command::AddBackend {
        pool: "app".into(),
        backend: BackendSpec::new(addr(9001)),
    };
    vec![
        // Format 1: the bare command, as every release before versions wrote it.
        (Proposal::new(1, add.clone()), "0703617070000a000001a946010000"),
        (
            Proposal::new(1, Command::RemovePool { name: "web".into() }),
            "0603776562",
        ),
        // Format 2: the envelope (index 127, the format, the command's bytes).
        (
            Proposal::new(2, add.clone()),
            "7f020f0703617070000a000001a946010000",
        ),
        (Proposal::new(2, Command::SetClusterVersion(2)), "7f02021502"),
        // Format 3: the same envelope; a backend has no field format 3 added.
        (
            Proposal::new(3, add.clone()),
            "7f030f0703617070000a000001a946010000",
        ),
        (Proposal::new(3, Command::SetClusterVersion(3)), "7f03021503"),
        // Format 4: as format 3 (it changed the data dir only).
        (
            Proposal::new(4, add.clone()),
            "7f040f0703617070000a000001a946010000",
        ),
        (Proposal::new(4, Command::SetClusterVersion(4)), "7f04021504"),
        // Format 5: the same envelope; a backend has no field format 5 added.
        (
            Proposal::new(5, add.clone()),
            "7f050f0703617070000a000001a946010000",
        ),
        (Proposal::new(5, Command::SetClusterVersion(5)), "7f05021505"),
        // Format 6: a backend says whether discovery found it (one byte).
        (Proposal::new(6, add), "7f06100703617070000a000001a94601000000"),
        (Proposal::new(6, Command::SetClusterVersion(6)), "7f06021506"),
        (
            Proposal::new(6, set_discovered()),
            "7f061d16036170700101000a000001aa460380d095ffbc310100e8d795ffbc31",
        ),
        (
            Proposal::new(
                6,
                Command::SetSiteHealth {
                    name: "www.gslb.test".into(),
                    site: "a".into(),
                    up: false,
                    load: 7,
                },
            ),
            "7f0613180d7777772e67736c622e7465737401610007",
        ),
    ]
}

#[test]
fn every_versions_entries_decode_and_are_still_produced() {
    for (proposal, recorded) in entries() {
        assert_eq!(
            Proposal::decode(&unhex(recorded)).expect(recorded),
            proposal,
            "{recorded}"
        );
        assert_eq!(hex(&proposal.encode().unwrap()), recorded, "{proposal}");
    }
}

#[test]
fn an_entry_of_a_version_this_binary_does_not_read_is_refused_in_words() {
    let newer = format::CURRENT + 1;
    let bytes = unhex(&format!("7f{newer:02x}021502"));
    let error = Proposal::decode(&bytes).unwrap_err();
    assert!(
        error.contains(&format!(
            "an entry of format {newer}, but this binary reads formats {}",
            Formats::BUILT
        )),
        "{error}"
    );
}

/// A small state with a sticky session: the sample of snapshot data.
fn sample_state() -> (ClusterState, StickyTables) {
    let file = "[node]\nid = 1\ndata_dir = \"d\"\n\n\
                [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:8080\"\npool = \"app\"\n\n\
                [[pool]]\nname = \"app\"\nbackends = [{ address = \"10.0.0.1:9001\" }]\n\n\
                [pool.sticky]\nkind = \"header\"\nname = \"x-user\"\n";
    let config = raftlb_config::parse("sample.toml", file).expect("a valid sample");
    let mut state = ClusterState::default();
    let tables = StickyTables::default();
    assert!(
        state
            .apply_with(Command::Bootstrap(config.cluster), &tables)
            .is_applied()
    );
    let stick = Command::Sticky(StickyChange::Stick {
        pool: "app".into(),
        key: StickyKey::of(b"alice"),
        backend: addr(9001),
        replaces: None,
        at_ms: 1_700_000_000_000,
    });
    assert!(state.apply_with(stick, &tables).is_applied());
    (state, tables)
}

const SNAPSHOT_DATA_V1: &str = "01010377656200007f000001903f010361707000904e4b001e004b0080800164808080323c0080083c0020ac02000109776562736f636b6574000001e807e807d00f904ea09c012040000103617070000001000a000001a94601000003003c0003010206782d75736572880e00002080012f0001010001c0843de807e807000000003200000114030080080500000000000103617070012bd806c97f0e00af1a1fc3328fa763a9000a000001a94680d095ffbc31";
/// Version 3: the header, then the state's own version byte and the
/// fields format 3 added (none set here).
const SNAPSHOT_DATA_V3: &str = "524c4244000300030301010377656200007f000001903f010361707000904e4b001e004b0080800164808080323c0080083c0020ac02000109776562736f636b657400000100e807e807d00f904ea09c01204000000103617070000001000a000001a94601000003003c0003010206782d75736572880e00002080012f0001010001c0843de807e80700000000320000011403008008050000000000000103617070012bd806c97f0e00af1a1fc3328fa763a9000a000001a94680d095ffbc31";
/// Version 4: as version 3, with 4 in the header and the state.
const SNAPSHOT_DATA_V4: &str = "524c4244000400040401010377656200007f000001903f010361707000904e4b001e004b0080800164808080323c0080083c0020ac02000109776562736f636b657400000100e807e807d00f904ea09c01204000000103617070000001000a000001a94601000003003c0003010206782d75736572880e00002080012f0001010001c0843de807e80700000000320000011403008008050000000000000103617070012bd806c97f0e00af1a1fc3328fa763a9000a000001a94680d095ffbc31";
/// Version 5: as version 4, with 5 in the header and the state, and the
/// listener's QUIC settings (their defaults: HTTP/3 off).
const SNAPSHOT_DATA_V5: &str = "524c4244000500050501010377656200007f000001903f010361707000904e4b001e004b0080800164808080323c0080083c0020ac02000109776562736f636b657400000100e807e807d00f904ea09c01204000000000008001000103617070000001000a000001a94601000003003c0003010206782d75736572880e00002080012f0001010001c0843de807e80700000000320000011403008008050000000000000103617070012bd806c97f0e00af1a1fc3328fa763a9000a000001a94680d095ffbc31";
/// Version 6: as version 5, with 6 in the header and the state, the
/// pool's discovery and its status, each backend's `discovered` flag, no
/// `[gslb]` (a `None`) and empty site verdicts (serial 0, no sites).
const SNAPSHOT_DATA_V6: &str = "524c4244000600060601010377656200007f000001903f010361707000904e4b001e004b0080800164808080323c0080083c0020ac02000109776562736f636b657400000100e807e807d00f904ea09c01204000000000008001000103617070000001000a000001a9460100000003003c0003010206782d75736572880e00002080012f0001010001c0843de807e807000000003200000114030080080500000000000000000000000000000103617070012bd806c97f0e00af1a1fc3328fa763a9000a000001a94680d095ffbc31";
const SNAPSHOT_DATA_V2: &str = "524c42440002000201010377656200007f000001903f010361707000904e4b001e004b0080800164808080323c0080083c0020ac02000109776562736f636b6574000001e807e807d00f904ea09c012040000103617070000001000a000001a94601000003003c0003010206782d75736572880e00002080012f0001010001c0843de807e807000000003200000114030080080500000000000103617070012bd806c97f0e00af1a1fc3328fa763a9000a000001a94680d095ffbc31";

#[test]
fn every_versions_snapshot_data_decodes_and_is_still_produced() {
    let (mut state, tables) = sample_state();
    for (version, recorded) in [
        (1, SNAPSHOT_DATA_V1),
        (2, SNAPSHOT_DATA_V2),
        (3, SNAPSHOT_DATA_V3),
        (4, SNAPSHOT_DATA_V4),
        (5, SNAPSHOT_DATA_V5),
        (6, SNAPSHOT_DATA_V6),
    ] {
        if version >= 2 {
            assert!(state.apply(Command::SetClusterVersion(version)).is_applied());
        }
        let restored = StickyTables::default();
        let decoded = snapshot_data::decode(&unhex(recorded), Some(&restored)).expect("decodes");
        assert_eq!(decoded, state, "version {version}");
        assert_eq!(decoded.cluster_version(), version);
        assert_eq!(restored.stats(), tables.stats(), "version {version}");
        assert_eq!(
            hex(&snapshot_data::encode(&state, &tables).unwrap()),
            recorded,
            "version {version}"
        );
    }
}

#[test]
fn the_cluster_version_rises_only_and_needs_format_two() {
    let mut state = ClusterState::default();
    assert_eq!(state.cluster_version(), 1);
    assert_eq!(Command::SetClusterVersion(2).format_needed(), 2);
    assert_eq!(
        Command::Independent(vec![Command::SetClusterVersion(2)]).format_needed(),
        2
    );
    assert_eq!(Command::RemovePool { name: "a".into() }.format_needed(), 1);
    let refused = state.apply(Command::SetClusterVersion(1));
    assert!(
        refused
            .rejection()
            .contains("the first version that can be set is 2"),
        "{refused:?}"
    );
    assert!(state.apply(Command::SetClusterVersion(2)).is_applied());
    assert_eq!(state.cluster_version(), 2);
    let lower = state.apply(Command::SetClusterVersion(2));
    assert!(
        lower.rejection().contains("already 2; it never goes down"),
        "{lower:?}"
    );
    let batch = Command::Batch(vec![Command::SetClusterVersion(3)]);
    assert!(!state.apply(batch).is_applied());
    // Never a version this binary cannot read (found by the fuzzer: its
    // snapshot data would not decode).
    let unreadable = state.apply(Command::SetClusterVersion(format::CURRENT + 1));
    assert!(
        unreadable.rejection().contains("this binary reads formats"),
        "{unreadable:?}"
    );
    assert_eq!(state.cluster_version(), 2);
}

/// A listener with HTTP/3 on, as format 5 writes it; format 4 cannot.
const HTTP3_LISTENER_V5: &str = "7f0558010377656201007f000001bb03010361707000904e4b001e004b0080800164808080323c0080083c0020ac02000109776562736f636b657400000100e807e807d00f904ea09c01204000000101007f000001fb4100800100";

#[test]
fn a_listener_with_http3_needs_format_five() {
    let file = "[node]\nid = 1\ndata_dir = \"d\"\n\n\
                [[listener]]\nname = \"web\"\nprotocol = \"https\"\nbind = \"127.0.0.1:443\"\npool = \"app\"\n\
                http3 = true\nhttp3_bind = \"127.0.0.1:8443\"\n\n\
                [[pool]]\nname = \"app\"\nbackends = [{ address = \"10.0.0.1:9001\" }]\n";
    let config = raftlb_config::parse("h3.toml", file).expect("a valid sample");
    let listener = config.cluster.listeners[0].clone();
    let add = Command::AddListener(listener);
    assert_eq!(add.format_needed(), 5);
    let proposal = Proposal::new(5, add.clone());
    assert_eq!(hex(&proposal.encode().unwrap()), HTTP3_LISTENER_V5);
    assert_eq!(
        Proposal::decode(&unhex(HTTP3_LISTENER_V5)).expect("decodes"),
        proposal
    );
    // The writer refuses it in words before this (`format_needed`); the
    // encoder refuses too (postcard keeps no message).
    assert!(Proposal::new(4, add).encode().is_err());
}

/// A discovery update, as format 6 writes it.
fn set_discovered() -> Command {
    Command::SetDiscovered(DiscoveryUpdate {
        pool: "app".into(),
        backends: Some(vec![Discovered {
            address: addr(9002),
            weight: 3,
        }]),
        last_good_ms: 1_700_000_000_000,
        failure: Some((DiscoveryFailure::Timeout, 1_700_000_001_000)),
    })
}

/// A pool with SRV discovery and no static backend, as format 6 writes it.
const DISCOVERY_POOL_V6: &str = "7f0646040361707000000003003c0003000000000032000001140300800805000001115f6170702e5f7463702e6578616d706c65020001007f00003535050001001e00020000000000";

#[test]
fn a_pool_with_discovery_needs_format_six() {
    let file = "[node]\nid = 1\ndata_dir = \"d\"\n\n\
                [[pool]]\nname = \"app\"\n\
                discovery = { name = \"_app._tcp.example\", type = \"SRV\", resolvers = [\"127.0.0.53:53\"] }\n";
    let config = raftlb_config::parse("d.toml", file).expect("a valid sample");
    let add = Command::AddPool(config.cluster.pools[0].clone());
    assert_eq!(add.format_needed(), 6);
    assert_eq!(set_discovered().format_needed(), 6);
    let proposal = Proposal::new(6, add.clone());
    assert_eq!(hex(&proposal.encode().unwrap()), DISCOVERY_POOL_V6);
    assert_eq!(
        Proposal::decode(&unhex(DISCOVERY_POOL_V6)).expect("decodes"),
        proposal
    );
    assert!(Proposal::new(5, add).encode().is_err());
}

/// A `[gslb]` section as format 6 writes it; format 5 cannot.
const GSLB_V6: &str = "7f06b7011701007f000001e9290967736c622e7465737405000d6e73312e67736c622e7465737414686f73746d61737465722e67736c622e74657374901cd80480a30505010d6e73312e67736c622e746573740100c6120001010d7777772e67736c622e7465737402000201610100c6120101010102657501903f0103474554072f72656164797a00c8018f030001000100020301620200c61202010120010db800000000000000000000000101000001000a0000000802657500";

const GSLB_FILE: &str = "[node]\nid = 1\ndata_dir = \"d\"\n\n\
    [gslb]\nbind = \"127.0.0.1:5353\"\nzone = \"gslb.test\"\nns = [\"ns1.gslb.test\"]\n\
    glue = { \"ns1.gslb.test\" = \"198.18.0.1\" }\n\n\
    [[gslb.regions]]\ncidr = \"10.0.0.0/8\"\nregion = \"eu\"\n\n\
    [[gslb.names]]\nname = \"www.gslb.test\"\npolicy = \"geo\"\n\n\
    [[gslb.names.sites]]\nname = \"a\"\naddress = \"198.18.1.1\"\nregion = \"eu\"\n\
    check = { type = \"http\", port = 8080, path = \"/readyz\", interval = \"1s\" }\n\n\
    [[gslb.names.sites]]\nname = \"b\"\naddress = [\"198.18.2.1\", \"2001:db8::1\"]\n";

#[test]
fn a_gslb_section_needs_format_six() {
    let config = raftlb_config::parse("gslb.toml", GSLB_FILE).expect("a valid sample");
    let gslb = config.cluster.gslb.clone().expect("[gslb]");
    assert_eq!(config.cluster.format_needed(), 6);
    let set = Command::SetGslb(Some(gslb));
    assert_eq!(set.format_needed(), 6);
    let proposal = Proposal::new(6, set.clone());
    assert_eq!(hex(&proposal.encode().unwrap()), GSLB_V6);
    assert_eq!(Proposal::decode(&unhex(GSLB_V6)).expect("decodes"), proposal);
    // A cluster of format 5 refuses it; the spec inside cannot be written there.
    let mut state = ClusterState::default();
    for version in 2..=5 {
        assert!(state.apply(Command::SetClusterVersion(version)).is_applied());
    }
    let refused = state.apply(set.clone());
    assert!(
        refused.rejection().contains("needs cluster version 6"),
        "{refused:?}"
    );
    assert!(
        Proposal::new(5, Command::Bootstrap(config.cluster))
            .encode()
            .is_err()
    );
    // Applied: verdicts are kept for its sites only, and the serial moves.
    assert!(state.apply(Command::SetClusterVersion(6)).is_applied());
    assert!(state.apply(set).is_applied());
    let verdict = |site: &str| Command::SetSiteHealth {
        name: "www.gslb.test".into(),
        site: site.into(),
        up: false,
        load: 0,
    };
    assert!(state.apply(verdict("a")).is_applied());
    assert!(!state.apply(verdict("zz")).is_applied());
    assert_eq!(state.site_verdicts().serial, 2);
    let bytes = snapshot_data::encode(&state, &StickyTables::default()).unwrap();
    assert_eq!(snapshot_data::decode(&bytes, None).unwrap(), state);
    assert!(state.apply(Command::SetGslb(None)).is_applied());
    assert!(state.site_verdicts().sites.is_empty());
}

#[test]
fn gslb_mistakes_name_the_key() {
    let bad = GSLB_FILE.replace("policy = \"geo\"", "policy = \"nearest\"");
    let errors = raftlb_config::parse("gslb.toml", &bad).unwrap_err().to_string();
    assert!(errors.contains("gslb.names[0].policy"), "{errors}");
    assert!(errors.contains("unknown policy \"nearest\""), "{errors}");
    let outside = GSLB_FILE.replace("name = \"www.gslb.test\"", "name = \"www.other.test\"");
    let errors = raftlb_config::parse("gslb.toml", &outside)
        .unwrap_err()
        .to_string();
    assert!(errors.contains("not inside the zone"), "{errors}");
    let no_port = GSLB_FILE.replace("port = 8080, ", "");
    let errors = raftlb_config::parse("gslb.toml", &no_port)
        .unwrap_err()
        .to_string();
    assert!(errors.contains("gslb.names[0].sites[0].check.port"), "{errors}");
}
