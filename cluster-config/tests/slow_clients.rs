//! The keys for slow and greedy HTTP clients (`body_min_rate`,
//! `send_timeout`, `max_backend_streams`): parsed with their defaults, each
//! mistake named with its file, line and key, and the same bounds checked
//! on values that come through the admin API.

mod file_errors;

use file_errors::{HEAD, errors, has};
use raftlb_config::{ClusterState, Command, HttpLimits, Outcome, parse};
use std::time::Duration;

#[test]
fn defaults_and_given_values() {
    let config = parse("lb.toml", HEAD).expect("valid");
    let http = &config.cluster.listeners[0].http;
    assert_eq!(http.body_min_rate, 1024);
    assert_eq!(http.send_timeout, Duration::from_secs(60));
    assert_eq!(http.max_backend_streams, 32);
    assert_eq!(http, &HttpLimits::default());

    let tail =
        "body_timeout = \"10s\"\nbody_min_rate = 0\nsend_timeout = \"5s\"\nmax_backend_streams = 100\n";
    let config = parse("lb.toml", &format!("{HEAD}{tail}")).expect("valid");
    let http = &config.cluster.listeners[0].http;
    assert_eq!(http.body_timeout, Duration::from_secs(10));
    assert_eq!(http.body_min_rate, 0, "0 turns the rate off");
    assert_eq!(http.send_timeout, Duration::from_secs(5));
    assert_eq!(http.max_backend_streams, 100);
}

#[test]
fn each_mistake_is_named() {
    let text = format!(
        "{HEAD}body_min_rate = 1073741825\nsend_timeout = \"0s\"\nmax_backend_streams = 0\n\
         [[listener]]\nname = \"api\"\nprotocol = \"http\"\nbind = \"127.0.0.1:8081\"\npool = \"app\"\n\
         body_min_rate = \"fast\"\nsend_timeout = 30\nmax_backend_streams = 101\n"
    );
    let errors = errors(&text);
    has(
        &errors,
        "lb.toml:14: listener[0].body_min_rate: 1073741825 is out of range (expected 0 to 1073741824)",
    );
    has(
        &errors,
        "lb.toml:15: listener[0].send_timeout: must be greater than zero",
    );
    has(
        &errors,
        "lb.toml:16: listener[0].max_backend_streams: 0 is out of range (expected 1 to 100)",
    );
    has(
        &errors,
        "lb.toml:22: listener[1].body_min_rate: expected an integer, found string",
    );
    has(
        &errors,
        "lb.toml:23: listener[1].send_timeout: expected a string, found integer",
    );
    has(
        &errors,
        "lb.toml:24: listener[1].max_backend_streams: 101 is out of range (expected 1 to 100)",
    );
}

#[test]
fn they_apply_to_http_listeners_only() {
    let text = r#"
[node]
id = 1

[[pool]]
name = "db"
backends = [{ address = "127.0.0.1:5432" }]

[[listener]]
name = "pg"
protocol = "tcp"
bind = "127.0.0.1:5433"
pool = "db"
send_timeout = "10s"
"#;
    has(
        &errors(text),
        "lb.toml:14: listener[0].send_timeout: only applies to http listeners, this one is tcp",
    );
}

/// A change that makes valid limits invalid.
type Change = fn(&mut HttpLimits);

/// The admin API's values meet the file's bounds: `apply` refuses the
/// listener and changes nothing.
#[test]
fn the_same_bounds_hold_through_the_admin_api() {
    let config = parse("lb.toml", HEAD).expect("valid");
    let mut state = ClusterState::default();
    assert!(
        state
            .apply(Command::Bootstrap(config.cluster.clone()))
            .is_applied()
    );
    let cases: [(Change, &str); 5] = [
        (
            |h| h.send_timeout = Duration::ZERO,
            "listener \"web\": send_timeout must be greater than zero",
        ),
        (
            |h| h.body_min_rate = (1 << 30) + 1,
            "listener \"web\": body_min_rate 1073741825 is above 1073741824",
        ),
        (
            |h| h.max_backend_streams = 0,
            "listener \"web\": max_backend_streams 0 is below 1",
        ),
        (
            |h| h.max_backend_streams = 101,
            "listener \"web\": max_backend_streams 101 is above 100",
        ),
        (
            |h| h.send_timeout = Duration::MAX,
            "listener \"web\": send_timeout",
        ),
    ];
    for (change, reason) in cases {
        let mut listener = config.cluster.listeners[0].clone();
        change(&mut listener.http);
        let before = state.clone();
        match state.apply(Command::UpdateListener(listener)) {
            Outcome::Rejected(why) => assert!(why.contains(reason), "expected {reason:?} in {why:?}"),
            other => panic!("expected a rejection ({reason}), got {other:?}"),
        }
        assert_eq!(state, before);
    }
    let mut listener = config.cluster.listeners[0].clone();
    listener.http.body_min_rate = 0;
    listener.http.max_backend_streams = 100;
    assert!(state.apply(Command::UpdateListener(listener)).is_applied());
}
