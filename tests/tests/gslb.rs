//! GSLB through real `raftlb` processes and a real DNS client (`dig`, from
//! Debian's dnsutils): the primary site answered, failover to the secondary
//! when the primary's backend dies (timed against the check window plus one
//! TTL), geo answers by EDNS Client Subnet, NXDOMAIN/REFUSED, SOA and NS,
//! garbage that neither crashes nor amplifies, and a 3-node cluster where
//! every node answers the same, also after its leader is killed.

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::cluster::{Cluster, http_seed};
use raftlb_tests::process::{Raftlb, TempDir};
use raftlb_tests::site::{BALANCERS, Options, Site};
use raftlb_tests::{free_port, netns, root_or_skip, tool_or_skip, wait};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The amplification factor the server promises over UDP without a cookie.
const AMPLIFICATION: usize = 4;
/// The site checks: a probe every 200 ms, down after 2 failures.
const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(150);
const FALL: u32 = 2;
/// Answers' TTL.
const TTL: Duration = Duration::from_secs(1);

/// A backend on its own loopback address (the site's address), and the
/// address it serves on.
fn site_backend(name: &str, ip: &str) -> (HttpBackend, SocketAddr) {
    let listener = std::net::TcpListener::bind((ip, 0)).expect("bind a site backend");
    let address = listener.local_addr().expect("address");
    (HttpBackend::serve(name, listener), address)
}

/// The `[gslb]` text: `www` (failover primary → secondary, checked) and
/// `geo` (10.1.0.0/16 is region us, the rest eu).
fn gslb_section(bind: &str, primary: SocketAddr, secondary: SocketAddr, unknown: &str) -> String {
    let check = |port: u16| {
        format!(
            "check = {{ type = \"http\", port = {port}, path = \"/\", interval = \"{}ms\", timeout = \"{}ms\", fall = {FALL}, rise = 1 }}",
            INTERVAL.as_millis(),
            TIMEOUT.as_millis()
        )
    };
    format!(
        "[gslb]\nbind = \"{bind}\"\nzone = \"gslb.test\"\nttl = \"{ttl}s\"\nunknown = \"{unknown}\"\n\
         ns = [\"ns1.gslb.test\", \"ns2.gslb.test\"]\nglue = {{ \"ns1.gslb.test\" = \"127.0.0.1\", \"ns2.gslb.test\" = \"127.0.0.2\" }}\n\
         default_region = \"eu\"\n\n\
         [[gslb.regions]]\ncidr = \"10.1.0.0/16\"\nregion = \"us\"\n\n\
         [[gslb.names]]\nname = \"www.gslb.test\"\npolicy = \"failover\"\n\n\
         [[gslb.names.sites]]\nname = \"primary\"\naddress = \"{p}\"\n{pc}\n\n\
         [[gslb.names.sites]]\nname = \"secondary\"\naddress = \"{s}\"\n{sc}\n\n\
         [[gslb.names]]\nname = \"geo.gslb.test\"\npolicy = \"geo\"\n\n\
         [[gslb.names.sites]]\nname = \"eu\"\naddress = \"198.18.1.1\"\nregion = \"eu\"\n\n\
         [[gslb.names.sites]]\nname = \"us\"\naddress = \"198.18.2.1\"\nregion = \"us\"\n",
        ttl = TTL.as_secs(),
        p = primary.ip(),
        pc = check(primary.port()),
        s = secondary.ip(),
        sc = check(secondary.port()),
    )
}

/// `dig @server -p port ARGS…`'s output (one try, one second).
fn dig(server: SocketAddr, args: &[&str]) -> String {
    dig_in(None, server, args)
}

/// [`dig`] run inside network namespace `ns`, if one.
fn dig_in(ns: Option<&str>, server: SocketAddr, args: &[&str]) -> String {
    let mut command = match ns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns, "dig"]);
            command
        }
        None => Command::new("dig"),
    };
    let output = command
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+tries=1", "+time=1"])
        .args(args)
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The A records `dig +short` prints for `name`.
fn a(server: SocketAddr, name: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![name, "A", "+short"];
    args.extend_from_slice(extra);
    let out = dig(server, &args);
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(str::to_string)
        .collect()
}

/// The `status:` of a full `dig` answer.
fn status(out: &str) -> &str {
    out.split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("no answer")
}

