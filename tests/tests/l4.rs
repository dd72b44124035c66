//! TCP and UDP through a real `raftlb` process.

use raftlb_tests::backends;
use raftlb_tests::free_port;
use raftlb_tests::process::Raftlb;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn config(protocol: &str, bind: &str, backends: &[String]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        "[node]\nid = 1\n\n[[listener]]\nname = \"l4\"\nprotocol = \"{protocol}\"\nbind = \"{bind}\"\npool = \"p\"\n\n[[pool]]\nname = \"p\"\nbackends = [{}]\n",
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_echo_with_half_close() {
    let (echo, _task) = backends::tcp_echo().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let bind = format!("127.0.0.1:{}", free_port());
    // The dead backend first: connect failure must move on to the live one.
    let _node = Raftlb::start(&config("tcp", &bind, &[dead, echo.to_string()]), &[&bind]).await;
    for _ in 0..4 {
        let mut stream = TcpStream::connect(&bind).await.expect("connect");
        stream.write_all(b"hello").await.expect("write");
        let mut first = [0u8; 5];
        stream.read_exact(&mut first).await.expect("echo");
        assert_eq!(&first, b"hello");
        // Half-close: we stop writing, the backend sees EOF, answers, closes.
        stream.shutdown().await.expect("shutdown write");
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("backend's reply after half-close")
            .expect("read");
        assert_eq!(rest, b"bye");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_clients_get_their_own_replies() {
    let (one, _t1) = backends::udp_echo("one").await;
    let (two, _t2) = backends::udp_echo("two").await;
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    // Readiness: a UDP listener has no accept; a TCP probe listener in the same config tells us the node is up.
    let probe = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "{}\n[[listener]]\nname = \"probe\"\nprotocol = \"tcp\"\nbind = \"{probe}\"\npool = \"probe\"\n\n[[pool]]\nname = \"probe\"\nbackends = [{{ address = \"{one}\" }}]\n",
        config("udp", &bind, &[one.to_string(), two.to_string()])
    );
    let _node = Raftlb::start(&config, &[&probe]).await;

    let alice = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let bob = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut buf = [0u8; 1024];
    let mut backend_of = Vec::new();
    for (client, name) in [(&alice, "alice"), (&bob, "bob")] {
        for i in 0..5 {
            let payload = format!("{name}-{i}");
            client.send_to(payload.as_bytes(), &bind).await.expect("send");
            let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
                .await
                .expect("a reply")
                .expect("recv");
            assert_eq!(from.to_string(), bind, "replies come from the listener's address");
            let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
            let (backend, echoed) = reply.split_once(':').expect("NAME:payload");
            assert_eq!(echoed, payload, "each client gets its own replies");
            backend_of.push((name, backend.to_string()));
        }
    }
    // A session sticks to one backend; the two clients landed on different ones (round robin).
    let alice_backends: Vec<_> = backend_of
        .iter()
        .filter(|(n, _)| *n == "alice")
        .map(|(_, b)| b)
        .collect();
    let bob_backends: Vec<_> = backend_of
        .iter()
        .filter(|(n, _)| *n == "bob")
        .map(|(_, b)| b)
        .collect();
    assert!(alice_backends.windows(2).all(|w| w[0] == w[1]), "{backend_of:?}");
    assert!(bob_backends.windows(2).all(|w| w[0] == w[1]), "{backend_of:?}");
    assert_ne!(alice_backends[0], bob_backends[0], "{backend_of:?}");
}

/// A listener bound to every address (as in front of a VIP) answers each
/// client from the address it sent to, not from the one the kernel would
/// choose for the reply (127.0.0.1 here): a connected client socket, a
/// NAT or a QUIC client drops a reply from any other address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_replies_come_from_the_address_the_client_sent_to() {
    let (echo, _task) = backends::udp_echo("echo").await;
    let port = free_port();
    let probe = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "{}\n[[listener]]\nname = \"probe\"\nprotocol = \"tcp\"\nbind = \"{probe}\"\npool = \"probe\"\n\n[[pool]]\nname = \"probe\"\nbackends = [{{ address = \"{echo}\" }}]\n",
        config("udp", &format!("0.0.0.0:{port}"), &[echo.to_string()])
    );
    let _node = Raftlb::start(&config, &[&probe]).await;
    for local in ["127.0.0.2", "127.0.0.3"] {
        let to = format!("{local}:{port}");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        client.send_to(b"hello", &to).await.expect("send");
        let mut buf = [0u8; 64];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("a reply")
            .expect("recv");
        assert_eq!(&buf[..n], b"echo:hello");
        assert_eq!(
            from.to_string(),
            to,
            "the reply comes from the address the client sent to"
        );
    }
}
