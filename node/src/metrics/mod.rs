//! `[node] metrics = "IP:PORT"`: Prometheus text exposition on `GET
//! /metrics`, `GET /healthz` (the process answers), `GET /readyz` (200
//! once [ready](crate::readiness), else 503 saying why; its `X-Raftlb-Load`
//! header is the active connections and requests, for GSLB) and the status
//! page's `/` and `/api/*` (see [`crate::status_page`]), served on the
//! control plane's runtime, never on a data-plane worker. What it shows:
//! Raft ([`raft`]), the VIPs configured here and their leases ([`vip`]),
//! the process and build ([`process`]), and the sticky
//! tables (entries per pool, hits, misses, re-sticks, proposals, sessions
//! rate-limited or shed, replication lag), backend health as this node routes by it
//! (availability, panic, ejections, retries), clients refused by each
//! listener's ACL, per-source limits and HTTP deadlines, when this node's cluster
//! certificate expires, and DNS discovery's lookups and failures ([`discovery`]).

mod discovery;
mod process;
mod raft;
mod traffic;
mod vip;

use crate::control::ControlPlane;
use crate::control::gauges::Gauges;
use crate::control::leadership::Leadership;
use crate::control::types::Metrics;
use crate::dataplane::admission::Refusal;
use crate::pki::Keyring;
use crate::readiness::Readiness;
use crate::sticky::metrics::StickyMetrics;
use crate::view::SharedView;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use raftlb_config::{RaftTiming, StickyTables};
use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the metrics are read from.
#[derive(Clone)]
struct Sources {
    raft: watch::Receiver<Metrics>,
    leadership: watch::Receiver<Leadership>,
    timing: RaftTiming,
    started: Instant,
    vips: watch::Receiver<Vec<String>>,
    /// Commit index, proposal queue, snapshot, leader changes, VIP leases.
    gauges: Gauges,
    tables: Arc<StickyTables>,
    sticky: Arc<StickyMetrics>,
    view: SharedView,
    /// This node's cluster certificate, for its expiry.
    keyring: Option<Arc<Keyring>>,
    readiness: watch::Receiver<Readiness>,
}

