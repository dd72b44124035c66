//! Content routing through a real `raftlb` process: host (exact and
//! wildcard), path prefix, exact path, regex, method, header and cookie
//! matches; first match wins; header changes; the listener's pool as the
//! default, 404 without one; and routes changed through Raft (`ctl apply`)
//! served by every node.

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::client::{raw_get, raw_request};
use raftlb_tests::cluster::Cluster;
use raftlb_tests::free_port;
use raftlb_tests::process::{Raftlb, TempDir};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const POOLS: [&str; 8] = [
    "web", "products", "users", "admin", "items", "canary", "beta", "wild",
];

fn pools(backends: &BTreeMap<&str, HttpBackend>) -> String {
    POOLS
        .iter()
        .map(|name| {
            format!(
                "[[pool]]\nname = \"{name}\"\nbackends = [{{ address = \"{}\" }}]\n\n",
                backends[name].address
            )
        })
        .collect()
}

const ROUTES: &str = r#"
[[listener.route]]
match = { host = "api.example.com", path_prefix = "/api/products" }
pool = "products"
set_headers = { "X-Route" = "products" }
remove_headers = ["X-Internal"]

[[listener.route]]
match = { host = "api.example.com", path_prefix = "/api/users" }
pool = "users"

[[listener.route]]
match = { path = "/login", method = ["POST", "PUT"] }
pool = "admin"

[[listener.route]]
match = { path_regex = "^/items/[0-9]+$" }
pool = "items"

[[listener.route]]
match = { header = { "X-Env" = "canary" } }
pool = "canary"

[[listener.route]]
match = { cookie = { "beta" = "1" } }
pool = "beta"

[[listener.route]]
match = { host = "*.example.com" }
pool = "wild"
"#;

/// Method, path, headers, and the pool that must answer.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);

async fn answer(target: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let reply = raw_request(target, None, method, path, headers)
        .await
        .unwrap_or_else(|| panic!("no reply to {method} {path}"));
    (reply.status, reply.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_matching_route_wins_else_the_default_pool_else_404() {
    let mut backends = BTreeMap::new();
    for name in POOLS {
        backends.insert(name, HttpBackend::start(name).await);
    }
    let (web, strict) = (free_port(), free_port());
    let config = format!(
        "[node]\nid = 1\ndrain_timeout = \"1s\"\n\n\
         [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:{web}\"\npool = \"web\"\n{ROUTES}\n\
         [[listener]]\nname = \"strict\"\nprotocol = \"http\"\nbind = \"127.0.0.1:{strict}\"\n\n\
         [[listener.route]]\nmatch = {{ path_prefix = \"/only\" }}\npool = \"items\"\n\n{}",
        pools(&backends)
    );
    let web_bind = format!("127.0.0.1:{web}");
    let _node = Raftlb::start(&config, &[&web_bind, &format!("127.0.0.1:{strict}")]).await;
    let web: SocketAddr = web_bind.parse().expect("address");
    let api = ("Host", "api.example.com");
    let cases: &[Case] = &[
        ("GET", "/api/products/7", vec![api], "products"),
        (
            "GET",
            "/api/users",
            vec![("Host", "API.Example.com:8080")],
            "users",
        ),
        ("GET", "/api/orders", vec![api], "wild"),
        ("GET", "/", vec![("Host", "shop.example.com")], "wild"),
        ("GET", "/", vec![("Host", "example.com")], "web"),
        ("POST", "/login", vec![], "admin"),
        ("PUT", "/login", vec![], "admin"),
        ("GET", "/login", vec![], "web"),
        ("POST", "/login/x", vec![], "web"),
        ("GET", "/items/42", vec![], "items"),
        ("GET", "/items/x42", vec![], "web"),
        ("GET", "/", vec![("X-Env", "canary")], "canary"),
        ("GET", "/", vec![("X-Env", "prod")], "web"),
        ("GET", "/", vec![("Cookie", "a=b; beta=1")], "beta"),
        ("GET", "/", vec![("Cookie", "beta=0")], "web"),
        // Precedence: the regex route comes before the header route.
        ("GET", "/items/1", vec![("X-Env", "canary")], "items"),
        // A request matching nothing but the wildcard, with the canary header first.
        (
            "GET",
            "/",
            vec![("Host", "a.example.com"), ("X-Env", "canary")],
            "canary",
        ),
    ];
    for (method, path, headers, expected) in cases {
        let (status, body) = answer(web, method, path, headers).await;
        assert_eq!(
            (status, body.as_str()),
            (200, *expected),
            "{method} {path} {headers:?}"
        );
    }

    // A listener with routes and no pool: 404 for anything else.
    let strict: SocketAddr = format!("127.0.0.1:{strict}").parse().expect("address");
    assert_eq!(
        answer(strict, "GET", "/only/this", &[]).await,
        (200, "items".to_string())
    );
    let (status, body) = answer(strict, "GET", "/other", &[]).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_header_changes_reach_the_backend() {
    let echo = HttpBackend::start("echo").await;
    let bind = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "[node]\nid = 1\n\n[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"{bind}\"\npool = \"echo\"\n\n\
         [[listener.route]]\nmatch = {{ path = \"/headers\" }}\npool = \"echo\"\n\
         set_headers = {{ \"X-Route\" = \"headers\" }}\nremove_headers = [\"X-Internal\"]\n\n\
         [[pool]]\nname = \"echo\"\nbackends = [{{ address = \"{}\" }}]\n",
        echo.address
    );
    let _node = Raftlb::start(&config, &[&bind]).await;
    let reply = raw_get(
        bind.parse().expect("address"),
        None,
        "/headers",
        &[("X-Internal", "secret"), ("X-Route", "forged")],
    )
    .await
    .expect("reply");
    assert!(reply.body.contains("x-route: headers\n"), "{}", reply.body);
    assert!(
        !reply.body.contains("forged") && !reply.body.contains("x-internal"),
        "{}",
        reply.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_changed_on_one_node_are_served_by_every_node() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let pools = format!(
        "[[pool]]\nname = \"a\"\nbackends = [{{ address = \"{}\" }}]\n\n[[pool]]\nname = \"b\"\nbackends = [{{ address = \"{}\" }}]\n",
        a.address, b.address
    );
    let listener =
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"0.0.0.0:{HTTP}\"\npool = \"a\"\n";
    let cluster = Cluster::start(3, &format!("{listener}\n{pools}")).await;
    let node3: SocketAddr = cluster.members[2].http.parse().expect("address");
    assert_eq!(raw_get(node3, None, "/b/x", &[]).await.expect("reply").body, "a");

    // Add a route with `ctl apply` on node 1.
    let http_port = cluster.members[0].http.rsplit(':').next().expect("port");
    let file = TempDir::new("routes");
    let updated = format!(
        "[node]\nid = 1\n\n{}\n[[listener.route]]\nmatch = {{ path_prefix = \"/b/\" }}\npool = \"b\"\n\n{pools}",
        listener.replace("{HTTP}", http_port)
    );
    let path = file.write("routes.toml", &updated);
    let (status, out, err) = cluster.ctl(0, &["apply", "--config", &path.display().to_string()]);
    assert!(status.success(), "apply: {out}{err}");
    assert!(out.contains("update listener web"), "{out}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while raw_get(node3, None, "/b/x", &[]).await.map(|r| r.body) != Some("b".to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "node 3 never routed /b/ to pool b"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(raw_get(node3, None, "/a/x", &[]).await.expect("reply").body, "a");
}
