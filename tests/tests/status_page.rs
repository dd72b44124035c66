//! The status page in a real browser (Debian's `chromium`, headless,
//! driven over the Chrome DevTools Protocol) against a real 3-node
//! cluster: members with one leader, backends, live request rates, a
//! drain seen within 2 s, a killed leader replaced and shown unreachable
//! within 3 s, no script error, and a screenshot that is not blank
//! (written to `deploy/status-page.png` with `RAFTLB_SAVE_SCREENSHOT=1`).
//! Also: off loopback, the page wants `[node] status_token_file`.

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use futures_util::{SinkExt, StreamExt};
use raftlb_tests::backends::HttpBackend;
use raftlb_tests::cluster::{Cluster, http_seed};
use raftlb_tests::process::{Raftlb, TempDir, profile_dir};
use raftlb_tests::{client, free_port, wait};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless chromium and a DevTools connection to one of its pages.
struct Browser {
    child: Child,
    page: Socket,
    next_id: u64,
    /// Script exceptions and console errors seen so far.
    errors: Vec<String>,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromium, or says why it cannot (`None`: not installed).
    async fn start() -> Option<Browser> {
        let installed = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("chromium").is_file()));
        if !installed {
            assert!(
                std::env::var("RAFTLB_REQUIRE_TOOLS").as_deref() != Ok("1"),
                "chromium is not installed and RAFTLB_REQUIRE_TOOLS=1 (apt-get install chromium)"
            );
            eprintln!("SKIPPED: chromium is not installed (apt-get install chromium)");
            return None;
        }
        let profile = TempDir::new("chromium");
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--remote-debugging-port=0",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end, so chromium never blocks on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let browser_url = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("chromium printed no \"DevTools listening on ws://…\"");
        let (mut browser, _) = tokio_tungstenite::connect_async(&browser_url)
            .await
            .expect("DevTools connection");
        let target = call_on(
            &mut browser,
            1,
            "Target.createTarget",
            json!({"url": "about:blank"}),
            &mut Vec::new(),
        )
        .await;
        let target_id = target["targetId"].as_str().expect("targetId");
        let base = browser_url.split("/devtools/").next().expect("ws://host:port");
        let (page, _) = tokio_tungstenite::connect_async(format!("{base}/devtools/page/{target_id}"))
            .await
            .expect("page connection");
        let mut browser = Browser {
            child,
            page,
            next_id: 1,
            errors: Vec::new(),
            _profile: profile,
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        Some(browser)
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        call_on(&mut self.page, self.next_id, method, params, &mut self.errors).await
    }

    /// The value of `expression` (which should make a JSON string).
    async fn eval(&mut self, expression: &str) -> Value {
        let reply = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        if let Some(exception) = reply.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        let text = reply["result"]["value"].as_str().unwrap_or("null").to_string();
        serde_json::from_str(&text).expect("JSON from the page")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole process group this test started: chromium and its helpers.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// Sends one DevTools command on `socket` and returns its result; events
/// met meanwhile that are script errors go to `errors`.
async fn call_on(
    socket: &mut Socket,
    id: u64,
    method: &str,
    params: Value,
    errors: &mut Vec<String>,
) -> Value {
    let message = json!({"id": id, "method": method, "params": params}).to_string();
    socket
        .send(Message::text(message))
        .await
        .expect("send to DevTools");
    let deadline = Duration::from_secs(20);
    loop {
        let frame = tokio::time::timeout(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer within {deadline:?}"))
            .expect("DevTools closed")
            .expect("DevTools frame");
        let Message::Text(text) = frame else { continue };
        let value: Value = serde_json::from_str(&text).expect("DevTools JSON");
        if value["id"].as_u64() == Some(id) {
            if let Some(error) = value.get("error") {
                panic!("{method}: {error}");
            }
            return value["result"].clone();
        }
        match value["method"].as_str() {
            Some("Runtime.exceptionThrown") => errors.push(value["params"]["exceptionDetails"].to_string()),
            Some("Runtime.consoleAPICalled") if value["params"]["type"] == "error" => {
                errors.push(value["params"]["args"].to_string());
            }
            Some("Log.entryAdded") if value["params"]["entry"]["level"] == "error" => {
                errors.push(value["params"]["entry"].to_string());
            }
            _ => {}
        }
    }
}

/// What the test reads off the page.
const READ_PAGE: &str = r##"JSON.stringify({
  leader: document.getElementById("leader").dataset.leader || null,
  problem: document.getElementById("problem").textContent,
  members: [...document.querySelectorAll("#members tbody tr[data-node]")]
    .map(r => ({ id: Number(r.dataset.node), state: r.dataset.state })),
  backends: [...document.querySelectorAll("tr[data-backend]")]
    .map(r => ({ address: r.dataset.backend, admin: r.dataset.admin, rps: Number(r.dataset.rps) })),
  events: [...document.querySelectorAll("#events tbody tr[data-kind]")]
    .map(r => r.dataset.kind + ": " + r.lastChild.textContent),
})"##;

