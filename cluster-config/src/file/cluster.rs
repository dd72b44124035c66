//! The `[cluster]` section: the cluster id, this node's Raft address, the
//! first voters, Raft's clocks, and how the links between nodes (and to
//! `raftlb ctl`) are secured: `[cluster.tls]` (mutual TLS with the
//! cluster's certificates) or, on loopback only, `insecure_cleartext`.

use super::across;
use crate::peer_address::PeerAddress;
use crate::reader::{Field, Reader, Section};
use crate::spec::{LinkSecurity, MembershipSpec, NodeSpec, RaftTiming, TlsFiles, VipOnQuorumLoss};
use std::collections::BTreeMap;

/// `[cluster]`: present means this node serves Raft and the admin API on
/// `raft`, so it needs an id and a way to secure its links; `peers` lists
/// the first voters.
pub(super) fn membership(
    reader: &mut Reader<'_>,
    mut s: Section<'_, '_>,
    node: Option<&NodeSpec>,
) -> Option<MembershipSpec> {
    let id_field = s.required(reader, "id");
    let cluster_id = id_field.as_ref().and_then(|f| {
        let id = reader.str(f)?;
        across::name(reader, f, id);
        Some(id.to_string())
    });
    for removed in ["token", "token_file"] {
        if let Some(f) = s.optional(removed) {
            reader.field_error(
                &f,
                "the shared cluster token is gone: nodes and clients prove who they are with certificates. \
                 Make them with `raftlb certs init --cluster ID --out DIR --nodes 1,2,3` and set [cluster.tls] \
                 ca_file, cert_file and key_file (or insecure_cleartext = true for a cluster on loopback)",
            );
        }
    }
    let tls_field = s.optional("tls");
    let tls = tls_field
        .as_ref()
        .and_then(|f| reader.table(f))
        .and_then(|section| tls_files(reader, section));
    let cleartext_field = s.optional("insecure_cleartext");
    let cleartext = cleartext_field.as_ref().and_then(|f| reader.bool(f));
    let raft = s.required(reader, "raft").and_then(|f| reader.socket_addr(&f));
    let advertise = match s.optional("advertise") {
        Some(f) => reader.peer_address(&f).map(Some),
        None => Some(None),
    };
    let peers_field = s.optional("peers");
    let peers = match &peers_field {
        Some(f) => peers(reader, f),
        None => Some(BTreeMap::new()),
    };
    let timing = raft_timing(reader, &mut s);
    let vip_on_quorum_loss = match s.optional("vip_on_quorum_loss") {
        Some(f) => reader.choice(
            &f,
            "vip_on_quorum_loss",
            &[
                ("release", VipOnQuorumLoss::Release),
                ("hold", VipOnQuorumLoss::Hold),
            ],
        ),
        None => Some(VipOnQuorumLoss::default()),
    };
    let max_message_bytes = match s.optional("max_message_bytes") {
        Some(f) => reader
            .uint(&f, 1 << 20, 1 << 30)
            .and_then(|n| usize::try_from(n).ok()),
        None => Some(MembershipSpec::DEFAULT_MAX_MESSAGE_BYTES),
    };
    let apply_file_on_reload = match s.optional("apply_file_on_reload") {
        Some(f) => reader.bool(&f),
        None => Some(false),
    };
    let section_span = s.span();
    s.finish(reader);

    let (raft, advertise, peers, node) = (raft?, advertise?, peers?, node?);
    let advertised = advertise.clone().unwrap_or(PeerAddress::from(raft));
    // A node missing from `peers` is not an initial voter: it waits to be
    // added with `raftlb ctl member add`.
    if let (Some(f), Some(listed)) = (&peers_field, peers.get(&node.id))
        && *listed != advertised
    {
        let whose = match advertise {
            Some(_) => "advertised address (advertise)",
            None => "raft address",
        };
        reader.field_error(
            f,
            format!(
                "lists node {} at {listed}, but this node's {whose} is {advertised}",
                node.id
            ),
        );
    }
    let links = match (tls_field.is_some(), cleartext) {
        (true, Some(true)) => {
            if let Some(f) = &cleartext_field {
                reader.field_error(
                    f,
                    "give either [cluster.tls] or insecure_cleartext = true, not both",
                );
            }
            None
        }
        (true, _) => tls.map(LinkSecurity::Tls),
        (false, Some(true)) => {
            let outside = std::iter::once((node.id, advertised.clone()))
                .chain(peers.iter().map(|(id, a)| (*id, a.clone())))
                .find(|(_, address)| !address.is_loopback());
            match (outside, &cleartext_field) {
                (Some((id, address)), Some(f)) => {
                    reader.field_error(
                        f,
                        format!(
                            "insecure_cleartext is allowed only when every Raft address is a loopback address, \
                             and node {id}'s is {address}: anyone on that network could read and forge the \
                             cluster's traffic. Use [cluster.tls] (make certificates with `raftlb certs init`)"
                        ),
                    );
                    None
                }
                _ => Some(LinkSecurity::InsecureCleartext),
            }
        }
        (false, _) => {
            reader.error(
                section_span,
                "cluster.tls",
                "missing: set [cluster.tls] ca_file, cert_file and key_file (make them with `raftlb certs init \
                 --cluster ID --out DIR --nodes 1,2,3`), or insecure_cleartext = true for a cluster whose Raft \
                 addresses are all loopback addresses",
            );
            None
        }
    };
    Some(MembershipSpec {
        cluster_id: cluster_id?,
        links: links?,
        raft: Some(raft),
        advertise,
        peers,
        timing: timing?,
        vip_on_quorum_loss: vip_on_quorum_loss?,
        max_message_bytes: max_message_bytes?,
        apply_file_on_reload: apply_file_on_reload?,
    })
}

