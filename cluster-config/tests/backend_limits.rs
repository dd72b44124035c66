//! `max_connections` (pool and backend), `max_queue` and `queue_timeout`:
//! parsed with their defaults, each mistake named with its file, line and
//! key, and the same bounds on values that come through the admin API.

mod file_errors;

use file_errors::{errors, has};
use raftlb_config::{Command, ConnectionLimits, parse};
use std::time::Duration;

fn config(pool_keys: &str, backend_keys: &str) -> String {
    format!(
        r#"
[node]
id = 1

[[pool]]
name = "app"
backends = [{{ address = "127.0.0.1:9001"{backend_keys} }}, {{ address = "127.0.0.1:9002" }}]
{pool_keys}

[[listener]]
name = "web"
protocol = "http"
bind = "127.0.0.1:8080"
pool = "app"
"#
    )
}

#[test]
fn defaults_are_no_limit_with_a_bounded_queue() {
    let parsed = parse("lb.toml", &config("", "")).expect("valid");
    let pool = &parsed.cluster.pools[0];
    assert_eq!(pool.limits, ConnectionLimits::default());
    assert_eq!(pool.limits.max_connections, 0, "no limit unless asked");
    assert_eq!(pool.limits.max_queue, 1024);
    assert_eq!(pool.limits.queue_timeout, Duration::from_secs(5));
    assert!(pool.backends.iter().all(|b| b.max_connections.is_none()));
}

#[test]
fn given_values_per_pool_and_per_backend() {
    let text = config(
        "max_connections = 100\nmax_queue = 50\nqueue_timeout = \"2s\"",
        ", max_connections = 10",
    );
    let parsed = parse("lb.toml", &text).expect("valid");
    let pool = &parsed.cluster.pools[0];
    assert_eq!(
        pool.limits,
        ConnectionLimits {
            max_connections: 100,
            max_queue: 50,
            queue_timeout: Duration::from_secs(2),
        }
    );
    assert_eq!(pool.backends[0].max_connections, Some(10));
    assert_eq!(pool.backends[1].max_connections, None);
}

#[test]
fn mistakes_name_the_file_and_key() {
    has(
        &errors(&config("max_connections = -1", "")),
        "lb.toml:8: pool[0].max_connections: -1 is out of range (expected 0 to 1048576)",
    );
    has(
        &errors(&config("max_queue = 100000", "")),
        "lb.toml:8: pool[0].max_queue: 100000 is out of range (expected 0 to 65536)",
    );
    has(
        &errors(&config("queue_timeout = \"0s\"", "")),
        "lb.toml:8: pool[0].queue_timeout: must be greater than zero",
    );
    has(
        &errors(&config("", ", max_connections = \"many\"")),
        "lb.toml:7: pool[0].backends[0].max_connections: expected an integer, found string",
    );
}

#[test]
fn the_admin_api_has_the_same_bounds() {
    let parsed = parse("lb.toml", &config("", "")).expect("valid");
    let mut pool = parsed.cluster.pools[0].clone();
    pool.limits.max_queue = ConnectionLimits::MAX_QUEUE + 1;
    let invalid = Command::UpdatePool(pool.clone())
        .validate()
        .expect_err("too long a queue");
    assert!(invalid.0.contains("max_queue"), "{}", invalid.0);
    pool.limits.max_queue = 10;
    pool.backends[0].max_connections = Some(ConnectionLimits::MAX_CONNECTIONS + 1);
    let invalid = Command::UpdatePool(pool.clone())
        .validate()
        .expect_err("too many");
    assert!(invalid.0.contains("max_connections"), "{}", invalid.0);
    pool.backends[0].max_connections = Some(5);
    Command::UpdatePool(pool).validate().expect("within bounds");
}
