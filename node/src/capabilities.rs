//! The capabilities a non-root node runs with. The container image gives
//! the binary CAP_NET_ADMIN, CAP_NET_RAW and CAP_NET_BIND_SERVICE as
//! *permitted* file capabilities only (`+p`): a binary marked effective
//! (`+ep`) could not even start where one of them is withheld (`raftlb
//! ctl` in a container without CAP_NET_ADMIN, say). `raftlb run` raises
//! what it was permitted into its effective set here, before it binds or
//! touches netlink; for root, or under systemd's `AmbientCapabilities`,
//! they are effective already and nothing changes.

use caps::{CapSet, Capability};

/// What a node needs: VIPs (netlink, nftables, raw ARP) and low ports.
const NEEDED: [Capability; 3] = [
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_RAW,
    Capability::CAP_NET_BIND_SERVICE,
];

/// Makes every permitted capability effective; returns which of the
/// needed ones are missing (each limits what the node can do: the VIP
/// manager and low-port listeners say so when they fail).
pub fn raise_permitted() -> Result<Vec<Capability>, String> {
    let permitted = caps::read(None, CapSet::Permitted)
        .map_err(|e| format!("cannot read this process's capabilities: {e}"))?;
    caps::set(None, CapSet::Effective, &permitted)
        .map_err(|e| format!("cannot raise the permitted capabilities: {e}"))?;
    Ok(NEEDED.into_iter().filter(|c| !permitted.contains(c)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_keeps_the_effective_set_within_the_permitted_one() {
        let missing = raise_permitted().expect("capabilities readable");
        let permitted = caps::read(None, CapSet::Permitted).unwrap();
        let effective = caps::read(None, CapSet::Effective).unwrap();
        assert_eq!(effective, permitted);
        assert!(missing.iter().all(|c| !permitted.contains(c)));
    }
}
