//! A client's own broken request body is the client's fault (issue 17,
//! item 1): an invalid chunk size or an upload abandoned midway is a 400, a
//! body that stalls past the upstream timeout a 408, and none of them
//! counts against the upstream: both instances stay in rotation with
//! `eject_after = 1`, and the route's stats show no 5xx.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{Backend, Proxy, client, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Two instances, each ejected for an hour after one failure.
async fn setup(timeout: &str) -> (Backend, Backend, Proxy) {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let cfg = format!(
        "[upstreams.mono]\nurls = [\"{}\", \"{}\"]\neject_after = 1\neject_for = \"1h\"\ntimeout = \"{timeout}\"\n[default]\nupstream = \"mono\"\n",
        a.url(),
        b.url()
    );
    (a, b, Proxy::start(&cfg))
}

/// Writes `head_and_body`, half-closes when asked, and reads the answer
/// until the proxy closes.
async fn exchange(addr: SocketAddr, bytes: &[u8], half_close: bool) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    if half_close {
        s.shutdown().await.expect("half-close");
    }
    let mut out = Vec::new();
    // The outer bound only keeps a broken proxy from hanging the test.
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the proxy neither answered nor closed");
    String::from_utf8_lossy(&out).into_owned()
}

/// Both instances still get traffic: neither was ejected.
async fn both_in_rotation(proxy: &Proxy, a: &Backend, b: &Backend) {
    let c = client();
    let (a0, b0) = (a.requests(), b.requests());
    for _ in 0..6 {
        assert_eq!(get(&c, &proxy.url("/ok"), &[]).await.status, 200);
    }
    assert!(
        a.requests() > a0 && b.requests() > b0,
        "an instance was ejected for the client's fault: a {a0}->{}, b {b0}->{}",
        a.requests(),
        b.requests()
    );
}

/// No 5xx in the default route's stats.
async fn no_server_errors(proxy: &Proxy) {
    let c = client();
    let metrics = get(&c, &format!("{}/metrics", proxy.admin_url()), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("status=\"4xx\"}"),
        "the client's faults not counted as 4xx:\n{text}"
    );
    assert!(
        !text.contains("status=\"5xx\""),
        "a client's fault counted as a server error:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_chunk_size_is_the_clients_400() {
    let (a, b, proxy) = setup("10s").await;
    for _ in 0..4 {
        let answer = exchange(
            proxy.addr,
            b"POST /upload HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
            false,
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(
            answer.contains("invalid or incomplete request body"),
            "{answer}"
        );
    }
    both_in_rotation(&proxy, &a, &b).await;
    no_server_errors(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_abandoned_midway_is_the_clients_400() {
    let (a, b, proxy) = setup("10s").await;
    for _ in 0..4 {
        let answer = exchange(
            proxy.addr,
            b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 100\r\n\r\nonly ten b",
            true,
        )
        .await;
        // The client is gone (half-closed here, so the answer can be read).
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    }
    both_in_rotation(&proxy, &a, &b).await;
    no_server_errors(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_the_clients_408() {
    let (a, b, proxy) = setup("300ms").await;
    for _ in 0..4 {
        // Ten bytes of a hundred, then nothing: the connection stays open.
        let answer = exchange(
            proxy.addr,
            b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 100\r\n\r\nonly ten b",
            false,
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(
            answer.contains("request body not received within"),
            "{answer}"
        );
    }
    both_in_rotation(&proxy, &a, &b).await;
    no_server_errors(&proxy).await;
}