/// Serves `/metrics` on `address` until the task is aborted.
pub async fn serve(
    address: SocketAddr,
    control: &ControlPlane,
    timing: RaftTiming,
    view: SharedView,
    readiness: watch::Receiver<Readiness>,
) -> std::io::Result<JoinHandle<()>> {
    let (listener, registration) =
        crate::upgrade::sockets::listen_tcp(crate::upgrade::sockets::Kind::Metrics, address)?;
    let page = control.observatory();
    let sources = Sources {
        raft: control.raft_metrics(),
        leadership: control.leadership(),
        timing,
        started: Instant::now(),
        vips: control.vip_control().held_report.subscribe(),
        gauges: control.gauges(),
        tables: control.sticky_tables(),
        sticky: control.sticky_metrics(),
        keyring: control.keyring(),
        view,
        readiness,
    };
    tracing::info!(%address, "serving /metrics");
    Ok(tokio::spawn(async move {
        let _registration = registration;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of descriptors: pause rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            };
            let sources = sources.clone();
            let page = page.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let sources = sources.clone();
                    let page = page.clone();
                    async move {
                        let authorization = request
                            .headers()
                            .get(http::header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok());
                        let paged = match request.method() {
                            &Method::GET => page.answer(request.uri().path(), peer.ip(), authorization).await,
                            _ => None,
                        };
                        Ok::<_, Infallible>(paged.unwrap_or_else(|| answer(&request, &sources)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}

fn answer(request: &Request<Incoming>, sources: &Sources) -> Response<Full<Bytes>> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, render(sources)),
        (&Method::GET, "/healthz") => (StatusCode::OK, "ok\n".to_string()),
        (&Method::GET, "/readyz") => {
            let readiness = *sources.readiness.borrow();
            let status = match readiness.is_ready() {
                true => StatusCode::OK,
                false => StatusCode::SERVICE_UNAVAILABLE,
            };
            (status, format!("{}\n", readiness.describe()))
        }
        _ => (
            StatusCode::NOT_FOUND,
            "try /, /metrics, /healthz or /readyz\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if request.uri().path() == "/readyz" {
        // What a GSLB `least_loaded` policy of another cluster reads.
        let load: usize = sources
            .view
            .load()
            .pools()
            .flat_map(|p| p.members())
            .map(|b| b.active())
            .sum();
        response.headers_mut().insert(
            crate::health::probe::LOAD_HEADER,
            http::HeaderValue::from(load as u64),
        );
    }
    response
}

/// The exposition text.
fn render(s: &Sources) -> String {
    let mut out = String::new();
    let raft = s.raft.borrow().clone();
    let no_quorum = s.leadership.borrow().without_quorum(s.timing, s.started);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP raftlb_{name} {help}\n# TYPE raftlb_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "raftlb_{name}{labels} {value}");
        }
    };
    let one = |value: f64| vec![(String::new(), value)];
    raft::render(&mut metric, &raft, &s.gauges, no_quorum);
    vip::render(&mut metric, &s.gauges.vip, &s.vips.borrow());
    discovery::render(&mut metric, &s.gauges.discovery);
    if let Some(keyring) = &s.keyring {
        let not_after = keyring.material().not_after;
        metric(
            "cluster_certificate_expiry_seconds",
            "gauge",
            "When this node's cluster certificate expires (Unix time).",
            &one(not_after as f64),
        );
        metric(
            "cluster_certificate_expiring",
            "gauge",
            "1 from 14 days before this node's cluster certificate expires.",
            &one(f64::from(u8::from(crate::pki::watch::expires_soon(not_after)))),
        );
    }
    let entries: Vec<(String, f64)> = s
        .tables
        .stats()
        .into_iter()
        .map(|t| (format!("{{pool=\"{}\"}}", t.pool), t.entries as f64))
        .collect();
    metric(
        "sticky_entries",
        "gauge",
        "Committed sticky sessions per pool.",
        &entries,
    );
    let m = &s.sticky;
    for (name, help, counter) in [
        (
            "sticky_hits_total",
            "Requests and connections sent to their session's backend.",
            &m.hits,
        ),
        ("sticky_misses_total", "New sticky sessions.", &m.misses),
        (
            "sticky_resticks_total",
            "Sessions moved because their backend could not take them.",
            &m.resticks,
        ),
        (
            "sticky_proposals_total",
            "Sticky sessions this node proposed.",
            &m.proposals,
        ),
        (
            "sticky_failed_proposals_total",
            "Sticky proposals refused or lost.",
            &m.failed_proposals,
        ),
        (
            "sticky_shed_proposals_total",
            "Sticky sessions not proposed: their share of the proposal queue was full.",
            &m.shed_proposals,
        ),
    ] {
        metric(
            name,
            "counter",
            help,
            &one(counter.load(Ordering::Relaxed) as f64),
        );
    }
    let rate_limited: Vec<(String, f64)> = m
        .rate_limited_by_pool()
        .into_iter()
        .map(|(pool, n)| (format!("{{pool=\"{pool}\"}}"), n as f64))
        .collect();
    metric(
        "sticky_rate_limited_total",
        "counter",
        "New sticky sessions served without stickiness: this node's learn_rate for the pool was spent.",
        &rate_limited,
    );
    let lag = m.lag();
    metric(
        "sticky_replication_lag_seconds",
        "summary",
        "Stuck (on any node) to applied here, over the last sessions applied.",
        &[
            ("{quantile=\"0.5\"}".to_string(), f64::from(lag.p50_ms) / 1000.0),
            ("{quantile=\"0.99\"}".to_string(), f64::from(lag.p99_ms) / 1000.0),
        ],
    );
    health(&mut metric, &s.view);
    clients(&mut metric, &s.view);
    process::render(&mut out);
    traffic::render(&mut out, &s.view);
    out
}

/// What each listener's admission refused, and the sources it tracks.
fn clients(metric: &mut impl FnMut(&str, &str, &str, &[(String, f64)]), view: &SharedView) {
    let view = view.load();
    let mut listeners: Vec<_> = view.listeners().collect();
    listeners.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let refused: Vec<(String, f64)> = listeners
        .iter()
        .flat_map(|l| {
            Refusal::ALL.map(|reason| {
                (
                    format!("{{listener=\"{}\",reason=\"{}\"}}", l.spec.name, reason.name()),
                    l.guard.refused(reason) as f64,
                )
            })
        })
        .collect();
    metric(
        "client_refusals_total",
        "counter",
        "Connections, sessions and requests refused by the listener's ACL, per-source limits or HTTP deadlines and caps, on this node.",
        &refused,
    );
    let sources: Vec<(String, f64)> = listeners
        .iter()
        .map(|l| {
            (
                format!("{{listener=\"{}\"}}", l.spec.name),
                l.guard.sources().tracked() as f64,
            )
        })
        .collect();
    metric(
        "client_sources",
        "gauge",
        "Client sources the listener's per-source limits track on this node (a fixed-size table).",
        &sources,
    );
}

/// Backend health as this node's data plane sees it.
fn health(metric: &mut impl FnMut(&str, &str, &str, &[(String, f64)]), view: &SharedView) {
    let view = view.load();
    let mut pools: Vec<_> = view.pools().collect();
    pools.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let mut available = Vec::new();
    let mut active = Vec::new();
    for pool in &pools {
        for backend in pool.members() {
            let labels = format!(
                "{{pool=\"{}\",backend=\"{}\"}}",
                pool.spec.name,
                backend.address()
            );
            available.push((labels.clone(), f64::from(u8::from(backend.available()))));
            active.push((labels, backend.active() as f64));
        }
    }
    metric(
        "backend_available",
        "gauge",
        "1 while this node may send new work to the backend (health checks, ejection, panic).",
        &available,
    );
    metric(
        "backend_active",
        "gauge",
        "Open L4 connections plus in-flight HTTP requests this node has at the backend (what max_connections caps).",
        &active,
    );
    // A u64 does not fit a float exactly, so the fingerprint is a label.
    let tables: Vec<(String, f64)> = pools
        .iter()
        .filter_map(|p| {
            let fingerprint = p.balancer.table_fingerprint()?;
            Some((
                format!("{{pool=\"{}\",fingerprint=\"{fingerprint:016x}\"}}", p.spec.name),
                1.0,
            ))
        })
        .collect();
    metric(
        "balancer_table",
        "gauge",
        "The fingerprint of a pool's lookup table (maglev): equal on every node.",
        &tables,
    );
    let per_pool = |value: &dyn Fn(&crate::health::PoolRuntime) -> f64| -> Vec<(String, f64)> {
        pools
            .iter()
            .map(|p| (format!("{{pool=\"{}\"}}", p.spec.name), value(&p.runtime)))
            .collect()
    };
    metric(
        "pool_panic",
        "gauge",
        "1 while too few backends are healthy and health is ignored.",
        &per_pool(&|r| f64::from(u8::from(r.panic.load(Ordering::Relaxed)))),
    );
    metric(
        "outlier_ejections_total",
        "counter",
        "Backends ejected by outlier detection.",
        &per_pool(&|r| r.ejections_total.load(Ordering::Relaxed) as f64),
    );
    metric(
        "retries_total",
        "counter",
        "Requests sent again to another backend.",
        &per_pool(&|r| r.retries_total.load(Ordering::Relaxed) as f64),
    );
    metric(
        "retries_refused_total",
        "counter",
        "Retries the retry budget refused.",
        &per_pool(&|r| r.retries_refused_total.load(Ordering::Relaxed) as f64),
    );
    let queued: Vec<(String, f64)> = pools
        .iter()
        .map(|p| (format!("{{pool=\"{}\"}}", p.spec.name), p.queue.queued() as f64))
        .collect();
    metric(
        "pool_queued",
        "gauge",
        "Connections and requests waiting on this node for a backend under max_connections.",
        &queued,
    );
    let refusals: Vec<(String, f64)> = pools
        .iter()
        .flat_map(|p| {
            [
                ("full", &p.queue.refused_full_total),
                ("timeout", &p.queue.timed_out_total),
            ]
            .map(|(reason, count)| {
                (
                    format!("{{pool=\"{}\",reason=\"{reason}\"}}", p.spec.name),
                    count.load(Ordering::Relaxed) as f64,
                )
            })
        })
        .collect();
    metric(
        "pool_queue_refusals_total",
        "counter",
        "Work refused because every backend stayed at max_connections: the queue was full, or queue_timeout passed.",
        &refusals,
    );
}
