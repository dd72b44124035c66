//! `[listener.limits]`, `[[listener.acl]]` and `upgrades`: parsed with their
//! defaults, and each mistake named with its file, line and key.

mod file_errors;

use file_errors::{HEAD, has};
use raftlb_config::{AclAction, ClientLimits, parse};

/// The errors of [`HEAD`] with `tail` appended.
fn errors(tail: &str) -> Vec<String> {
    file_errors::errors(&format!("{HEAD}{tail}"))
}

#[test]
fn defaults_and_given_values() {
    let config = parse("lb.toml", HEAD).expect("valid");
    let web = &config.cluster.listeners[0];
    assert_eq!(web.limits, ClientLimits::default());
    assert!(web.acl.is_empty());
    assert_eq!(web.http.upgrades, ["websocket"]);
    let tail = r#"upgrades = ["WebSocket", "chat"]
limits = { connections = 20, request_rate = 50000, source_prefix_v6 = 56 }

[[listener.acl]]
action = "deny"
sources = ["198.51.100.0/24", "203.0.113.7", "2001:db8::/32"]

[[listener.acl]]
action = "allow"
sources = ["198.51.100.128/25"]
"#;
    let config = parse("lb.toml", &format!("{HEAD}{tail}")).expect("valid");
    let web = &config.cluster.listeners[0];
    assert_eq!(web.http.upgrades, ["websocket", "chat"]);
    assert_eq!(web.limits.connections, 20);
    // A rate given alone gets two seconds of it as its burst.
    assert_eq!(
        (web.limits.request_rate, web.limits.request_burst),
        (50_000, 100_000)
    );
    assert_eq!(web.limits.source_prefix_v6, 56);
    let rules: Vec<(String, AclAction)> = web
        .acl
        .iter()
        .map(|r| (r.network.to_string(), r.action))
        .collect();
    assert_eq!(
        rules,
        [
            ("198.51.100.0/24".to_string(), AclAction::Deny),
            ("198.51.100.128/25".to_string(), AclAction::Allow),
            ("203.0.113.7/32".to_string(), AclAction::Deny),
            ("2001:db8::/32".to_string(), AclAction::Deny),
        ]
    );
}

#[test]
fn each_mistake_is_named() {
    has(
        &errors("limits = { conections = 1 }\n"),
        "lb.toml:14: listener[0].limits.conections: unknown key (expected one of: connection_burst, connection_rate, connections, request_burst, request_rate, source_prefix, source_prefix_v6)",
    );
    has(
        &errors("limits = { source_prefix = 33 }\n"),
        "lb.toml:14: listener[0].limits.source_prefix: 33 is out of range (expected 0 to 32)",
    );
    has(
        &errors("limits = { request_rate = 100, request_burst = 10 }\n"),
        "lb.toml:14: listener[0].limits: limits.request_burst 10 is below limits.request_rate 100 (a burst holds at least one second of the rate)",
    );
    has(
        &errors("\n[[listener.acl]]\naction = \"deny\"\nsources = [\"10.0.0.1/8\"]\n"),
        "lb.toml:17: listener[0].acl[0].sources[0]: 10.0.0.1/8 has bits set after the prefix; the network is 10.0.0.0/8",
    );
    has(
        &errors("\n[[listener.acl]]\naction = \"drop\"\nsources = [\"10.0.0.0/8\"]\n"),
        "lb.toml:16: listener[0].acl[0].action: unknown acl action \"drop\" (valid: \"allow\", \"deny\")",
    );
    has(
        &errors(
            "\n[[listener.acl]]\naction = \"deny\"\nsources = [\"10.0.0.0/8\"]\n[[listener.acl]]\naction = \"allow\"\nsources = [\"10.0.0.0/8\"]\n",
        ),
        "lb.toml:20: listener[0].acl[1].sources[0]: 10.0.0.0/8 is already listed at listener[0].acl[0].sources[0]",
    );
    let h2c = errors("upgrades = [\"websocket\", \"h2c\"]\n");
    assert!(
        h2c.iter()
            .any(|e| e.contains("upgrade protocol \"h2c\" would let clients bypass")),
        "{h2c:?}"
    );
}

#[test]
fn acl_and_limit_commands_change_the_named_listener_only() {
    use raftlb_config::{AclChange, AclRule, ClusterState, Command};
    let config = parse("lb.toml", HEAD).expect("valid");
    let mut state = ClusterState::default();
    assert!(state.apply(Command::Bootstrap(config.cluster)).is_applied());
    let deny = AclRule {
        network: "198.51.100.0/24".parse().unwrap(),
        action: AclAction::Deny,
    };
    let change = |listener: &str, change: AclChange| Command::ChangeAcl {
        listener: listener.to_string(),
        change,
    };
    let add = AclChange {
        set: vec![deny],
        remove: Vec::new(),
    };
    assert!(state.apply(change("web", add.clone())).is_applied());
    assert_eq!(state.spec().listeners[0].acl, [deny]);
    let missing = state.apply(change("api", add));
    assert!(
        missing.rejection().contains("no listener named \"api\""),
        "{missing:?}"
    );
    let remove = AclChange {
        set: Vec::new(),
        remove: vec![deny.network],
    };
    assert!(state.apply(change("web", remove)).is_applied());
    assert!(state.spec().listeners[0].acl.is_empty());

    let limits = ClientLimits {
        connections: 5,
        ..ClientLimits::default()
    };
    let set = |limits| Command::SetClientLimits {
        listener: "web".to_string(),
        limits,
    };
    assert!(state.apply(set(limits)).is_applied());
    assert_eq!(state.spec().listeners[0].limits.connections, 5);
    let bad = ClientLimits {
        request_burst: 1,
        ..limits
    };
    let refused = state.apply(set(bad));
    assert!(
        refused.rejection().contains("limits.request_burst 1 is below"),
        "{refused:?}"
    );
    assert_eq!(state.spec().listeners[0].limits, limits);
}
