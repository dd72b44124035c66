//! TLS certificates as the cluster replicates them: a name, the PEM
//! certificate chain and the PEM private key, exactly as `raftlb ctl cert
//! add` read them (and checked there: parsable, key matching, not expired).
//! Nodes parse them when they build their view; the log and snapshots hold
//! the key, which is why a node's data dir is private to its user.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One named certificate with its key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The leaf first, then any intermediates.
    pub chain_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("chain_pem_bytes", &self.chain_pem.len())
            .finish_non_exhaustive()
    }
}