/// `[cluster.tls]`: the three PEM files, each required.
fn tls_files(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> Option<TlsFiles> {
    let mut path = |reader: &mut Reader<'_>, key: &'static str| {
        let field = s.required(reader, key)?;
        let text = reader.str(&field)?;
        if text.trim().is_empty() {
            reader.field_error(&field, "must name a file");
            return None;
        }
        Some(text.to_string())
    };
    let ca_file = path(reader, "ca_file");
    let cert_file = path(reader, "cert_file");
    let key_file = path(reader, "key_file");
    s.finish(reader);
    Some(TlsFiles {
        ca_file: ca_file?,
        cert_file: cert_file?,
        key_file: key_file?,
    })
}

/// `heartbeat_interval` and `election_timeout`: the leader must get several
/// heartbeats through within one election timeout, or followers depose it
/// while it is healthy.
fn raft_timing(reader: &mut Reader<'_>, s: &mut Section<'_, '_>) -> Option<RaftTiming> {
    let mut timing = RaftTiming::default();
    let heartbeat = s.optional("heartbeat_interval");
    let election = s.optional("election_timeout");
    if let Some(f) = &heartbeat {
        timing.heartbeat_interval = reader.duration(f)?;
    }
    if let Some(f) = &election {
        timing.election_timeout = reader.duration(f)?;
    }
    // The defaults satisfy the bound, so a violation names a field that was set.
    if let Some(f) = election.as_ref().or(heartbeat.as_ref())
        && timing.election_timeout < timing.heartbeat_interval * 3
    {
        let message = format!(
            "election_timeout ({:?}) must be at least 3 × heartbeat_interval ({:?})",
            timing.election_timeout, timing.heartbeat_interval
        );
        reader.field_error(f, message);
        return None;
    }
    Some(timing)
}

/// `peers = { 1 = "10.0.0.1:7000", 2 = "lb2.example:7000", … }`: node id →
/// the address the others dial it at.
fn peers(reader: &mut Reader<'_>, field: &Field<'_, '_>) -> Option<BTreeMap<u64, PeerAddress>> {
    let entries = reader.entries(field)?;
    let mut peers = BTreeMap::new();
    let mut ok = true;
    for (key, value) in entries {
        let id = key.parse::<u64>().ok().filter(|id| *id >= 1);
        let address = reader.peer_address(&value);
        match (id, address) {
            (Some(id), Some(address)) => {
                if let Some((other, _)) = peers.iter().find(|(_, a)| **a == address) {
                    reader.field_error(&value, format!("address {address} is already node {other}'s"));
                    ok = false;
                }
                peers.insert(id, address);
            }
            (None, _) => {
                reader.field_error(
                    &value,
                    format!("\"{key}\" is not a node id (expected an integer ≥ 1)"),
                );
                ok = false;
            }
            _ => ok = false,
        }
    }
    ok.then_some(peers)
}