/// Reads the page every 50 ms until `condition` holds on it; the time taken.
async fn until_page(
    browser: &mut Browser,
    what: &str,
    deadline: Duration,
    condition: impl Fn(&Value) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let page = browser.eval(READ_PAGE).await;
        if condition(&page) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}; the page shows {page:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_follows_a_live_cluster_in_a_browser() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let mut cluster = Cluster::start(3, &http_seed("round_robin", &[a.address, b.address])).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    // The page is read from a node that stays up.
    let viewer = (0..3)
        .find(|i| cluster.members[*i].id != leader)
        .expect("a follower");
    let viewer_id = cluster.members[viewer].id;
    let url = format!("http://127.0.0.{viewer_id}:{}/", cluster.metrics_port);
    browser.call("Page.navigate", json!({"url": url})).await;
    // Page.navigate answers before the new document is built.
    let loaded =
        r#"JSON.stringify(document.readyState === "complete" && !!document.getElementById("leader"))"#;
    let start = Instant::now();
    while browser.eval(loaded).await != json!(true) {
        assert!(start.elapsed() < Duration::from_secs(10), "the page did not load");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    until_page(
        &mut browser,
        "three members, one leader, two backends",
        Duration::from_secs(10),
        |p| {
            let members = p["members"].as_array().map_or(0, Vec::len);
            let leaders = p["members"]
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["state"] == "leader").count());
            members == 3 && leaders == 1 && p["backends"].as_array().map_or(0, Vec::len) == 2
        },
    )
    .await;

    // Traffic through the viewer's listener, until the test ends.
    let sending = Arc::new(AtomicBool::new(true));
    let traffic = {
        let sending = Arc::clone(&sending);
        let target = format!("http://{}/", cluster.members[viewer].http);
        tokio::spawn(async move {
            let http = client::http1();
            while sending.load(Ordering::Relaxed) {
                let _ = client::try_get(&http, &target).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let rates = until_page(&mut browser, "req/s above 0", Duration::from_secs(5), |p| {
        p["backends"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["rps"].as_f64().unwrap_or(0.0) > 0.0))
    })
    .await;
    println!("req/s seen after {} ms of traffic", rates.as_millis());

    let drained = a.address.to_string();
    let (status, _, err) = cluster.ctl(viewer, &["backend", "drain", "app", &drained]);
    assert!(status.success(), "ctl backend drain: {err}");
    let drain_seen = until_page(
        &mut browser,
        "the drained backend's row",
        Duration::from_secs(2),
        |p| {
            p["backends"].as_array().is_some_and(|b| {
                b.iter()
                    .any(|b| b["address"] == drained.as_str() && b["admin"] == "drain")
            })
        },
    )
    .await;
    println!("drain seen after {} ms", drain_seen.as_millis());
    until_page(
        &mut browser,
        "the drain among the events, with who",
        Duration::from_secs(2),
        |p| {
            p["events"].as_array().is_some_and(|e| {
                e.iter().any(|e| {
                    e.as_str()
                        .is_some_and(|e| e.starts_with("admin:") && e.contains("by client \"admin\""))
                })
            })
        },
    )
    .await;

    let old = cluster.index_of(leader);
    cluster.kill(old);
    let new_leader_seen = until_page(
        &mut browser,
        "a new leader, the old one unreachable",
        Duration::from_secs(3),
        |p| {
            let named = p["leader"].as_str().and_then(|l| l.parse::<u64>().ok());
            let old_down = p["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["id"] == leader && m["state"] == "unreachable"));
            named.is_some_and(|l| l != leader) && old_down
        },
    )
    .await;
    println!(
        "new leader seen after {} ms (old leader node {leader} killed)",
        new_leader_seen.as_millis()
    );

    // More readings for the sparklines (a minute's worth for README), then the picture.
    let save = std::env::var("RAFTLB_SAVE_SCREENSHOT").as_deref() == Ok("1");
    tokio::time::sleep(Duration::from_secs(if save { 30 } else { 3 })).await;
    let shot = browser
        .call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        )
        .await;
    sending.store(false, Ordering::Relaxed);
    let _ = traffic.await;
    let png = BASE64_STANDARD
        .decode(shot["data"].as_str().expect("screenshot data"))
        .expect("base64 PNG");
    let (colours, spread) = picture(&png);
    assert!(
        colours >= 16 && spread > 10.0,
        "the screenshot looks blank: {colours} colours, luminance spread {spread:.1}"
    );
    let path = profile_dir().0.join("status-page.png");
    std::fs::write(&path, &png).expect("write the screenshot");
    println!(
        "screenshot: {} ({colours} colours, luminance spread {spread:.1})",
        path.display()
    );
    if save {
        let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/status-page.png");
        std::fs::write(&deploy, &png).expect("write deploy/status-page.png");
        println!("also written to {}", deploy.display());
    }
    assert!(
        browser.errors.is_empty(),
        "errors in the page's console: {:#?}",
        browser.errors
    );
}

/// Distinct colours and the standard deviation of luminance of a PNG.
fn picture(bytes: &[u8]) -> (usize, f64) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
    let frame = reader.next_frame(&mut pixels).expect("PNG frame");
    let channels = frame.color_type.samples();
    assert!(channels >= 3, "a colour screenshot, got {:?}", frame.color_type);
    let mut colours = std::collections::HashSet::new();
    let (mut sum, mut squares, mut n) = (0f64, 0f64, 0f64);
    for px in pixels[..frame.buffer_size()].chunks_exact(channels) {
        colours.insert([px[0], px[1], px[2]]);
        let luminance = 0.2126 * f64::from(px[0]) + 0.7152 * f64::from(px[1]) + 0.0722 * f64::from(px[2]);
        sum += luminance;
        squares += luminance * luminance;
        n += 1.0;
    }
    let mean = sum / n;
    (colours.len(), (squares / n - mean * mean).max(0.0).sqrt())
}

/// This host's address on its default route, if it has one besides loopback.
fn non_loopback_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.254:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// GET `path` on `address` with `authorization`, over a plain socket: (status, body).
async fn get(address: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let header = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{header}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.expect("read");
    let status = reply.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    (status, body)
}

#[tokio::test]
async fn off_loopback_the_status_page_wants_a_token() {
    let Some(ip) = non_loopback_address() else {
        eprintln!("SKIPPED: this host has no address besides loopback to serve the page on");
        return;
    };
    let dir = TempDir::new("status-token");
    let token = "s3cret-token-0123456789";
    let token_file = dir.write("status.token", &format!("{token}\n"));
    let config = |metrics: &str, token: Option<&std::path::Path>| {
        let line = token.map_or(String::new(), |t| {
            format!("status_token_file = \"{}\"\n", t.display())
        });
        format!("[node]\nid = 1\ndrain_timeout = \"1s\"\nmetrics = \"{metrics}\"\n{line}")
    };

    let with_token = format!("{ip}:{}", free_port());
    let _node = Raftlb::spawn(&config(&with_token, Some(&token_file)));
    wait::port_open(&with_token, Duration::from_secs(10)).await;
    let (status, body) = get(&with_token, "/api/status", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = get(&with_token, "/api/status", Some("Bearer wrong-token-0123456789")).await;
    assert_eq!(status, 401);
    let (status, body) = get(&with_token, "/api/status", Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["served_by"], 1);
    assert_eq!(json["members"][0]["reachable"], true);
    let (status, page) = get(&with_token, "/", None).await;
    assert_eq!(status, 200, "the page itself holds no data");
    assert!(page.contains("<title>raftlb status</title>"));
    let (status, _) = get(&with_token, "/metrics", None).await;
    assert_eq!(status, 200, "/metrics stays open");

    let without = format!("{ip}:{}", free_port());
    let _open = Raftlb::spawn(&config(&without, None));
    wait::port_open(&without, Duration::from_secs(10)).await;
    for path in ["/", "/api/status"] {
        let (status, body) = get(&without, path, None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("status_token_file"), "{path}: {body}");
    }
    let (status, _) = get(&without, "/healthz", None).await;
    assert_eq!(status, 200, "/healthz stays open");

    let mut missing = Raftlb::spawn(&config(
        &format!("127.0.0.1:{}", free_port()),
        Some(&dir.path().join("nope")),
    ));
    let exited = wait::value(
        "raftlb refusing a missing token file",
        Duration::from_secs(10),
        || missing.try_exit(),
    )
    .await;
    assert!(!exited.success());
    let log = missing.log();
    assert!(
        log.contains("[node] status_token_file = ") && log.contains("cannot read it"),
        "{log}"
    );
}
