//! [`H1Conn`] against scripted backends on real loopback sockets: what goes
//! out on the wire, each response framing, and when a connection is reused.

use super::*;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// A connection to a scripted backend, and the backend's end of it.
async fn pair() -> (H1Conn, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (H1Conn::new(Transport::Plain(client)), server)
}

fn request(method: Method, target: &str, body: &'static [u8]) -> Request<RequestBody> {
    let mut request = Request::new(RequestBody::complete(Bytes::from_static(body)));
    *request.method_mut() = method;
    *request.uri_mut() = target.parse().unwrap();
    request
        .headers_mut()
        .insert(header::HOST, HeaderValue::from_static("backend"));
    request
}

/// The backend's side of one exchange: reads `expect.len()` bytes, checks
/// them, then writes `answer`.
async fn serve(server: &mut TcpStream, expect: &[u8], answer: &[u8]) {
    let mut got = vec![0; expect.len()];
    tokio::time::timeout(Duration::from_secs(5), server.read_exact(&mut got))
        .await
        .expect("the request arrives")
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expect));
    server.write_all(answer).await.unwrap();
}

async fn exchange(
    conn: H1Conn,
    server: &mut TcpStream,
    mut request: Request<RequestBody>,
    expect: &[u8],
    answer: &[u8],
) -> Result<(Response<()>, ResponseBody), BackendError> {
    let (sent, ()) = tokio::join!(conn.send(&mut request), serve(server, expect, answer));
    sent.map_err(|e| e.error)
}

/// The request line and head of `request(Method::GET, "/", b"")`.
const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: backend\r\n\r\n";

/// `GET /` on a new connection, answered with `answer`; the backend's end too.
async fn get(answer: &[u8]) -> (Result<(Response<()>, ResponseBody), BackendError>, TcpStream) {
    let (conn, mut server) = pair().await;
    let sent = exchange(conn, &mut server, request(Method::GET, "/", b""), GET, answer).await;
    (sent, server)
}

async fn read_body(body: &mut ResponseBody) -> Result<Vec<u8>, BackendError> {
    let mut all = Vec::new();
    while let Some(data) = poll_fn(|cx| body.poll_data(cx)).await {
        all.extend_from_slice(&data?);
    }
    Ok(all)
}

#[tokio::test]
async fn a_keep_alive_connection_carries_one_request_after_another() {
    let (conn, mut server) = pair().await;
    let (response, mut body) = exchange(
        conn,
        &mut server,
        request(Method::GET, "/a?b=1", b""),
        b"GET /a?b=1 HTTP/1.1\r\nhost: backend\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Answer: 1\r\n\r\nhello",
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-answer"], "1");
    assert_eq!(body.exact_len(), Some(5));
    assert_eq!(read_body(&mut body).await.unwrap(), b"hello");
    let conn = body.reusable().expect("kept alive");

    let (response, mut body) = exchange(
        conn,
        &mut server,
        request(Method::POST, "/p", b"xyz"),
        b"POST /p HTTP/1.1\r\nhost: backend\r\ncontent-length: 3\r\n\r\nxyz",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(body.is_end_stream());
    assert!(body.reusable().is_some(), "a 204 has no body to wait for");
}

#[tokio::test]
async fn interim_responses_are_dropped_and_chunked_bodies_decoded() {
    let (sent, _server) = get(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n\
          HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n",
    )
    .await;
    let (response, mut body) = sent.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        !response.headers().contains_key("link"),
        "the 103's fields stay behind"
    );
    assert_eq!(body.exact_len(), None);
    assert_eq!(read_body(&mut body).await.unwrap(), b"abcde");
    assert!(body.reusable().is_some());
}

#[tokio::test]
async fn a_body_without_framing_runs_to_the_close_and_the_connection_goes() {
    let (sent, server) = get(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
    let (_, mut body) = sent.unwrap();
    drop(server);
    assert_eq!(read_body(&mut body).await.unwrap(), b"until the end");
    assert!(body.reusable().is_none());
}

#[tokio::test]
async fn connection_close_and_http_1_0_are_honoured() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"[..],
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ] {
        let (sent, _server) = get(answer).await;
        let (_, mut body) = sent.unwrap();
        assert_eq!(read_body(&mut body).await.unwrap(), b"ok");
        assert!(body.reusable().is_none(), "{}", String::from_utf8_lossy(answer));
    }
}

#[tokio::test]
async fn a_head_response_has_no_body_whatever_its_length_says() {
    let (conn, mut server) = pair().await;
    let (response, mut body) = exchange(
        conn,
        &mut server,
        request(Method::HEAD, "/", b""),
        b"HEAD / HTTP/1.1\r\nhost: backend\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(response.headers()["content-length"], "100");
    assert!(body.is_end_stream());
    assert!(body.reusable().is_some());
}

#[tokio::test]
async fn malformed_responses_are_refused() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
    ] {
        let (sent, _server) = get(answer).await;
        let error = sent
            .err()
            .unwrap_or_else(|| panic!("accepted {}", String::from_utf8_lossy(answer)));
        assert!(matches!(error, BackendError::Malformed(_)), "{error}");
    }
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_and_a_silent_close_before_any_answer_too() {
    let (sent, server) = get(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").await;
    let (_, mut body) = sent.unwrap();
    drop(server);
    assert!(matches!(read_body(&mut body).await, Err(BackendError::Truncated)));
    assert!(body.reusable().is_none());

    let (conn, server) = pair().await;
    drop(server);
    let error = conn.send(&mut request(Method::GET, "/", b"")).await.unwrap_err();
    assert!(
        matches!(error.error, BackendError::Closed | BackendError::Io(_)),
        "{}",
        error.error
    );
    assert!(!error.unsent, "a new connection's request is never unsent");
}

#[tokio::test]
async fn an_idle_connection_the_backend_closed_is_seen_as_closed() {
    let (sent, server) = get(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    let (_, mut body) = sent.unwrap();
    let mut conn = body.reusable().unwrap();
    assert!(conn.is_open());
    drop(server);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while conn.is_open() {
        assert!(tokio::time::Instant::now() < deadline, "the close was never seen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_failed_send_leaves_a_request_read_whole_for_a_retry() {
    let (conn, mut server) = pair().await;
    let mut put = request(Method::PUT, "/r", b"abc");
    let serve_then_close = async {
        let mut head = vec![0; 64];
        let _ = server.read(&mut head).await;
        drop(server);
    };
    let (sent, ()) = tokio::join!(conn.send(&mut put), serve_then_close);
    assert!(sent.is_err(), "the backend closed without an answer");
    assert_eq!(put.uri(), "/r");
    assert_eq!(put.headers()[header::HOST], "backend");
    assert_eq!(put.body().whole().map(|b| &b[..]), Some(&b"abc"[..]));
}
