//! `[[listener.route]]`: parsed into ordered rules, and every mistake named
//! with file, line, key and reason.

use raftlb_config::{Protocol, parse};

const POOLS: &str = r#"
[[pool]]
name = "app"
backends = [{ address = "127.0.0.1:9001" }]

[[pool]]
name = "api"
backends = [{ address = "127.0.0.1:9002" }]
"#;

fn config(listener: &str) -> String {
    format!("[node]\nid = 1\n\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\n{listener}\n{POOLS}")
}

fn errors(listener: &str) -> Vec<String> {
    match parse("lb.toml", &config(listener)) {
        Ok(c) => panic!("expected errors for {listener:?}, got {c:?}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn routes_parse_in_order() {
    let text = config(
        r#"protocol = "http"

[[listener.route]]
match = { host = "API.example.com", path_prefix = "/api", method = "get", header = { "X-Env" = "canary" }, cookie = { beta = "1" } }
pool = "api"
set_headers = { "X-Route" = "api" }
remove_headers = ["X-Internal"]

[[listener.route]]
match = { path_regex = "^/v[0-9]+/" }
pool = "app"
"#,
    );
    let config = parse("lb.toml", &text).expect("valid");
    let listener = &config.cluster.listeners[0];
    assert_eq!(listener.protocol, Protocol::Http);
    assert_eq!(listener.pool, None, "routes alone, no default pool");
    let first = &listener.routes[0];
    assert_eq!(first.pool, "api");
    assert_eq!(first.matches.host.as_deref(), Some("api.example.com"));
    assert_eq!(first.matches.methods, ["GET"]);
    assert_eq!(
        first.matches.headers,
        [("X-Env".to_string(), "canary".to_string())]
    );
    assert_eq!(first.set_headers, [("X-Route".to_string(), "api".to_string())]);
    assert_eq!(
        listener.routes[1].matches.path_regex.as_deref(),
        Some("^/v[0-9]+/")
    );
}

#[test]
fn route_mistakes_are_named() {
    let cases = [
        (
            "protocol = \"http\"\n[[listener.route]]\npool = \"nope\"\n",
            "listener[0].route[0].pool: no pool named \"nope\"",
        ),
        (
            "protocol = \"http\"\n",
            "listener[0].pool: an http listener needs a pool",
        ),
        (
            "protocol = \"tcp\"\npool = \"app\"\n[[listener.route]]\npool = \"api\"\n",
            "listener[0].route: routes only apply to http listeners, this one is tcp",
        ),
        (
            "protocol = \"http\"\npool = \"app\"\n[[listener.route]]\nmatch = { path_regex = \"(\" }\npool = \"api\"\n",
            "listener[0].route[0].match.path_regex: invalid regular expression",
        ),
        (
            "protocol = \"http\"\npool = \"app\"\n[[listener.route]]\nmatch = { host = \"a b\" }\npool = \"api\"\n",
            "invalid host \"a b\"",
        ),
        (
            "protocol = \"http\"\npool = \"app\"\n[[listener.route]]\nmatch = { path = \"x\" }\npool = \"api\"\n",
            "must start with '/'",
        ),
        (
            "protocol = \"http\"\npool = \"app\"\n[[listener.route]]\nmatch = { colour = \"red\" }\npool = \"api\"\n",
            "listener[0].route[0].match.colour: unknown key",
        ),
        (
            "protocol = \"http\"\npool = \"app\"\n[[listener.route]]\nmatch = { method = [\"G T\"] }\npool = \"api\"\n",
            "invalid method \"G T\"",
        ),
        (
            "protocol = \"http\"\npool = \"app\"\n[[listener.route]]\npool = \"api\"\nremove_headers = [\"Bad Header\"]\n",
            "invalid header name \"Bad Header\"",
        ),
    ];
    for (listener, expected) in cases {
        let errors = errors(listener);
        assert!(
            errors
                .iter()
                .any(|e| e.contains(expected) && e.starts_with("lb.toml:")),
            "{listener:?}: expected {expected:?} in {errors:?}"
        );
    }
}

#[test]
fn the_replicated_state_keeps_route_pools_existing() {
    use raftlb_config::{ClusterState, Command, RouteSpec};
    let text = config("protocol = \"http\"\npool = \"app\"\n");
    let config = parse("lb.toml", &text).expect("valid");
    let mut state = ClusterState::default();
    assert!(
        state
            .apply(Command::Bootstrap(config.cluster.clone()))
            .is_applied()
    );
    let mut listener = config.cluster.listeners[0].clone();
    listener.routes.push(RouteSpec {
        pool: "gone".to_string(),
        ..RouteSpec::default()
    });
    let outcome = state.apply(Command::UpdateListener(listener.clone()));
    assert!(
        outcome
            .rejection()
            .contains("uses pool \"gone\", which does not exist"),
        "{outcome:?}"
    );
    listener.routes[0].pool = "api".to_string();
    assert!(state.apply(Command::UpdateListener(listener)).is_applied());
    let outcome = state.apply(Command::RemovePool {
        name: "api".to_string(),
    });
    assert!(
        !outcome.is_applied(),
        "a pool a route uses cannot go: {outcome:?}"
    );
}
