//! `/api/status` put together: the members' `Observe` replies (or why a
//! member did not answer) merged with the listeners and pools of the
//! serving node's view into the JSON the page renders. Pure, so tested
//! as a function; the shape is documented in the module above.

use raftlb_config::{ListenerSpec, PoolSpec};
use raftlb_proto::admin::ObserveReply;
use serde::Serialize;
use std::collections::BTreeMap;

/// A member as the serving node's membership names it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: u64,
    pub address: String,
    /// "voter" or "learner".
    pub role: String,
}

/// What asking one member gave.
pub type Answer = Result<ObserveReply, String>;

#[derive(Debug, Serialize)]
pub struct Status {
    pub served_by: u64,
    pub cluster_id: String,
    pub at_ms: u64,
    /// The leader the reachable members name (the highest term's), if any.
    pub leader: Option<u64>,
    pub members: Vec<Member>,
    pub vips: Vec<Vip>,
    pub listeners: Vec<Listener>,
    pub pools: Vec<Pool>,
    /// Newest first, every member's merged.
    pub events: Vec<Event>,
}

#[derive(Debug, Serialize)]
pub struct Member {
    pub id: u64,
    pub address: String,
    /// "voter", "learner" or "witness".
    pub role: String,
    pub reachable: bool,
    /// Why it did not answer.
    pub error: Option<String>,
    pub state: Option<String>,
    pub term: Option<u64>,
    pub applied: Option<u64>,
    /// The leader's applied index minus this member's.
    pub lag: Option<u64>,
    pub certificate_not_after: Option<u64>,
    pub pid: Option<u32>,
    pub version: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Vip {
    pub vip: String,
    pub holders: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct Listener {
    pub name: String,
    pub protocol: &'static str,
    pub bind: String,
    pub pool: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Pool {
    pub name: String,
    pub algorithm: &'static str,
    /// Sticky entries per reachable node, when the pool is sticky.
    pub sticky: Option<BTreeMap<u64, u64>>,
    pub backends: Vec<Backend>,
}

#[derive(Debug, Serialize)]
pub struct Backend {
    pub address: String,
    /// "enabled", "drain" or "maintenance".
    pub admin_state: &'static str,
    pub weight: u32,
    /// Health by member id: "up", "down", "ejected", or "unknown" for a
    /// member that did not answer or does not route.
    pub health: BTreeMap<u64, String>,
    /// Summed over the members that answered.
    pub active: u64,
    pub requests: u64,
    pub errors: u64,
    pub connections: u64,
}

#[derive(Debug, Serialize)]
pub struct Event {
    pub node: u64,
    pub at_ms: u64,
    pub kind: String,
    pub text: String,
}

/// Events sent to the page.
const EVENTS_SHOWN: usize = 100;

/// Merges `answers` (one per member of `listed`, by id) with the specs.
pub fn merge(
    served_by: u64,
    at_ms: u64,
    listed: &[Listed],
    answers: &BTreeMap<u64, Answer>,
    listeners: &[&ListenerSpec],
    pools: &[&PoolSpec],
) -> Status {
    let replies: BTreeMap<u64, &ObserveReply> = answers
        .iter()
        .filter_map(|(id, answer)| Some((*id, answer.as_ref().ok()?)))
        .collect();
    let status = |id: u64| replies.get(&id).and_then(|r| r.status.as_ref());
    // The newest term's leader: a node cut off keeps naming an old one.
    let leader = replies
        .values()
        .filter_map(|r| r.status.as_ref())
        .filter(|s| s.leader_id != 0)
        .max_by_key(|s| s.term)
        .map(|s| s.leader_id);
    let leader_applied = leader.and_then(&status).map(|s| s.applied_index);
    let members = listed
        .iter()
        .map(|m| {
            let reply = replies.get(&m.id);
            let s = status(m.id);
            Member {
                id: m.id,
                address: m.address.clone(),
                role: match reply {
                    Some(r) if r.node_role == "witness" => "witness".to_string(),
                    _ => m.role.clone(),
                },
                reachable: reply.is_some(),
                error: match answers.get(&m.id) {
                    Some(Err(e)) => Some(e.clone()),
                    None => Some("not asked".to_string()),
                    Some(Ok(_)) => None,
                },
                state: s.map(|s| s.state.clone()),
                term: s.map(|s| s.term),
                applied: s.map(|s| s.applied_index),
                lag: s
                    .zip(leader_applied)
                    .map(|(s, at)| at.saturating_sub(s.applied_index)),
                certificate_not_after: reply.map(|r| r.certificate_not_after).filter(|at| *at != 0),
                pid: s.map(|s| s.pid),
                version: reply.map(|r| r.version.clone()),
            }
        })
        .collect();
    let mut vips: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (id, reply) in &replies {
        for vip in reply.status.iter().flat_map(|s| &s.vips) {
            vips.entry(vip.clone()).or_default().push(*id);
        }
    }
    let mut events: Vec<Event> = replies
        .iter()
        .flat_map(|(id, reply)| {
            reply.events.iter().map(|e| Event {
                node: *id,
                at_ms: e.at_ms,
                kind: e.kind.clone(),
                text: e.text.clone(),
            })
        })
        .collect();
    events.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then(a.node.cmp(&b.node)));
    events.truncate(EVENTS_SHOWN);
    Status {
        served_by,
        cluster_id: status(served_by)
            .map(|s| s.cluster_id.clone())
            .unwrap_or_default(),
        at_ms,
        leader,
        members,
        vips: vips
            .into_iter()
            .map(|(vip, holders)| Vip { vip, holders })
            .collect(),
        listeners: listeners
            .iter()
            .map(|l| Listener {
                name: l.name.clone(),
                protocol: l.protocol.name(),
                bind: l.bind.to_string(),
                pool: l.pool.clone(),
            })
            .collect(),
        pools: pools.iter().map(|p| pool(p, listed, &replies)).collect(),
        events,
    }
}

/// One pool's backends as every member sees them.
fn pool(spec: &PoolSpec, listed: &[Listed], replies: &BTreeMap<u64, &ObserveReply>) -> Pool {
    let seen = |id: u64| {
        replies
            .get(&id)
            .and_then(|r| r.pools.iter().find(|p| p.name == spec.name))
    };
    let backends = spec
        .backends
        .iter()
        .map(|b| {
            let address = b.address.to_string();
            let mut row = Backend {
                address: address.clone(),
                admin_state: b.state.name(),
                weight: b.weight,
                health: BTreeMap::new(),
                active: 0,
                requests: 0,
                errors: 0,
                connections: 0,
            };
            for m in listed {
                let observed = seen(m.id).and_then(|p| p.backends.iter().find(|o| o.address == address));
                let health = match observed {
                    Some(o) => {
                        row.active += o.active;
                        row.requests += o.requests;
                        row.errors += o.errors;
                        row.connections += o.connections;
                        o.health.clone()
                    }
                    None => "unknown".to_string(),
                };
                row.health.insert(m.id, health);
            }
            row
        })
        .collect();
    Pool {
        name: spec.name.clone(),
        algorithm: spec.algorithm.name(),
        sticky: spec.sticky.as_ref().map(|_| {
            listed
                .iter()
                .filter_map(|m| Some((m.id, seen(m.id)?.sticky_entries)))
                .collect()
        }),
        backends,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftlb_proto::admin::{ObservedBackend, ObservedEvent, ObservedPool, StatusReply};

    const FILE: &str = r#"
[node]
id = 1
[[pool]]
name = "app"
backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002", weight = 3, state = "drain" }]
[[listener]]
name = "web"
protocol = "http"
bind = "0.0.0.0:8080"
pool = "app"
"#;

    fn reply(id: u64, leader: u64, term: u64, applied: u64, requests: u64) -> ObserveReply {
        ObserveReply {
            status: Some(StatusReply {
                node_id: id,
                cluster_id: "lb".to_string(),
                state: if id == leader { "leader" } else { "follower" }.to_string(),
                term,
                leader_id: leader,
                applied_index: applied,
                vips: if id == leader {
                    vec!["10.0.0.100/24".to_string()]
                } else {
                    vec![]
                },
                pid: 100 + id as u32,
                ..StatusReply::default()
            }),
            node_role: "balancer".to_string(),
            version: "0.1.0".to_string(),
            certificate_not_after: 1_900_000_000,
            pools: vec![ObservedPool {
                name: "app".to_string(),
                sticky_entries: 0,
                backends: vec![ObservedBackend {
                    address: "127.0.0.1:9001".to_string(),
                    health: "up".to_string(),
                    active: 1,
                    requests,
                    errors: 1,
                    connections: 0,
                }],
            }],
            events: vec![ObservedEvent {
                seq: 1,
                at_ms: 1000 + id,
                kind: "leader".to_string(),
                text: format!("node {leader} leads (term {term})"),
            }],
        }
    }

    fn listed() -> Vec<Listed> {
        (1..=3)
            .map(|id| Listed {
                id,
                address: format!("127.0.0.{id}:7000"),
                role: "voter".to_string(),
            })
            .collect()
    }

    fn merged(answers: &BTreeMap<u64, Answer>) -> Status {
        let config = raftlb_config::parse("t.toml", FILE).expect("valid");
        let listeners: Vec<&ListenerSpec> = config.cluster.listeners.iter().collect();
        let pools: Vec<&PoolSpec> = config.cluster.pools.iter().collect();
        merge(1, 5000, &listed(), answers, &listeners, &pools)
    }

    #[test]
    fn every_member_is_merged_and_counters_are_summed() {
        let answers: BTreeMap<u64, Answer> = (1..=3)
            .map(|id| (id, Ok(reply(id, 2, 4, if id == 3 { 7 } else { 10 }, 10 * id))))
            .collect();
        let status = merged(&answers);
        assert_eq!(status.leader, Some(2));
        assert_eq!(status.cluster_id, "lb");
        let lags: Vec<Option<u64>> = status.members.iter().map(|m| m.lag).collect();
        assert_eq!(lags, vec![Some(0), Some(0), Some(3)]);
        assert!(status.members.iter().all(|m| m.reachable && m.error.is_none()));
        assert_eq!(status.vips.len(), 1);
        assert_eq!(status.vips[0].holders, vec![2]);
        let app = &status.pools[0];
        assert_eq!(app.backends[0].requests, 60);
        assert_eq!(app.backends[0].errors, 3);
        assert_eq!(app.backends[0].active, 3);
        assert_eq!(app.backends[1].admin_state, "drain");
        assert_eq!(app.backends[1].weight, 3);
        assert_eq!(
            app.backends[1].health.get(&2).map(String::as_str),
            Some("unknown")
        );
        assert_eq!(status.events.len(), 3);
        assert_eq!(status.events[0].node, 3, "newest first");
        assert_eq!(status.listeners[0].pool.as_deref(), Some("app"));
        let json = serde_json::to_value(&status).expect("json");
        assert_eq!(json["pools"][0]["backends"][0]["health"]["1"], "up");
    }

    #[test]
    fn a_member_that_does_not_answer_is_marked_not_fatal() {
        let mut answers: BTreeMap<u64, Answer> = BTreeMap::new();
        answers.insert(1, Ok(reply(1, 3, 5, 20, 5)));
        answers.insert(2, Err("no answer within 300ms".to_string()));
        // Node 3 names an old leader in an older term.
        answers.insert(3, Ok(reply(3, 2, 4, 18, 5)));
        let status = merged(&answers);
        assert_eq!(status.leader, Some(3), "the newest term wins");
        let down = &status.members[1];
        assert!(!down.reachable);
        assert_eq!(down.error.as_deref(), Some("no answer within 300ms"));
        assert_eq!(down.state, None);
        assert_eq!(down.lag, None);
        assert_eq!(status.members[0].lag, Some(0), "leader 3 applied 18, node 1 20");
        assert_eq!(
            status.pools[0].backends[0].health.get(&2).map(String::as_str),
            Some("unknown")
        );
        assert_eq!(status.pools[0].backends[0].requests, 10);
    }
}
