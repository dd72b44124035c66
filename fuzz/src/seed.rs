//! A small cluster for the decoding targets to apply what they decode to:
//! listeners of every protocol, a route, and pools with and without sticky
//! sessions, so that most commands find what they name.

use raftlb_config::{ClusterState, Command, Config};

/// The file the cluster is bootstrapped from.
pub const CONFIG: &str = r#"
[node]
id = 1
data_dir = "/tmp/raftlb-fuzz"

[[listener]]
name = "web"
protocol = "http"
bind = "127.0.0.1:8080"
pool = "app"

[[listener.route]]
match = { path_prefix = "/api", method = ["GET", "POST"] }
pool = "api"
set_headers = { "X-Route" = "api" }

[[listener]]
name = "dns"
protocol = "udp"
bind = "127.0.0.1:5353"
pool = "dns"

[[pool]]
name = "app"
backends = [{ address = "127.0.0.1:9001", weight = 2 }, { address = "127.0.0.1:9002" }]

[pool.sticky]
kind = "cookie"

[[pool]]
name = "api"
algorithm = "least_connections"
backends = [{ address = "127.0.0.1:9101" }]

[pool.sticky]
kind = "header"
name = "X-Session"

[[pool]]
name = "dns"
backends = [{ address = "127.0.0.1:5301" }]

[pool.sticky]
kind = "source_ip"
"#;

/// [`CONFIG`], parsed.
pub fn config() -> Config {
    raftlb_config::parse("seed.toml", CONFIG).expect("the seed config is valid")
}

/// A cluster state bootstrapped from [`CONFIG`].
pub fn state() -> ClusterState {
    let mut state = ClusterState::default();
    let outcome = state.apply(Command::Bootstrap(config().cluster));
    assert!(outcome.is_applied(), "{outcome:?}");
    state
}