/// Waits until `server` answers `name` with `expected`; the time it took.
async fn wait_answer(server: SocketAddr, name: &str, expected: &str, deadline: Duration) -> Duration {
    let start = Instant::now();
    wait::until(
        &format!("{server} answers {name} with {expected}"),
        deadline,
        || a(server, name, &[]) == [expected],
    )
    .await;
    start.elapsed()
}

fn single_node(gslb: &str, dir: &TempDir) -> String {
    format!(
        "[node]\nid = 1\ndrain_timeout = \"1s\"\ndata_dir = \"{}\"\n\n{gslb}",
        dir.path().join("data").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t1_dig_gets_the_primary_then_the_secondary_and_geo_by_subnet() {
    if !tool_or_skip(
        "t1_dig_gets_the_primary_then_the_secondary_and_geo_by_subnet",
        "dig",
    ) {
        return;
    }
    let (primary, primary_at) = site_backend("primary", "127.0.0.21");
    let (_secondary, secondary_at) = site_backend("secondary", "127.0.0.22");
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
    let dir = TempDir::new("gslb");
    let config = single_node(
        &gslb_section(&dns.to_string(), primary_at, secondary_at, "nxdomain"),
        &dir,
    );
    let node = Raftlb::start(&config, &[]).await;
    wait_answer(dns, "www.gslb.test", "127.0.0.21", Duration::from_secs(20)).await;

    // Authoritative, SOA and NS at the apex, NXDOMAIN inside, REFUSED outside.
    let full = dig(dns, &["www.gslb.test", "A"]);
    assert!(full.contains("flags: qr aa"), "{full}");
    let soa = dig(dns, &["gslb.test", "SOA", "+short"]);
    assert!(soa.starts_with("ns1.gslb.test. hostmaster.gslb.test."), "{soa}");
    let ns = dig(dns, &["gslb.test", "NS", "+short"]);
    assert!(
        ns.contains("ns1.gslb.test.") && ns.contains("ns2.gslb.test."),
        "{ns}"
    );
    let unknown = dig(dns, &["nope.gslb.test", "A"]);
    assert_eq!(status(&unknown), "NXDOMAIN", "{unknown}");
    assert!(
        unknown.contains("IN\tSOA") || unknown.contains("IN SOA"),
        "SOA in authority: {unknown}"
    );
    let outside = dig(dns, &["example.com", "A"]);
    assert_eq!(status(&outside), "REFUSED", "{outside}");
    let nodata = dig(dns, &["www.gslb.test", "AAAA"]);
    assert_eq!(status(&nodata), "NOERROR", "{nodata}");
    let tcp = a(dns, "www.gslb.test", &["+tcp"]);
    assert_eq!(tcp, ["127.0.0.21"]);

    // Geo by EDNS Client Subnet.
    assert_eq!(a(dns, "geo.gslb.test", &["+subnet=10.1.2.0/24"]), ["198.18.2.1"]);
    assert_eq!(a(dns, "geo.gslb.test", &["+subnet=10.2.2.0/24"]), ["198.18.1.1"]);
    let scoped = dig(dns, &["geo.gslb.test", "A", "+subnet=10.1.2.0/24"]);
    assert!(scoped.contains("10.1.2.0/24/16"), "ECS scope 16 in: {scoped}");

    // Garbage neither crashes the node nor gets an amplified answer.
    garbage_is_not_amplified(dns);
    assert_eq!(a(dns, "www.gslb.test", &[]), ["127.0.0.21"]);

    // The primary's backend dies: the answer moves within the window + TTL.
    drop(primary);
    let window = INTERVAL * FALL + TIMEOUT;
    let took = wait_answer(dns, "www.gslb.test", "127.0.0.22", Duration::from_secs(10)).await;
    println!(
        "FIGURE gslb failover: {} ms (check window {} ms + TTL {} ms)",
        took.as_millis(),
        window.as_millis(),
        TTL.as_millis()
    );
    assert!(
        took <= window + TTL,
        "failover took {took:?}, more than {window:?} + {TTL:?}"
    );
    drop(node);
}

/// Random, cut and oversized datagrams: any response is at most
/// [`AMPLIFICATION`] × the query.
fn garbage_is_not_amplified(dns: SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    // A real NS query (the largest answer, with glue) cut short, padded,
    // random bytes and a datagram above 512 bytes without EDNS.
    let ns_query: Vec<u8> = [
        &[
            0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ][..],
        b"\x04gslb\x04test\x00\x00\x02\x00\x01",
    ]
    .concat();
    let mut datagrams = vec![ns_query.clone(), ns_query[..14].to_vec(), vec![0; 12]];
    let mut oversized = ns_query.clone();
    oversized.resize(700, 0);
    datagrams.push(oversized);
    for len in [1, 5, 12, 13, 17, 30, 64, 200, 511, 1400] {
        datagrams.push(random(len));
    }
    let mut answered = 0;
    for query in &datagrams {
        socket.send_to(query, dns).expect("send");
        let mut buffer = [0u8; 4096];
        if let Ok((len, _)) = socket.recv_from(&mut buffer) {
            answered += 1;
            assert!(
                len <= AMPLIFICATION * query.len(),
                "a {}-byte query got {len} bytes",
                query.len()
            );
        }
    }
    println!(
        "garbage: {answered} of {} datagrams answered, none amplified",
        datagrams.len()
    );
    assert!(answered >= 1, "the real NS query is answered (truncated)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t2_every_node_answers_alike_and_a_killed_leader_changes_nothing() {
    if !tool_or_skip(
        "t2_every_node_answers_alike_and_a_killed_leader_changes_nothing",
        "dig",
    ) {
        return;
    }
    let (primary, primary_at) = site_backend("primary", "127.0.0.31");
    let (_secondary, secondary_at) = site_backend("secondary", "127.0.0.32");
    let (_app, app_at) = site_backend("app", "127.0.0.1");
    let port = free_port();
    let seed = format!(
        "{}\n{}",
        http_seed("round_robin", &[app_at]),
        gslb_section(&format!("0.0.0.0:{port}"), primary_at, secondary_at, "refused")
    );
    let mut cluster = Cluster::start(3, &seed).await;
    let dns = |id: u64| -> SocketAddr { format!("127.0.0.{id}:{port}").parse().expect("address") };
    for id in 1..=3 {
        wait_answer(dns(id), "www.gslb.test", "127.0.0.31", Duration::from_secs(20)).await;
        let unknown = dig(dns(id), &["nope.gslb.test", "A"]);
        assert_eq!(status(&unknown), "REFUSED", "unknown = refused: {unknown}");
    }
    wait::until("the first verdicts committed", Duration::from_secs(10), || {
        let (_, out, _) = cluster.ctl(0, &["gslb", "status"]);
        out.lines()
            .filter(|l| l.contains("www.gslb.test") && l.contains(" up "))
            .count()
            == 2
    })
    .await;
    let (ok, out, err) = cluster.ctl(0, &["gslb", "status"]);
    assert!(ok.success(), "{err}");
    assert!(out.contains("primary") && out.contains("answer (*)"), "{out}");
    println!("{out}");

    drop(primary);
    for id in 1..=3 {
        wait_answer(dns(id), "www.gslb.test", "127.0.0.32", Duration::from_secs(10)).await;
    }
    let (ok, json, err) = cluster.ctl(1, &["--json", "gslb", "status"]);
    assert!(ok.success(), "{err}");
    assert!(json.contains("\"health\": \"down\""), "{json}");

    // `ctl apply` of a file whose [gslb] differs changes the section.
    let dir = TempDir::new("gslb-apply");
    let file = dir.path().join("raftlb.toml");
    let nxdomain = cluster
        .config(0)
        .replace("unknown = \"refused\"", "unknown = \"nxdomain\"");
    std::fs::write(&file, nxdomain).expect("write the file");
    let (ok, out, err) = cluster.ctl(0, &["apply", "--config", file.to_str().expect("path")]);
    assert!(ok.success(), "{out}{err}");
    for id in 1..=3 {
        wait::until("NXDOMAIN once applied", Duration::from_secs(10), || {
            status(&dig(dns(id), &["nope.gslb.test", "A"])) == "NXDOMAIN"
        })
        .await;
    }

    // The leader dies: the others answer as before, and a new leader
    // checks: the primary coming back moves the answer back on both.
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    cluster.kill(cluster.index_of(leader));
    let alive: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for id in &alive {
        assert_eq!(a(dns(*id), "www.gslb.test", &[]), ["127.0.0.32"]);
    }
    let listener = std::net::TcpListener::bind(primary_at).expect("the primary's address again");
    let _primary = HttpBackend::serve("primary", listener);
    for id in &alive {
        wait_answer(dns(*id), "www.gslb.test", "127.0.0.31", Duration::from_secs(20)).await;
    }

    // `ctl apply` of a file without [gslb] removes it: nobody answers.
    let survivor = cluster.index_of(alive[0]);
    let config = cluster.config(survivor);
    let without = config.split("\n[gslb]").next().expect("the file before [gslb]");
    std::fs::write(&file, without).expect("write the file");
    let (ok, out, err) = cluster.ctl(survivor, &["apply", "--config", file.to_str().expect("path")]);
    assert!(ok.success(), "{out}{err}");
    assert!(out.contains("remove [gslb]"), "{out}");
    for id in &alive {
        wait::until(
            "no DNS answer once [gslb] is removed",
            Duration::from_secs(10),
            || status(&dig(dns(*id), &["www.gslb.test", "A"])) == "no answer",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t3_in_namespaces_the_answer_leaves_a_site_whose_backends_die() {
    let test = "t3_in_namespaces_the_answer_leaves_a_site_whose_backends_die";
    if !root_or_skip(test, "build network namespaces")
        || !tool_or_skip(test, "dig")
        || !tool_or_skip(test, "nft")
    {
        return;
    }
    // Site one: a 3-node raftlb cluster behind its VIP (which also answers
    // the zone); site two: a plain backend on the client host.
    let site = Site::build(Options {
        gslb: true,
        ..Options::default()
    })
    .await;
    let client_ns = site.lab.ns("client");
    let secondary_ip = site.lab.address("client");
    let listener = netns::on_host(&client_ns, move || {
        std::net::TcpListener::bind((secondary_ip, 80)).expect("bind the secondary")
    });
    let _secondary = HttpBackend::serve("secondary", listener);
    let servers: Vec<SocketAddr> = BALANCERS
        .iter()
        .map(|host| SocketAddr::new(site.lab.address(host).into(), 5353))
        .collect();
    let answer = |server: SocketAddr| -> Vec<String> {
        dig_in(Some(&client_ns), server, &["www.gslb.test", "A", "+short"])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .map(str::to_string)
            .collect()
    };
    let vip = site.vip.to_string();
    for server in &servers {
        wait::until("every node answers the VIP", Duration::from_secs(30), || {
            answer(*server) == [vip.clone()]
        })
        .await;
    }
    // The primary site's backends die (their port resets): its VIP answers
    // 502, its check fails, and every node answers the secondary.
    netns::nft(
        &site.lab.ns("backend"),
        "table inet gslb {\n chain input {\n  type filter hook input priority 0;\n  tcp dport 80 reject with tcp reset\n }\n}\n",
    );
    let start = Instant::now();
    let secondary = secondary_ip.to_string();
    wait::until(
        "the answer moves to the secondary",
        Duration::from_secs(10),
        || answer(servers[0]) == [secondary.clone()],
    )
    .await;
    let took = start.elapsed();
    for server in &servers {
        assert_eq!(answer(*server), std::slice::from_ref(&secondary), "{server}");
    }
    let window = INTERVAL * FALL + TIMEOUT;
    println!(
        "FIGURE gslb failover in namespaces: {} ms (check window {} ms + TTL {} ms)",
        took.as_millis(),
        window.as_millis(),
        TTL.as_millis()
    );
    assert!(
        took <= window + TTL,
        "failover took {took:?}, more than {window:?} + {TTL:?}"
    );
}

/// A standalone raftlb on `ip` with `/readyz` on `ip:metrics` and a `tcp`
/// listener on `ip:listen` to `backend`: a site whose load is its open
/// connections.
fn site_node(ip: &str, metrics: u16, listen: u16, backend: SocketAddr, dir: &TempDir) -> String {
    format!(
        "[node]\nid = 1\ndrain_timeout = \"1s\"\ndata_dir = \"{data}\"\nmetrics = \"{ip}:{metrics}\"\n\n\
         [[listener]]\nname = \"l4\"\nprotocol = \"tcp\"\nbind = \"{ip}:{listen}\"\npool = \"app\"\n\n\
         [[pool]]\nname = \"app\"\nbackends = [{{ address = \"{backend}\" }}]\n",
        data = dir.path().join(format!("site-{ip}")).display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_least_loaded_follows_the_load_another_raftlb_reports() {
    if !tool_or_skip("t4_least_loaded_follows_the_load_another_raftlb_reports", "dig") {
        return;
    }
    let dir = TempDir::new("gslb-load");
    let (backend, _echo) = raftlb_tests::backends::tcp_echo().await;
    let (metrics, listen) = (free_port(), free_port());
    let mut sites = Vec::new();
    for ip in ["127.0.0.41", "127.0.0.42"] {
        let config = site_node(ip, metrics, listen, backend, &dir);
        let l4 = format!("{ip}:{listen}");
        sites.push(Raftlb::start(&config, &[&l4]).await);
    }
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
    let check = format!(
        "check = {{ type = \"http\", port = {metrics}, path = \"/readyz\", interval = \"200ms\", timeout = \"150ms\" }}"
    );
    let gslb = format!(
        "[gslb]\nbind = \"{dns}\"\nzone = \"gslb.test\"\nttl = \"1s\"\nns = [\"ns1.gslb.test\"]\n\n\
         [[gslb.names]]\nname = \"ll.gslb.test\"\npolicy = \"least_loaded\"\n\n\
         [[gslb.names.sites]]\nname = \"a\"\naddress = \"127.0.0.41\"\n{check}\n\n\
         [[gslb.names.sites]]\nname = \"b\"\naddress = \"127.0.0.42\"\n{check}\n"
    );
    let _node = Raftlb::start(&single_node(&gslb, &dir), &[]).await;
    // Both idle: a tie, the first site.
    wait_answer(dns, "ll.gslb.test", "127.0.0.41", Duration::from_secs(20)).await;
    // 20 connections held open through site a: its /readyz reports them,
    // the leader commits the step, and b is answered.
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut stream = tokio::net::TcpStream::connect(format!("127.0.0.41:{listen}"))
            .await
            .expect("connect to site a");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"x").await.expect("write");
        let mut echo = [0u8; 1];
        stream.read_exact(&mut echo).await.expect("echo");
        held.push(stream);
    }
    let took = wait_answer(dns, "ll.gslb.test", "127.0.0.42", Duration::from_secs(10)).await;
    println!(
        "least_loaded: site b answered {} ms after site a took 20 connections",
        took.as_millis()
    );
    // They close: a is the lighter (or tied) again.
    drop(held);
    wait_answer(dns, "ll.gslb.test", "127.0.0.41", Duration::from_secs(10)).await;
}

/// An in-place upgrade, twice, hands the DNS sockets over: the new process
/// answers on them (it never finds the port taken, as it did when it bound
/// its own), and queries asked all along over UDP, by four clients each
/// asking again once answered, are every one answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5_an_in_place_upgrade_hands_the_dns_sockets_over() {
    if !tool_or_skip("t5_an_in_place_upgrade_hands_the_dns_sockets_over", "dig") {
        return;
    }
    let (_primary, primary_at) = site_backend("primary", "127.0.0.23");
    let (_secondary, secondary_at) = site_backend("secondary", "127.0.0.24");
    let dir = TempDir::new("gslb-upgrade");
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
    let gslb = gslb_section(&dns.to_string(), primary_at, secondary_at, "nxdomain");
    let mut node = Raftlb::start(&single_node(&gslb, &dir), &[]).await;
    let primary = primary_at.ip().to_string();
    wait_answer(dns, "www.gslb.test", &primary, Duration::from_secs(10)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicUsize::new(0));
    // Four clients, each asking again as soon as it is answered.
    let askers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, asked, primary) = (Arc::clone(&stop), Arc::clone(&asked), primary.clone());
            std::thread::spawn(move || {
                let mut failed = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let answer = a(dns, "www.gslb.test", &[]);
                    if answer != [primary.as_str()] {
                        failed.push(answer);
                    }
                    asked.fetch_add(1, Ordering::Relaxed);
                }
                failed
            })
        })
        .collect();
    for round in 0..2 {
        let mut new = node.spawn_successor(&format!("raftlb-{round}.log"));
        let status = node.wait_exit(Duration::from_secs(30)).await;
        assert!(status.success(), "round {round}: the old process exited {status}");
        new.ready(&[]).await;
        assert!(
            !new.log().contains("cannot bind the DNS server"),
            "round {round}: the new process could not bind:\n{}",
            new.log()
        );
        node = new;
    }
    // Some answers from the last process too.
    let after = asked.load(Ordering::Relaxed);
    wait::until("more queries answered", Duration::from_secs(10), || {
        asked.load(Ordering::Relaxed) >= after + 8
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let failed: Vec<Vec<String>> = askers
        .into_iter()
        .flat_map(|asker| asker.join().expect("an asking thread"))
        .collect();
    let asked = asked.load(Ordering::Relaxed);
    println!(
        "two in-place upgrades: {asked} queries, {} not answered with the primary",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "queries failed across the upgrades: {failed:?}"
    );
}
