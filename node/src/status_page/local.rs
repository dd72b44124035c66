//! What this node tells the status page about itself (the admin API's
//! `Observe`): its status, how its own data plane sees each backend, its
//! sticky table sizes, its certificate's expiry and its recent events.

use crate::control::status::StatusView;
use crate::events::Events;
use crate::pki::Keyring;
use crate::view::SharedView;
use raftlb_config::StickyTables;
use raftlb_proto::admin::{ObserveReply, ObservedBackend, ObservedEvent, ObservedPool};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// This node's own detail.
#[derive(Clone)]
pub struct Observer {
    pub status: StatusView,
    pub events: Arc<Events>,
    pub keyring: Option<Arc<Keyring>>,
    pub sticky: Arc<StickyTables>,
    /// `[node] role` is `witness`.
    pub witness: bool,
    /// The data plane's view, once the node has one to show.
    pub view: Arc<OnceLock<SharedView>>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").finish_non_exhaustive()
    }
}

impl Observer {
    pub fn reply(&self) -> ObserveReply {
        let entries: HashMap<String, usize> = self
            .sticky
            .stats()
            .into_iter()
            .map(|t| (t.pool, t.entries))
            .collect();
        let mut pools: Vec<ObservedPool> = match self.view.get() {
            Some(view) => view
                .load()
                .pools()
                .map(|pool| ObservedPool {
                    name: pool.spec.name.clone(),
                    sticky_entries: entries.get(&pool.spec.name).map_or(0, |n| *n as u64),
                    backends: pool
                        .members()
                        .iter()
                        .map(|backend| {
                            let health = backend.health();
                            let traffic = backend.traffic().snapshot();
                            ObservedBackend {
                                address: backend.address().to_string(),
                                health: match (health.is_down(), health.is_ejected()) {
                                    (true, _) => "down",
                                    (false, true) => "ejected",
                                    (false, false) => "up",
                                }
                                .to_string(),
                                active: backend.active() as u64,
                                requests: traffic.requests(),
                                errors: traffic.errors(),
                                connections: traffic.connections,
                            }
                        })
                        .collect(),
                })
                .collect(),
            None => Vec::new(),
        };
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        ObserveReply {
            status: Some(self.status.reply()),
            node_role: if self.witness { "witness" } else { "balancer" }.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            certificate_not_after: self
                .keyring
                .as_ref()
                .map_or(0, |k| u64::try_from(k.material().not_after).unwrap_or(0)),
            pools,
            events: self
                .events
                .recent()
                .into_iter()
                .map(|e| ObservedEvent {
                    seq: e.seq,
                    at_ms: e.at_ms,
                    kind: e.kind.name().to_string(),
                    text: e.text,
                })
                .collect(),
        }
    }
}
