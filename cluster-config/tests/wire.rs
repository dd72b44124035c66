//! The postcard encoding of commands: unchanged by the bounded decoding (the
//! Raft logs already written must still decode), and bounded: nesting and
//! list lengths beyond the limits fail to decode, however deep the bytes go.

mod hex;
mod hostile;

use hex::{hex, unhex};
use proptest::prelude::*;
use raftlb_config::limits::{MAX_BATCH_COMMANDS, MAX_NESTING};
use raftlb_config::{
    AclChange, AdminState, BackendSpec, Certificate, ClientLimits, ClusterSpec, Command, ListenerSpec,
    PoolSpec, StickyChange, StickyKey, StickySecret,
};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};

fn addr(port: u16) -> SocketAddr {
    ([10, 0, 0, 1], port).into()
}

/// Commands with their encoding as the derived `Deserialize` (before the
/// bounds) produced it, recorded then.
fn recorded() -> Vec<(Command, &'static str)> {
    let example = raftlb_config::parse("raftlb.toml", include_str!("../../node/examples/raftlb.toml"))
        .expect("the example is valid");
    vec![
        (
            Command::AddBackend {
                pool: "app".into(),
                backend: BackendSpec::new(addr(9001)),
            },
            // Re-recorded when backends gained `max_connections` (as above).
            "0703617070000a000001a946010000",
        ),
        (
            Command::Batch(vec![
                Command::AddBackend {
                    pool: "app".into(),
                    backend: BackendSpec {
                        address: "[2001:db8::1]:443".parse().expect("an address"),
                        weight: 7,
                        state: AdminState::Drain,
                        max_connections: Some(100),
                        discovered: false,
                    },
                },
                Command::SetWeight {
                    pool: "app".into(),
                    address: addr(9001),
                    weight: 1000,
                },
            ]),
            "0b0207036170700120010db8000000000000000000000001bb03070101640903617070000a000001a946e807",
        ),
        (
            Command::Independent(vec![
                Command::Batch(vec![Command::RemoveBackend {
                    pool: "app".into(),
                    address: addr(9002),
                }]),
                Command::Sticky(StickyChange::Stick {
                    pool: "app".into(),
                    key: StickyKey::of(b"abc"),
                    backend: addr(9001),
                    replaces: None,
                    at_ms: 1_700_000_000_000,
                }),
                Command::ReportHealth {
                    node: 3,
                    pool: "app".into(),
                    address: addr(9001),
                    up: false,
                },
                Command::AssignVip {
                    address: "198.18.0.100".parse().expect("an address"),
                    owner: Some(2),
                },
            ]),
            concat!(
                "0c040b010803617070000a000001aa460e0003617070ba7816bf8f01cfea414140de5dae2223000a000001",
                "a9460080d095ffbc31120303617070000a000001a946000d00c61200640102"
            ),
        ),
        (
            Command::SetStickySecret(StickySecret([7; 32])),
            "0f0707070707070707070707070707070707070707070707070707070707070707",
        ),
        (
            Command::PutCertificate {
                name: "site".into(),
                certificate: Certificate {
                    chain_pem: "C".into(),
                    key_pem: "K".into(),
                },
            },
            "1004736974650143014b",
        ),
        (
            // Re-recorded when listeners gained `upgrades`, `limits` and
            // `acl`, HTTP listeners `body_min_rate`, `send_timeout` and
            // `max_backend_streams`, and pools and backends their
            // connection limits (before any release; issue 19 versions the
            // formats).
            Command::Bootstrap(example.cluster),
            concat!(
                "00030377656200007f000001903f010361707000904e4b001e004b0080800164808080323c0080083c0020ac",
                "02000109776562736f636b6574000001e807e807d00f904ea09c0120400007646e732d74637002007f000001",
                "e9290103646e7300904eac02001e004b0080800164808080323c0080083c0020ac02000109776562736f636b",
                "6574000001e807e807d00f904ea09c0120400007646e732d75647003007f000001e9290103646e7300904e1e",
                "001e004b0080800164808080323c0080083c0020ac02000109776562736f636b6574000001e807e807d00f90",
                "4ea09c012040000203617070010002007f000001a946010000007f000001aa4603000003003c000300000000",
                "00320000011403008008050003646e73020002007f000001b529010000007f000001b62901000003003c0003",
                "00000000003200000114030080080500",
            ),
        ),
    ]
}

#[test]
fn recorded_encodings_decode_the_same_and_are_still_produced() {
    for (command, recorded) in recorded() {
        assert_eq!(
            hex(&postcard::to_stdvec(&command).unwrap()),
            recorded,
            "{command}"
        );
        assert_eq!(
            postcard::from_bytes::<Command>(&unhex(recorded)).unwrap(),
            command
        );
    }
}

/// `Command` as it was declared before the bounds: the plain derive.
#[derive(Serialize)]
enum Legacy {
    Bootstrap(ClusterSpec),
    AddListener(ListenerSpec),
    UpdateListener(ListenerSpec),
    RemoveListener {
        name: String,
    },
    AddPool(PoolSpec),
    UpdatePool(PoolSpec),
    RemovePool {
        name: String,
    },
    AddBackend {
        pool: String,
        backend: BackendSpec,
    },
    RemoveBackend {
        pool: String,
        address: SocketAddr,
    },
    SetWeight {
        pool: String,
        address: SocketAddr,
        weight: u32,
    },
    SetAdminState {
        pool: String,
        address: SocketAddr,
        state: AdminState,
    },
    Batch(Vec<Legacy>),
    Independent(Vec<Legacy>),
    AssignVip {
        address: IpAddr,
        owner: Option<u64>,
    },
    Sticky(StickyChange),
    SetStickySecret(StickySecret),
    PutCertificate {
        name: String,
        certificate: Certificate,
    },
    RemoveCertificate {
        name: String,
    },
    ReportHealth {
        node: u64,
        pool: String,
        address: SocketAddr,
        up: bool,
    },
    SetClientLimits {
        listener: String,
        limits: ClientLimits,
    },
    ChangeAcl {
        listener: String,
        change: AclChange,
    },
}

