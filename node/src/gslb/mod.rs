//! GSLB: every balancer answers DNS for the `[gslb]` zone from the
//! committed state alone (the spec and the leader's site verdicts), so
//! every node gives the same answer and any node can serve. DNSSEC is out
//! of scope.
//!
//! - [`answer`]: one query to one response, pure (hickory-proto).
//! - [`server`]: the UDP and TCP sockets that feed it.
//! - [`sites`]: the leader's site checks, which commit verdicts.
//!
//! [`start`] follows the applied state: it swaps in a new [`Zone`] when
//! `[gslb]` or a verdict changes, and binds the sockets again when the
//! bind does (taking a predecessor's after an in-place upgrade, see
//! [`server`]).

pub mod answer;
pub mod server;
pub mod sites;

use crate::control::cluster::ControlPlane;
use arc_swap::ArcSwapOption;
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{Name, RData, Record};
use raftlb_config::gslb::{GslbSpec, SiteVerdicts};
use raftlb_config::spec::NodeSpec;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the DNS server answers from: one committed `[gslb]` and its
/// verdicts, with the records that do not depend on the query.
#[derive(Debug)]
pub struct Zone {
    pub spec: GslbSpec,
    pub verdicts: SiteVerdicts,
    soa: Record,
    ns: Vec<Record>,
    /// Addresses of the name servers inside the zone.
    glue: Vec<Record>,
    /// The node's secret for DNS server cookies.
    cookie_secret: [u8; 32],
}

impl Zone {
    /// The zone of `spec`, or why its names do not encode.
    pub fn build(spec: &GslbSpec, verdicts: &SiteVerdicts, cookie_secret: [u8; 32]) -> Result<Zone, String> {
        let name = |text: &str| Name::from_ascii(format!("{text}.")).map_err(|e| format!("\"{text}\": {e}"));
        let apex = name(&spec.zone)?;
        let soa = &spec.soa;
        let secs = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        let soa = Record::from_rdata(
            apex.clone(),
            soa.minimum,
            RData::SOA(SOA::new(
                name(&soa.mname)?,
                name(&soa.rname)?,
                verdicts.serial,
                secs(soa.refresh),
                secs(soa.retry),
                secs(soa.expire),
                soa.minimum,
            )),
        );
        let ttl = spec.soa.minimum.max(spec.ttl);
        let mut ns = Vec::new();
        let mut glue = Vec::new();
        for server in &spec.ns {
            let server_name = name(&server.name)?;
            ns.push(Record::from_rdata(
                apex.clone(),
                ttl,
                RData::NS(NS(server_name.clone())),
            ));
            if spec.in_zone(&server.name) {
                for ip in &server.addresses {
                    let rdata = match ip {
                        IpAddr::V4(v4) => RData::A(A::from(*v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA::from(*v6)),
                    };
                    glue.push(Record::from_rdata(server_name.clone(), ttl, rdata));
                }
            }
        }
        Ok(Zone {
            spec: spec.clone(),
            verdicts: verdicts.clone(),
            soa,
            ns,
            glue,
            cookie_secret,
        })
    }
}

/// The `[gslb]` of a config file's text (the fuzz target's fixed zone).
#[doc(hidden)]
pub fn fuzz_spec(file: &str) -> GslbSpec {
    match raftlb_config::parse("fuzz.toml", file) {
        Ok(config) => config
            .cluster
            .gslb
            .map(|g| *g)
            .unwrap_or_else(|| panic!("no [gslb]")),
        Err(e) => panic!("{e}"),
    }
}

/// How soon a DNS bind that failed is tried again.
const BIND_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// The zone being served, swapped as the state changes.
pub type SharedZone = Arc<ArcSwapOption<Zone>>;

/// A fresh secret for DNS cookies (zeroes if the OS has no randomness:
/// cookies then only lift the amplification limit for guessers too).
fn secret() -> [u8; 32] {
    let mut bytes = [0; 32];
    let _ = getrandom::fill(&mut bytes);
    bytes
}

/// The DNS server and the leader's site checks of this node.
#[derive(Debug)]
pub struct Gslb {
    /// The DNS server, following the applied state; aborted, it stops.
    pub server: JoinHandle<()>,
    /// The leader's site checks; aborted, they stop.
    pub checks: JoinHandle<()>,
    /// True once the server has followed a state as recent as the one
    /// committed when this node started (and so has taken a predecessor's
    /// sockets, if it serves them): inherited sockets nobody took may be
    /// closed from then on.
    pub settled: watch::Receiver<bool>,
}

/// Starts the DNS server and the leader's site checks of this node.
pub fn start(control: &ControlPlane, node: &NodeSpec, workers: usize) -> Gslb {
    let zone: SharedZone = Arc::new(ArcSwapOption::empty());
    let checks = sites::start(
        control.raft_metrics(),
        node.id,
        control.applied(),
        control.writer(),
    );
    let mut applied = control.applied();
    let node = node.clone();
    let committed_at_start = control.committed_at_start();
    let (settle, settled) = watch::channel(false);
    let following = tokio::spawn(async move {
        let cookie_secret = secret();
        let mut served: Option<(Box<GslbSpec>, SiteVerdicts)> = None;
        let mut bound: Option<(SocketAddr, server::Server)> = None;
        loop {
            let current = Arc::clone(&applied.borrow_and_update());
            let gslb = current.state.spec().gslb.clone();
            let verdicts = current.state.site_verdicts().clone();
            let now = gslb.clone().map(|g| (g, verdicts));
            let unbound = bound.is_none() && gslb.is_some();
            if now != served || unbound {
                match &now {
                    Some((spec, verdicts)) => match Zone::build(spec, verdicts, cookie_secret) {
                        Ok(built) => zone.store(Some(Arc::new(built))),
                        Err(e) => tracing::error!(error = %e, "GSLB zone not served"),
                    },
                    None => zone.store(None),
                }
                let want = gslb.as_ref().map(|g| node.local_bind(g.bind));
                if bound.as_ref().map(|(at, _)| *at) != want {
                    bound = None;
                    if let Some(at) = want {
                        match server::Server::bind(at, Arc::clone(&zone), workers) {
                            Ok(server) => {
                                tracing::info!(bind = %at, "GSLB: answering DNS");
                                bound = Some((at, server));
                            }
                            Err(e) => {
                                tracing::error!(bind = %at, error = %e, "GSLB: cannot bind the DNS server")
                            }
                        }
                    }
                }
                served = now;
            }
            let index = current.last_applied.map_or(0, |id| id.index);
            if index >= committed_at_start {
                settle.send_replace(true);
            }
            // A bind that failed (the port still held by a predecessor
            // draining after an in-place upgrade, say) is tried again.
            let retry = bound.is_none() && served.is_some();
            let changed = match retry {
                true => tokio::time::timeout(BIND_RETRY, applied.changed())
                    .await
                    .unwrap_or(Ok(())),
                false => applied.changed().await,
            };
            if changed.is_err() {
                std::future::pending::<()>().await;
            }
        }
    });
    Gslb {
        server: following,
        checks,
        settled,
    }
}
