//! The pool keys about failing backends, and the health verdicts the state
//! keeps: parsed with their defaults, refused with file, line, key and
//! reason, and reports applied, refused and forgotten with their backends.

use raftlb_config::{ClusterState, Command, Outcome, Probe, parse};
use std::time::Duration;

fn config(pool_extra: &str) -> String {
    format!(
        "[node]\nid = 1\n\n[[pool]]\nname = \"app\"\nbackends = [{{ address = \"127.0.0.1:9001\" }}, {{ address = \"127.0.0.1:9002\" }}]\n{pool_extra}"
    )
}

fn errors(pool_extra: &str) -> Vec<String> {
    match parse("lb.toml", &config(pool_extra)) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn defaults_without_any_health_key() {
    let config = parse("lb.toml", &config("")).expect("valid");
    let health = &config.cluster.pool("app").expect("pool").health;
    assert!(health.check.is_none() && health.outlier.is_none());
    assert_eq!(health.panic_threshold, 50);
    assert_eq!(health.slow_start, Duration::ZERO);
    assert_eq!(health.retry.attempts, 1);
    assert_eq!(health.retry.budget_percent, 20);
}

#[test]
fn every_key_is_read() {
    let extra = "slow_start = \"30s\"\npanic_threshold = 30\n\
        [pool.health_check]\ntype = \"http\"\nmethod = \"HEAD\"\npath = \"/healthz\"\nhost = \"app.example\"\n\
        expect_status = \"200-299\"\nexpect_body = \"ok\"\ninterval = \"5s\"\ntimeout = \"2s\"\nrise = 3\nfall = 4\n\
        [pool.outlier]\nconsecutive_failures = 7\nbase_ejection_time = \"10s\"\nmax_ejection_time = \"1m\"\nmax_ejection_percent = 20\n\
        [pool.retry]\nattempts = 2\nbudget_percent = 10\nmin_per_second = 5\n";
    let parsed = parse("lb.toml", &config(extra)).expect("valid");
    let health = &parsed.cluster.pool("app").expect("pool").health;
    let check = health.check.as_ref().expect("check");
    assert_eq!(
        (check.interval, check.timeout, check.rise, check.fall),
        (Duration::from_secs(5), Duration::from_secs(2), 3, 4)
    );
    let Probe::Http(http) = &check.probe else {
        panic!("an http probe")
    };
    assert_eq!((http.method.as_str(), http.path.as_str()), ("HEAD", "/healthz"));
    assert_eq!(http.host.as_deref(), Some("app.example"));
    assert_eq!(http.expect_status, (200, 299));
    assert_eq!(http.expect_body.as_deref(), Some("ok"));
    let outlier = health.outlier.as_ref().expect("outlier");
    assert_eq!(outlier.consecutive_failures, 7);
    assert_eq!(outlier.max_ejection_time, Duration::from_secs(60));
    assert_eq!(
        (
            health.retry.attempts,
            health.retry.budget_percent,
            health.retry.min_per_second
        ),
        (2, 10, 5)
    );
    assert_eq!(
        (health.slow_start, health.panic_threshold),
        (Duration::from_secs(30), 30)
    );

    let tcp = parse(
        "lb.toml",
        &config("[pool.health_check]\nexpect_status = 204\ntype = \"http\"\n"),
    )
    .expect("valid");
    let check = tcp
        .cluster
        .pool("app")
        .expect("pool")
        .health
        .check
        .clone()
        .expect("check");
    assert!(matches!(check.probe, Probe::Http(ref h) if h.expect_status == (204, 204) && h.path == "/"));
}

#[test]
fn bad_values_name_file_line_key_and_reason() {
    let cases = [
        (
            "[pool.health_check]\ntype = \"icmp\"\n",
            "lb.toml:8: pool[0].health_check.type: unknown type \"icmp\" (valid: \"tcp\", \"http\")",
        ),
        (
            "[pool.health_check]\npath = \"/x\"\n",
            "lb.toml:8: pool[0].health_check.path: only an http health check takes this key (type = \"http\")",
        ),
        (
            "[pool.health_check]\ntype = \"http\"\nexpect_status = \"299-200\"\n",
            "lb.toml:9: pool[0].health_check.expect_status: expected a status (200) or a range (\"200-399\") within 100-599",
        ),
        (
            "[pool.health_check]\ninterval = \"1s\"\ntimeout = \"2s\"\n",
            "lb.toml:9: pool[0].health_check.timeout: a probe's timeout cannot exceed the interval between probes",
        ),
        (
            "[pool.health_check]\nrise = 0\n",
            "lb.toml:8: pool[0].health_check.rise: 0 is out of range (expected 1 to 100)",
        ),
        (
            "[pool.outlier]\nbase_ejection_time = \"1m\"\nmax_ejection_time = \"10s\"\n",
            "lb.toml:9: pool[0].outlier.max_ejection_time: max_ejection_time cannot be shorter than base_ejection_time",
        ),
        (
            "panic_threshold = 101\n",
            "lb.toml:7: pool[0].panic_threshold: 101 is out of range (expected 0 to 100)",
        ),
        (
            "[pool.retry]\nattemps = 2\n",
            "lb.toml:8: pool[0].retry.attemps: unknown key (expected one of: attempts, budget_percent, min_per_second)",
        ),
    ];
    for (extra, expected) in cases {
        let errors = errors(extra);
        assert!(
            errors.iter().any(|e| e == expected),
            "for\n{extra}\nexpected\n  {expected}\ngot\n  {}",
            errors.join("\n  ")
        );
    }
}

#[test]
fn reports_are_kept_per_node_refused_for_unknown_backends_and_forgotten_with_them() {
    let config = parse("lb.toml", &config("")).expect("valid");
    let mut state = ClusterState::default();
    assert!(state.apply(Command::Bootstrap(config.cluster)).is_applied());
    let address = "127.0.0.1:9002".parse().unwrap();
    let report = |node, up| Command::ReportHealth {
        node,
        pool: "app".to_string(),
        address,
        up,
    };
    assert!(state.apply(report(1, false)).is_applied());
    assert!(state.apply(report(2, true)).is_applied());
    assert_eq!(state.health().verdict("app", address, 1), Some(false));
    assert_eq!(state.health().verdict("app", address, 2), Some(true));
    assert!(state.apply(report(1, true)).is_applied());
    assert_eq!(state.health().verdict("app", address, 1), Some(true));

    let unknown = Command::ReportHealth {
        node: 1,
        pool: "app".to_string(),
        address: "127.0.0.1:1".parse().unwrap(),
        up: true,
    };
    assert_eq!(
        state.apply(unknown),
        Outcome::Rejected("no backend 127.0.0.1:1 in pool \"app\"".to_string())
    );
    assert!(
        state
            .apply(Command::RemoveBackend {
                pool: "app".to_string(),
                address
            })
            .is_applied()
    );
    assert_eq!(
        state.health().verdicts("app", address),
        None,
        "forgotten with the backend"
    );
}