fn legacy(command: &Command) -> Legacy {
    match command.clone() {
        Command::Bootstrap(spec) => Legacy::Bootstrap(spec),
        Command::AddListener(l) => Legacy::AddListener(l),
        Command::UpdateListener(l) => Legacy::UpdateListener(l),
        Command::RemoveListener { name } => Legacy::RemoveListener { name },
        Command::AddPool(p) => Legacy::AddPool(p),
        Command::UpdatePool(p) => Legacy::UpdatePool(p),
        Command::RemovePool { name } => Legacy::RemovePool { name },
        Command::AddBackend { pool, backend } => Legacy::AddBackend { pool, backend },
        Command::RemoveBackend { pool, address } => Legacy::RemoveBackend { pool, address },
        Command::SetWeight {
            pool,
            address,
            weight,
        } => Legacy::SetWeight {
            pool,
            address,
            weight,
        },
        Command::SetAdminState { pool, address, state } => Legacy::SetAdminState { pool, address, state },
        Command::Batch(commands) => Legacy::Batch(commands.iter().map(legacy).collect()),
        Command::Independent(commands) => Legacy::Independent(commands.iter().map(legacy).collect()),
        Command::AssignVip { address, owner } => Legacy::AssignVip { address, owner },
        Command::Sticky(change) => Legacy::Sticky(change),
        Command::SetStickySecret(secret) => Legacy::SetStickySecret(secret),
        Command::PutCertificate { name, certificate } => Legacy::PutCertificate { name, certificate },
        Command::RemoveCertificate { name } => Legacy::RemoveCertificate { name },
        Command::ReportHealth {
            node,
            pool,
            address,
            up,
        } => Legacy::ReportHealth {
            node,
            pool,
            address,
            up,
        },
        Command::SetClientLimits { listener, limits } => Legacy::SetClientLimits { listener, limits },
        Command::ChangeAcl { listener, change } => Legacy::ChangeAcl { listener, change },
        Command::SetClusterVersion(_) => unreachable!("format 2 only; the generator makes format-1 commands"),
        Command::SetDiscovered(_) | Command::SetGslb(_) | Command::SetSiteHealth { .. } => {
            unreachable!("format 6 only; the generator makes format-1 commands")
        }
    }
}

fn depth(command: &Command) -> usize {
    match command {
        Command::Batch(commands) | Command::Independent(commands) => {
            1 + commands.iter().map(depth).max().unwrap_or(0)
        }
        _ => 0,
    }
}

proptest! {
    #[test]
    fn the_old_encoding_decodes_the_same(command in hostile::command()) {
        let old = postcard::to_stdvec(&legacy(&command)).unwrap();
        prop_assert_eq!(&old, &postcard::to_stdvec(&command).unwrap());
        // Compared as bytes: serde drops an IPv6 address's scope and flow
        // label, so the value itself may differ (as it always did).
        match postcard::from_bytes::<Command>(&old) {
            Ok(decoded) => prop_assert_eq!(postcard::to_stdvec(&decoded).unwrap(), old),
            Err(_) => prop_assert!(depth(&command) > MAX_NESTING, "{command:.200?}"),
        }
    }
}

/// `levels` batches, one inside the other, around `RemoveListener { "" }`.
fn nested(levels: usize, batch: u8) -> Vec<u8> {
    let mut bytes = [batch, 1].repeat(levels);
    bytes.extend([3, 0]);
    bytes
}

const BATCH: u8 = 11;
const INDEPENDENT: u8 = 12;

#[test]
fn nesting_is_bounded_before_the_decoder_goes_deeper() {
    for tag in [BATCH, INDEPENDENT] {
        assert_eq!(
            depth(&postcard::from_bytes(&nested(MAX_NESTING, tag)).unwrap()),
            2
        );
        assert!(postcard::from_bytes::<Command>(&nested(MAX_NESTING + 1, tag)).is_err());
    }
    let mut mixed = vec![INDEPENDENT, 1];
    mixed.extend(nested(2, BATCH));
    assert!(postcard::from_bytes::<Command>(&mixed).is_err());
    // A million levels, on a thread with a small stack: refused at the third.
    let deep = nested(1_000_000, BATCH);
    let refused = std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(move || {
            let refused = postcard::from_bytes::<Command>(&deep).is_err();
            // Every level opened was closed: a shallow command still decodes.
            refused && postcard::from_bytes::<Command>(&nested(MAX_NESTING, BATCH)).is_ok()
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(refused);
}

#[test]
fn list_lengths_are_bounded_before_allocating() {
    // Reserving room for the announced length would abort the process.
    for length in [MAX_BATCH_COMMANDS as u64 + 1, u64::from(u32::MAX), u64::MAX >> 1] {
        let mut bytes = vec![BATCH];
        bytes.extend(postcard::to_stdvec(&length).unwrap());
        assert!(postcard::from_bytes::<Command>(&bytes).is_err());
    }
    // A list announcing more than it holds fails at the end of the bytes.
    let mut short = vec![BATCH];
    short.extend(postcard::to_stdvec(&1000u64).unwrap());
    short.extend([3, 0]);
    assert!(postcard::from_bytes::<Command>(&short).is_err());
}
