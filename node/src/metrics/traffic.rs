//! The traffic section of `/metrics`: what each listener, pool and backend
//! served through this node (responses by class, durations as histograms,
//! connections), backends' availability changes, and access log lines
//! dropped. Read from the counters [`Record`](crate::access_log::Record)s
//! feed, and from each backend's own ([`backend::traffic`](crate::backend::traffic)).

use crate::histogram::HistogramSnapshot;
use crate::view::SharedView;
use std::fmt::Write;

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Appends the traffic metrics to `out`.
pub fn render(out: &mut String, view: &SharedView) {
    let view = view.load();
    let mut listeners: Vec<_> = view.listeners().collect();
    listeners.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let mut pools: Vec<_> = view.pools().collect();
    pools.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let listeners: Vec<_> = listeners
        .iter()
        .map(|l| {
            (
                format!("listener=\"{}\"", escape(&l.spec.name)),
                l.traffic.snapshot(),
            )
        })
        .collect();
    let backends: Vec<_> = pools
        .iter()
        .flat_map(|p| {
            p.members().iter().map(|b| {
                let labels = format!("pool=\"{}\",backend=\"{}\"", escape(&p.spec.name), b.address());
                (labels, b.traffic().snapshot(), b.health().transitions())
            })
        })
        .collect();

    header(
        out,
        "listener_requests_total",
        "counter",
        "HTTP responses the listener sent, proxied or local, by status class.",
    );
    for (labels, s) in &listeners {
        by_class(out, "listener_requests_total", labels, &s.responses);
    }
    header(
        out,
        "listener_request_duration_seconds",
        "histogram",
        "From a request's head read to its response sent.",
    );
    for (labels, s) in &listeners {
        histogram(out, "listener_request_duration_seconds", labels, &s.duration);
    }
    header(
        out,
        "listener_connections",
        "gauge",
        "Open connections: active (a request in progress, or an L4 connection) or idle (HTTP keep-alive, waiting for a request).",
    );
    for (labels, s) in &listeners {
        sample(
            out,
            "listener_connections",
            &format!("{labels},state=\"active\""),
            s.active.max(0) as f64,
        );
        sample(
            out,
            "listener_connections",
            &format!("{labels},state=\"idle\""),
            s.idle.max(0) as f64,
        );
    }
    header(
        out,
        "listener_connections_total",
        "counter",
        "Connections the listener accepted and served (HTTPS: past the TLS handshake).",
    );
    for (labels, s) in &listeners {
        sample(out, "listener_connections_total", labels, s.accepted as f64);
    }

    header(
        out,
        "pool_requests_total",
        "counter",
        "HTTP responses to requests routed to the pool, proxied or local, by status class.",
    );
    for pool in &pools {
        let labels = format!("pool=\"{}\"", escape(&pool.spec.name));
        by_class(out, "pool_requests_total", &labels, &pool.traffic.responses());
    }

    header(
        out,
        "backend_responses_total",
        "counter",
        "Responses the backend sent, by status class.",
    );
    for (labels, s, _) in &backends {
        by_class(out, "backend_responses_total", labels, &s.responses);
    }
    header(
        out,
        "backend_failures_total",
        "counter",
        "Tries sent to the backend that got no response (connect failure, reset, timeout).",
    );
    for (labels, s, _) in &backends {
        sample(out, "backend_failures_total", labels, s.failures as f64);
    }
    header(
        out,
        "backend_response_duration_seconds",
        "histogram",
        "From sending a request to the backend to its response headers.",
    );
    for (labels, s, _) in &backends {
        histogram(out, "backend_response_duration_seconds", labels, &s.duration);
    }
    header(
        out,
        "backend_connections_total",
        "counter",
        "L4 connections opened to the backend.",
    );
    for (labels, s, _) in &backends {
        sample(out, "backend_connections_total", labels, s.connections as f64);
    }
    header(
        out,
        "backend_health_transitions_total",
        "counter",
        "Times this node's view of the backend's availability changed, by the state it changed to.",
    );
    for (labels, _, (up, down)) in &backends {
        sample(
            out,
            "backend_health_transitions_total",
            &format!("{labels},to=\"up\""),
            *up as f64,
        );
        sample(
            out,
            "backend_health_transitions_total",
            &format!("{labels},to=\"down\""),
            *down as f64,
        );
    }

    header(
        out,
        "access_log_dropped_total",
        "counter",
        "Access log lines dropped because the writer fell behind.",
    );
    sample(
        out,
        "access_log_dropped_total",
        "",
        crate::access_log::dropped() as f64,
    );
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP raftlb_{name} {help}\n# TYPE raftlb_{name} {kind}");
}

/// One sample; `labels` without braces, empty for none.
fn sample(out: &mut String, name: &str, labels: &str, value: f64) {
    match labels {
        "" => writeln!(out, "raftlb_{name} {value}"),
        _ => writeln!(out, "raftlb_{name}{{{labels}}} {value}"),
    }
    .unwrap_or(());
}

fn by_class(out: &mut String, name: &str, labels: &str, counts: &[u64; 5]) {
    for (class, count) in CLASSES.iter().zip(counts) {
        sample(out, name, &format!("{labels},class=\"{class}\""), *count as f64);
    }
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    for (le, count) in h.cumulative() {
        sample(
            out,
            &format!("{name}_bucket"),
            &format!("{labels},le=\"{le}\""),
            count as f64,
        );
    }
    sample(out, &format!("{name}_sum"), labels, h.sum_seconds);
    sample(out, &format!("{name}_count"), labels, h.count() as f64);
}

/// A label value as the exposition format quotes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::ClusterView;
    use arc_swap::ArcSwap;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn histograms_have_one_header_and_cumulative_buckets() {
        let config = raftlb_config::parse(
            "t.toml",
            "[node]\nid = 1\n[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:8080\"\npool = \"app\"\n\
             [[pool]]\nname = \"app\"\nbackends = [{ address = \"127.0.0.1:9000\" }]\n",
        )
        .expect("valid");
        let mut state = raftlb_config::ClusterState::default();
        state.apply(raftlb_config::Command::Bootstrap(config.cluster));
        let view = ClusterView::build(&state, 1, None, None);
        let web = view.listener("web").expect("web");
        web.traffic.response(200, Duration::from_millis(3));
        web.traffic.response(503, Duration::from_millis(30));
        let view: SharedView = Arc::new(ArcSwap::from_pointee(view));
        let mut out = String::new();
        render(&mut out, &view);
        assert_eq!(
            out.matches("# TYPE raftlb_listener_request_duration_seconds histogram")
                .count(),
            1
        );
        for line in [
            "raftlb_listener_requests_total{listener=\"web\",class=\"2xx\"} 1",
            "raftlb_listener_requests_total{listener=\"web\",class=\"5xx\"} 1",
            "raftlb_listener_request_duration_seconds_bucket{listener=\"web\",le=\"0.005\"} 1",
            "raftlb_listener_request_duration_seconds_bucket{listener=\"web\",le=\"+Inf\"} 2",
            "raftlb_listener_request_duration_seconds_count{listener=\"web\"} 2",
            "raftlb_backend_failures_total{pool=\"app\",backend=\"127.0.0.1:9000\"} 0",
            "raftlb_access_log_dropped_total 0",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line}:\n{out}");
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
