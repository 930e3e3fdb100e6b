//! One table of HTTP/1.1 cases run against both server paths, so that they
//! cannot drift apart: the lean server (`[listen] lean = true`, the
//! default) and hyper's (`lean = false`). Each case writes exact request
//! bytes over a raw socket and checks, on each path, the status line, the
//! framing headers (content-length or chunked, neither where there is no
//! body), `connection`, one `date`, the body bytes, and whether the
//! connection stays open (a follow-up request is answered) or is closed by
//! the proxy. The two paths' answers are then compared with each other,
//! header for header, after the normalisations noted in `normalised`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{Proxy, RawBackend, RawReply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `[listen]` limits of both proxies: above the longest request target
/// (65 534 bytes, hyper's and the lean path's), so that 414 is reachable.
const MAX_HEADER_BYTES: usize = 81_920;
const MAX_HEADERS: usize = 32;
const LONGEST_TARGET: usize = 65_534;

/// The two server paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Lean,
    Hyper,
}

/// A request's bytes: literal, or made (too long to write out).
#[derive(Clone, Copy)]
enum Req {
    Bytes(&'static [u8]),
    Made(fn() -> Vec<u8>),
}

impl Req {
    fn bytes(self) -> Vec<u8> {
        match self {
            Req::Bytes(b) => b.to_vec(),
            Req::Made(f) => f(),
        }
    }
}

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Len {
    /// `content-length` equal to the body's length; no `transfer-encoding`.
    Body,
    /// A HEAD answer: `content-length` of the GET's body, no body.
    Head(usize),
    /// `transfer-encoding: chunked`, no `content-length`.
    Chunked,
    /// Neither header: no body (204, 304, HEAD of a chunked answer), or a
    /// body that runs to the close (HTTP/1.0).
    Neither,
}

/// What an answer's body holds.
#[derive(Debug, Clone, Copy)]
enum Body {
    Is(&'static [u8]),
    /// The proxy's JSON error (`content-type: application/json`) whose
    /// `error` contains this text, on both paths.
    Error(&'static str),
    /// A head the server refuses before the proxy sees it. The lean path
    /// answers with the proxy's JSON error (containing this text); hyper's
    /// server writes its own answer with an empty body and no
    /// content-type. Normalised: the rest of the answer must agree.
    Refusal(&'static str),
}

/// One expected answer.
#[derive(Debug, Clone, Copy)]
struct Answer {
    /// Answer to a HEAD request (read without a body).
    head_only: bool,
    status_line: &'static str,
    len: Len,
    /// The `connection` header's value; `None`: absent.
    connection: Option<&'static str>,
    body: Body,
}

/// Request bytes written at once, and the answers read before the next.
struct Exchange {
    request: Req,
    answers: &'static [Answer],
}

/// What the connection does after the last answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// A further request on it is answered.
    Open,
    /// The proxy closes it, with nothing more written.
    Closed,
}

/// Where hyper's path today differs from the lean path in a way a client
/// notices: what it does instead, and why. Kept in the table so that the
/// difference is visible, and the case fails when it goes away.
struct HyperDiffers {
    why: &'static str,
    /// The `connection` header of every answer on hyper's path.
    connection: Option<&'static str>,
    after: After,
}

struct Case {
    name: &'static str,
    exchanges: &'static [Exchange],
    after: After,
    hyper_differs: Option<HyperDiffers>,
}

const fn ok(body: &'static [u8]) -> Answer {
    Answer {
        head_only: false,
        status_line: "HTTP/1.1 200 OK",
        len: Len::Body,
        connection: None,
        body: Body::Is(body),
    }
}

const HELLO: Answer = ok(b"hello");
/// The upstream's chunked answer, passed on chunked to HTTP/1.1 clients.
const HELLO_WORLD_CHUNKED: Answer = Answer {
    len: Len::Chunked,
    ..ok(b"hello world")
};
const HEAD_HELLO: Answer = Answer {
    head_only: true,
    len: Len::Head(5),
    ..ok(b"")
};
const HTTP10_HELLO: Answer = Answer {
    status_line: "HTTP/1.0 200 OK",
    ..HELLO
};

const fn refused(status_line: &'static str, error: &'static str) -> Answer {
    Answer {
        head_only: false,
        status_line,
        len: Len::Body,
        connection: Some("close"),
        body: Body::Refusal(error),
    }
}

/// The proxy's own JSON error, on a connection it keeps open.
const fn proxy_error(status_line: &'static str, error: &'static str) -> Answer {
    Answer {
        status_line,
        body: Body::Error(error),
        ..HELLO
    }
}

const TRANSFER_CODING_501: Answer = proxy_error(
    "HTTP/1.1 501 Not Implemented",
    "a transfer coding other than chunked alone",
);
const INVALID_HOST: Answer = proxy_error("HTTP/1.1 400 Bad Request", "invalid Host");

/// The rest of a case whose connection stays open, alike on both paths.
const KEPT_OPEN: Case = Case {
    name: "",
    exchanges: &[],
    after: After::Open,
    hyper_differs: None,
};
/// The rest of a case whose connection the proxy closes, on both paths.
const CLOSED: Case = Case {
    after: After::Closed,
    ..KEPT_OPEN
};

const CASES: &[Case] = &[
    Case {
        name: "known-length upstream body: content-length",
        exchanges: &[Exchange {
            request: Req::Bytes(b"GET /len HTTP/1.1\r\nHost: a\r\n\r\n"),
            answers: &[HELLO],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "chunked upstream body: chunked to an HTTP/1.1 client",
        exchanges: &[Exchange {
            request: Req::Bytes(b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n"),
            answers: &[HELLO_WORLD_CHUNKED],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "keep-alive: two requests in turn on one connection",
        exchanges: &[
            Exchange {
                request: Req::Bytes(b"GET /len HTTP/1.1\r\nHost: a\r\n\r\n"),
                answers: &[HELLO],
            },
            Exchange {
                request: Req::Bytes(b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n"),
                answers: &[HELLO_WORLD_CHUNKED],
            },
        ],
        ..KEPT_OPEN
    },
    Case {
        name: "pipelined: three requests in one write, answered in order",
        exchanges: &[Exchange {
            request: Req::Bytes(
                b"GET /len HTTP/1.1\r\nHost: a\r\n\r\nGET /chunked HTTP/1.1\r\nHost: a\r\n\r\nHEAD /len HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            answers: &[HELLO, HELLO_WORLD_CHUNKED, HEAD_HELLO],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "HTTP/1.0 without keep-alive: closed after the answer",
        exchanges: &[Exchange {
            request: Req::Bytes(b"GET /len HTTP/1.0\r\nHost: a\r\n\r\n"),
            answers: &[HTTP10_HELLO],
        }],
        ..CLOSED
    },
    Case {
        name: "HTTP/1.0 with Connection: keep-alive: kept open",
        exchanges: &[Exchange {
            request: Req::Bytes(b"GET /len HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"),
            answers: &[Answer {
                connection: Some("keep-alive"),
                ..HTTP10_HELLO
            }],
        }],
        after: After::Open,
        hyper_differs: Some(HyperDiffers {
            // hyper (proto/h1/conn.rs, fix_keep_alive) disables keep-alive
            // for an HTTP/1.0 response without Connection: keep-alive; the
            // proxy answers in the client's version and strips the
            // upstream's Connection as hop-by-hop.
            why: "hyper's server closes an HTTP/1.0 connection after every answer \
                  the proxy gives: it keeps one open only for a response that \
                  carries Connection: keep-alive",
            connection: None,
            after: After::Closed,
        }),
    },
    Case {
        name: "HTTP/1.0 keep-alive, unknown length: no chunked, body to the close",
        exchanges: &[Exchange {
            request: Req::Bytes(
                b"GET /chunked HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
            ),
            answers: &[Answer {
                status_line: "HTTP/1.0 200 OK",
                len: Len::Neither,
                ..ok(b"hello world")
            }],
        }],
        ..CLOSED
    },
    Case {
        name: "HTTP/1.0 without Host is served",
        exchanges: &[Exchange {
            request: Req::Bytes(b"GET /len HTTP/1.0\r\n\r\n"),
            answers: &[HTTP10_HELLO],
        }],
        ..CLOSED
    },
    Case {
        name: "Connection: close from the client: answered, then closed",
        exchanges: &[Exchange {
            request: Req::Bytes(b"GET /len HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
            answers: &[Answer {
                connection: Some("close"),
                ..HELLO
            }],
        }],
        ..CLOSED
    },
    Case {
        name: "HEAD: the GET's content-length, no body",
        exchanges: &[Exchange {
            request: Req::Bytes(b"HEAD /len HTTP/1.1\r\nHost: a\r\n\r\n"),
            answers: &[HEAD_HELLO],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "HEAD of a chunked answer: neither length nor chunked",
        exchanges: &[Exchange {
            request: Req::Bytes(b"HEAD /chunked HTTP/1.1\r\nHost: a\r\n\r\n"),
            answers: &[Answer {
                head_only: true,
                len: Len::Neither,
                ..ok(b"")
            }],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "upstream 204: no body, no framing headers",
        exchanges: &[Exchange {
            request: Req::Bytes(b"GET /204 HTTP/1.1\r\nHost: a\r\n\r\n"),
            answers: &[Answer {
                status_line: "HTTP/1.1 204 No Content",
                len: Len::Neither,
                ..ok(b"")
            }],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "upstream 304: no body, no framing headers",
        exchanges: &[Exchange {
            request: Req::Bytes(b"GET /304 HTTP/1.1\r\nHost: a\r\n\r\n"),
            answers: &[Answer {
                status_line: "HTTP/1.1 304 Not Modified",
                len: Len::Neither,
                ..ok(b"")
            }],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "max_headers headers: served",
        exchanges: &[Exchange {
            request: Req::Made(head_with_max_headers),
            answers: &[HELLO],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "over max_headers: 431",
        exchanges: &[Exchange {
            request: Req::Made(head_over_max_headers),
            answers: &[refused(
                "HTTP/1.1 431 Request Header Fields Too Large",
                "request head too large",
            )],
        }],
        ..CLOSED
    },
    Case {
        name: "a head of max_header_bytes: served",
        exchanges: &[Exchange {
            request: Req::Made(head_of_max_bytes),
            answers: &[HELLO],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "over max_header_bytes: 431",
        exchanges: &[Exchange {
            request: Req::Made(head_over_max_bytes),
            answers: &[refused(
                "HTTP/1.1 431 Request Header Fields Too Large",
                "request head too large",
            )],
        }],
        ..CLOSED
    },
    Case {
        name: "the longest request target: served",
        exchanges: &[Exchange {
            request: Req::Made(longest_target),
            answers: &[HELLO],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "a request target over the limit: 414",
        exchanges: &[Exchange {
            request: Req::Made(target_too_long),
            answers: &[refused(
                "HTTP/1.1 414 URI Too Long",
                "request target too long",
            )],
        }],
        ..CLOSED
    },
    Case {
        name: "a malformed head: 400",
        exchanges: &[Exchange {
            request: Req::Bytes(b"GET /len HTTP/1.1\r\nHost a\r\n\r\n"),
            answers: &[refused(
                "HTTP/1.1 400 Bad Request",
                "malformed request head",
            )],
        }],
        ..CLOSED
    },
    Case {
        name: "HTTP/1.1 without Host: 400 from the proxy, kept open",
        exchanges: &[Exchange {
            request: Req::Bytes(b"GET /len HTTP/1.1\r\n\r\n"),
            answers: &[Answer {
                status_line: "HTTP/1.1 400 Bad Request",
                body: Body::Error("missing Host header"),
                ..HELLO
            }],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "Host with a space: 400 (RFC 9112 3.2, RFC 3986 3.2.2)",
        exchanges: &[Exchange {
            request: Req::Bytes(b"GET /len HTTP/1.1\r\nHost: x y\r\n\r\n"),
            answers: &[INVALID_HOST],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "Host with userinfo (@): 400",
        exchanges: &[Exchange {
            request: Req::Bytes(b"GET /len HTTP/1.1\r\nHost: x@y\r\n\r\n"),
            answers: &[INVALID_HOST],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "Host with a slash: 400",
        exchanges: &[Exchange {
            request: Req::Bytes(b"GET /len HTTP/1.1\r\nHost: x/y\r\n\r\n"),
            answers: &[INVALID_HOST],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "absolute-form target with userinfo: 400",
        exchanges: &[Exchange {
            request: Req::Bytes(b"GET http://u:p@a/len HTTP/1.1\r\nHost: a\r\n\r\n"),
            answers: &[INVALID_HOST],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "hosts RFC 3986 allows: served (IPv6 literal with a port, IPv4, reg-name)",
        exchanges: &[
            Exchange {
                request: Req::Bytes(b"GET /len HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"),
                answers: &[HELLO],
            },
            Exchange {
                request: Req::Bytes(b"GET /len HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n"),
                answers: &[HELLO],
            },
            Exchange {
                request: Req::Bytes(b"GET http://a.example_1:80/len HTTP/1.1\r\nHost: a\r\n\r\n"),
                answers: &[HELLO],
            },
        ],
        ..KEPT_OPEN
    },
    Case {
        name: "authority-form on GET: 400 (CONNECT only, RFC 9112 3.2.3)",
        exchanges: &[Exchange {
            request: Req::Bytes(b"GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n"),
            answers: &[proxy_error(
                "HTTP/1.1 400 Bad Request",
                "authority-form target (host:port) is for CONNECT only",
            )],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "asterisk-form on GET: 400 (OPTIONS only, RFC 9112 3.2.4)",
        exchanges: &[Exchange {
            request: Req::Bytes(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
            answers: &[proxy_error(
                "HTTP/1.1 400 Bad Request",
                "asterisk-form target (*) is for OPTIONS only",
            )],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "OPTIONS *: answered 404 by the proxy, not forwarded (as Envoy)",
        exchanges: &[Exchange {
            request: Req::Bytes(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
            answers: &[proxy_error(
                "HTTP/1.1 404 Not Found",
                "OPTIONS * asks about the proxy itself",
            )],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "Transfer-Encoding: gzip, chunked: 501 (RFC 9112 6.1)",
        exchanges: &[Exchange {
            request: Req::Bytes(
                b"POST /len HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            ),
            answers: &[TRANSFER_CODING_501],
        }],
        ..KEPT_OPEN
    },
    Case {
        name: "Transfer-Encoding in two fields, gzip then chunked: 501",
        exchanges: &[Exchange {
            request: Req::Bytes(
                b"POST /len HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            ),
            answers: &[TRANSFER_CODING_501],
        }],
        ..KEPT_OPEN
    },
];

/// A GET of /len with `n` headers in all (Host among them).
fn head_with_headers(n: usize) -> Vec<u8> {
    let mut head = b"GET /len HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 1..n {
        head.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

fn head_with_max_headers() -> Vec<u8> {
    head_with_headers(MAX_HEADERS)
}

fn head_over_max_headers() -> Vec<u8> {
    head_with_headers(MAX_HEADERS + 1)
}

/// A GET of /len whose head is `total` bytes long, the end included.
fn head_of(total: usize) -> Vec<u8> {
    let frame = b"GET /len HTTP/1.1\r\nHost: a\r\nx-big: \r\n\r\n".len();
    format!(
        "GET /len HTTP/1.1\r\nHost: a\r\nx-big: {}\r\n\r\n",
        "y".repeat(total - frame)
    )
    .into_bytes()
}

fn head_of_max_bytes() -> Vec<u8> {
    head_of(MAX_HEADER_BYTES)
}

/// Well over the limit. hyper's limit is a soft one: it refuses a head only
/// when its read buffer reached `max_buf_size` without holding all of it,
/// and a read fills the buffer's spare capacity, which stays under twice
/// the limit. So a head just over `max_header_bytes` is refused by the lean
/// path and may be served by hyper's (one of 131 072 bytes is, here): a
/// known difference. A head three times the limit is refused by both.
fn head_over_max_bytes() -> Vec<u8> {
    head_of(3 * MAX_HEADER_BYTES)
}

/// A GET whose request target is `len` bytes long.
fn target_of(len: usize) -> Vec<u8> {
    format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "t".repeat(len - 1)).into_bytes()
}

fn longest_target() -> Vec<u8> {
    target_of(LONGEST_TARGET)
}

fn target_too_long() -> Vec<u8> {
    target_of(LONGEST_TARGET + 1)
}

/// The upstream: exact bytes per path, no body for HEAD.
async fn upstream() -> RawBackend {
    RawBackend::start_with(|head| {
        let head_only = head.starts_with("HEAD ");
        let path = head.split(' ').nth(1).unwrap_or("");
        let answer: &[u8] = if path == "/chunked" {
            if head_only {
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            }
        } else if path == "/204" {
            b"HTTP/1.1 204 No Content\r\nx-kept: 1\r\n\r\n"
        } else if path == "/304" {
            b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\r\n"
        } else if head_only {
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"
        };
        RawReply::keep(answer)
    })
    .await
}

/// The proxy with the table's limits, on one path.
fn proxy(upstream: &RawBackend, path: Path) -> Proxy {
    let lean = path == Path::Lean;
    Proxy::start_with(
        &format!(
            "max_header_bytes = {MAX_HEADER_BYTES}\nmax_headers = {MAX_HEADERS}\nlean = {lean}"
        ),
        &format!(
            "[upstreams.a]\nurls = [\"{}\"]\n[default]\nupstream = \"a\"\n",
            upstream.url()
        ),
        &[],
    )
}

/// One answer as read off the wire.
#[derive(Clone, PartialEq, Eq)]
struct Seen {
    status_line: String,
    /// Names lowercased, values as sent, in the order sent.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("status_line", &self.status_line)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl Seen {
    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.values(name).first().copied()
    }
}

/// How long any read may wait: only a failing case ever waits this long.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A raw client connection.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    async fn connect(addr: SocketAddr) -> Result<Wire, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        Ok(Wire {
            stream,
            buf: Vec::new(),
        })
    }

    /// Writes the bytes. A write error is not reported: a proxy refusing a
    /// head may close before reading all of it, and its answer is what is
    /// checked.
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Reads more; false at the end of the stream (or a reset).
    async fn fill(&mut self) -> Result<bool, String> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(READ_TIMEOUT, self.stream.read(&mut chunk)).await {
            Err(_) => Err(format!("nothing more within {READ_TIMEOUT:?}")),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n > 0)
            }
            Ok(Err(_)) => Ok(false),
        }
    }

    async fn need(&mut self, what: &str) -> Result<(), String> {
        if self.fill().await? {
            Ok(())
        } else {
            Err(format!("closed {what}"))
        }
    }

    /// Reads one answer; `head_only` for a HEAD request's.
    async fn answer(&mut self, head_only: bool) -> Result<Seen, String> {
        let end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            self.need("before an answer's head").await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        for line in lines {
            let (n, v) = line
                .split_once(':')
                .ok_or_else(|| format!("not a header line: {line:?}"))?;
            headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
        }
        let mut seen = Seen {
            status_line,
            headers,
            body: Vec::new(),
        };
        let status = seen.status_line.split(' ').nth(1).unwrap_or("");
        if head_only || status == "204" || status == "304" {
            return Ok(seen);
        }
        if seen.value("transfer-encoding") == Some("chunked") {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    self.need("inside a chunked body").await?;
                };
                let size_line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_line.trim(), 16)
                    .map_err(|_| format!("bad chunk size line {size_line:?}"))?;
                while self.buf.len() < line_end + 2 + size + 2 {
                    self.need("inside a chunk").await?;
                }
                let data = line_end + 2..line_end + 2 + size;
                seen.body.extend_from_slice(&self.buf[data.clone()]);
                if &self.buf[data.end..data.end + 2] != b"\r\n" {
                    return Err("a chunk not followed by CRLF".into());
                }
                self.buf.drain(..data.end + 2);
                if size == 0 {
                    return Ok(seen);
                }
            }
        }
        match seen.value("content-length") {
            Some(len) => {
                let len: usize = len
                    .parse()
                    .map_err(|_| format!("bad content-length {len:?}"))?;
                while self.buf.len() < len {
                    self.need("inside a body").await?;
                }
                seen.body = self.buf.drain(..len).collect();
            }
            None => {
                while self.fill().await? {}
                seen.body = std::mem::take(&mut self.buf);
            }
        }
        Ok(seen)
    }

    /// Whether the connection is open (a further request is answered) or
    /// closed by the proxy with nothing more written.
    async fn after(&mut self) -> Result<After, String> {
        if self.buf.is_empty() {
            self.send(b"GET /len HTTP/1.1\r\nHost: a\r\n\r\n").await;
            if !self.fill().await? {
                return Ok(After::Closed);
            }
        }
        let probe = self.answer(false).await?;
        if probe.status_line == "HTTP/1.1 200 OK" && probe.body == b"hello" {
            Ok(After::Open)
        } else {
            Err(format!("unexpected bytes after the answers: {probe:?}"))
        }
    }
}

/// What one path did with one case: the answers, and the connection after.
#[derive(Debug)]
struct Outcome {
    answers: Vec<Seen>,
    after: After,
}

async fn run(case: &Case, addr: SocketAddr) -> Result<Outcome, String> {
    let mut wire = Wire::connect(addr).await?;
    let mut answers = Vec::new();
    for exchange in case.exchanges {
        wire.send(&exchange.request.bytes()).await;
        for expected in exchange.answers {
            let seen = wire
                .answer(expected.head_only)
                .await
                .map_err(|e| format!("answer {}: {e}", answers.len() + 1))?;
            answers.push(seen);
        }
    }
    let after = wire.after().await?;
    Ok(Outcome { answers, after })
}

/// The case's expectations on one path; each problem found, as a line.
fn check(case: &Case, path: Path, outcome: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    let differs = case.hyper_differs.as_ref().filter(|_| path == Path::Hyper);
    let expected = case.exchanges.iter().flat_map(|e| e.answers.iter());
    for (n, (want, seen)) in expected.zip(&outcome.answers).enumerate() {
        let mut problem = |what: String| problems.push(format!("answer {}: {what}", n + 1));
        if seen.status_line != want.status_line {
            problem(format!(
                "status line {:?}, want {:?}",
                seen.status_line, want.status_line
            ));
        }
        let lengths = seen.values("content-length");
        let chunked = seen.values("transfer-encoding");
        let framing_ok = match want.len {
            Len::Body => lengths == [seen.body.len().to_string()] && chunked.is_empty(),
            Len::Head(n) => {
                lengths == [n.to_string()] && chunked.is_empty() && seen.body.is_empty()
            }
            Len::Chunked => lengths.is_empty() && chunked == ["chunked"],
            Len::Neither => lengths.is_empty() && chunked.is_empty(),
        };
        if !framing_ok {
            problem(format!(
                "framing: want {:?}, got content-length {lengths:?}, transfer-encoding {chunked:?}, {} body bytes",
                want.len,
                seen.body.len()
            ));
        }
        let connection = differs.map_or(want.connection, |d| d.connection);
        if seen.values("connection") != connection.into_iter().collect::<Vec<_>>() {
            problem(format!(
                "connection {:?}, want {connection:?}",
                seen.values("connection")
            ));
        }
        let dates = seen.values("date");
        if dates.len() != 1 || !dates[0].ends_with(" GMT") {
            problem(format!("date headers {dates:?}, want one"));
        }
        let json_error = |want: &str| -> Result<(), String> {
            if seen.value("content-type") != Some("application/json") {
                return Err(format!(
                    "content-type {:?}, want application/json",
                    seen.value("content-type")
                ));
            }
            let json: serde_json::Value = serde_json::from_slice(&seen.body)
                .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(&seen.body)))?;
            match json["error"].as_str() {
                Some(error) if error.contains(want) => Ok(()),
                _ => Err(format!("error {json}, want one containing {want:?}")),
            }
        };
        let body = match (want.body, path) {
            (Body::Is(bytes), _) if seen.body != bytes => Err(format!(
                "body {:?}, want {:?}",
                String::from_utf8_lossy(&seen.body),
                String::from_utf8_lossy(bytes)
            )),
            (Body::Is(_), _) => Ok(()),
            (Body::Error(error), _) | (Body::Refusal(error), Path::Lean) => json_error(error),
            // hyper's server answers the heads it refuses itself, with no
            // body: normalised.
            (Body::Refusal(_), Path::Hyper) if !seen.body.is_empty() => Err(format!(
                "body {:?}: hyper's refusals were empty (update the table?)",
                String::from_utf8_lossy(&seen.body)
            )),
            (Body::Refusal(_), Path::Hyper) => Ok(()),
        };
        if let Err(e) = body {
            problem(e);
        }
    }
    let after = differs.map_or(case.after, |d| d.after);
    if outcome.after != after {
        problems.push(format!(
            "the connection was {:?} after the answers, want {after:?}",
            outcome.after
        ));
    }
    if let Some(d) = differs {
        for p in &mut problems {
            p.push_str(&format!(
                " (a known difference on this path is expected instead: {})",
                d.why
            ));
        }
    }
    problems
}

/// An answer as compared across the paths: headers sorted by name (the
/// paths write them in different orders: hyper puts content-length before
/// the headers the proxy adds), `date` without its value (the time), and
/// for refused heads without the body and the headers describing it
/// (hyper's server writes its own empty answer).
fn normalised(seen: &Seen, want: &Answer, differs: bool) -> Seen {
    let refusal = matches!(want.body, Body::Refusal(_));
    let dropped = |name: &str| {
        let describes_body = ["content-type", "cache-control", "content-length"].contains(&name);
        (refusal && describes_body) || (differs && name == "connection")
    };
    let mut headers: Vec<(String, String)> = seen
        .headers
        .iter()
        .filter(|(n, _)| !dropped(n))
        .map(|(n, v)| {
            let v = if n == "date" {
                String::new()
            } else {
                v.clone()
            };
            (n.clone(), v)
        })
        .collect();
    headers.sort();
    Seen {
        status_line: seen.status_line.clone(),
        headers,
        body: if refusal {
            Vec::new()
        } else {
            seen.body.clone()
        },
    }
}

/// Every case of the table, on both paths: each path meets the case's
/// expectations, and the two answer alike. Failures name case and path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_cases_behave_alike_on_the_lean_path_and_hypers() {
    let upstream = upstream().await;
    let (lean, hyper) = std::thread::scope(|s| {
        let lean = s.spawn(|| proxy(&upstream, Path::Lean));
        let hyper = proxy(&upstream, Path::Hyper);
        (lean.join().expect("lean proxy"), hyper)
    });
    let mut failures = Vec::new();
    for case in CASES {
        let (on_lean, on_hyper) = tokio::join!(run(case, lean.addr), run(case, hyper.addr));
        let mut outcomes = Vec::new();
        for (path, outcome) in [(Path::Lean, on_lean), (Path::Hyper, on_hyper)] {
            match outcome {
                Ok(outcome) => {
                    for problem in check(case, path, &outcome) {
                        failures.push(format!("[{}] on the {path:?} path: {problem}", case.name));
                    }
                    outcomes.push(outcome);
                }
                Err(e) => failures.push(format!("[{}] on the {path:?} path: {e}", case.name)),
            }
        }
        let [on_lean, on_hyper] = &outcomes[..] else {
            continue;
        };
        let expected = case.exchanges.iter().flat_map(|e| e.answers.iter());
        let differs = case.hyper_differs.is_some();
        for (n, ((want, a), b)) in expected
            .zip(&on_lean.answers)
            .zip(&on_hyper.answers)
            .enumerate()
        {
            let (a, b) = (normalised(a, want, differs), normalised(b, want, differs));
            if a != b {
                failures.push(format!(
                    "[{}] answer {}: the paths differ:\n  lean:  {a:?}\n  hyper: {b:?}",
                    case.name,
                    n + 1
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// An HTTP/1.0 request without Host reaches the upstream as HTTP/1.1 with
/// the instance's authority as Host, or the route's host_rewrite when it
/// has one (an HTTP/1.1 request without Host is invalid, RFC 9112 3.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_without_host_gets_the_upstreams_host_on_both_paths() {
    let upstream = upstream().await;
    for lean in [true, false] {
        let proxy = Proxy::start_with(
            &format!("lean = {lean}"),
            &format!(
                "[upstreams.a]\nurls = [\"{}\"]\n[default]\nupstream = \"a\"\n\
                 [[routes]]\nname = \"rw\"\nmatch.path = \"/rw\"\nupstream = \"a\"\n\
                 host_rewrite = \"rw.internal\"\n",
                upstream.url()
            ),
            &[],
        );
        for (target, host) in [
            ("/len", upstream.addr.to_string()),
            ("/rw", "rw.internal".to_string()),
        ] {
            let seen = upstream.heads().len();
            let answer = support::raw(
                proxy.addr,
                format!("GET {target} HTTP/1.0\r\n\r\n").as_bytes(),
            )
            .await;
            assert!(
                answer.starts_with("HTTP/1.0 200 OK\r\n"),
                "lean = {lean}: {answer}"
            );
            let heads = upstream.heads();
            let head = heads.get(seen).expect("the request reached the upstream");
            let hosts: Vec<&str> = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
                .map(|(_, v)| v.trim())
                .collect();
            let request_line = head.lines().next().unwrap_or("");
            assert_eq!(
                request_line,
                format!("GET {target} HTTP/1.1"),
                "lean = {lean}"
            );
            assert_eq!(hosts, [host.as_str()], "lean = {lean}, {target}: {head}");
        }
    }
}

/// `Transfer-Encoding: chunked` in any case is the one coding accepted on a
/// request, on both paths: the body reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_in_any_case_is_accepted_on_both_paths() {
    let backend = support::Backend::start("a").await;
    for lean in [true, false] {
        let proxy = Proxy::start_with(
            &format!("lean = {lean}"),
            &format!(
                "[upstreams.a]\nurls = [\"{}\"]\n[default]\nupstream = \"a\"\n",
                backend.url()
            ),
            &[],
        );
        for coding in ["chunked", "Chunked", "CHUNKED"] {
            let mut c = support::WireClient::connect(proxy.addr).await;
            c.send(
                format!(
                    "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {coding}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                )
                .as_bytes(),
            )
            .await;
            let r = c.response(false).await;
            assert!(
                r.head.starts_with("HTTP/1.1 200 OK\r\n"),
                "lean = {lean}, {coding}: {}",
                r.head
            );
            assert_eq!(r.body, b"hello", "lean = {lean}, {coding}");
        }
    }
}

/// With `lean = false`, TLS connections that negotiate HTTP/1.1 are
/// hyper's too: kept alive as on the lean path, and a malformed head gets
/// hyper's own empty 400 where the lean path answers with the proxy's JSON
/// (which is how this test tells the paths apart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lean_false_serves_tls_http1_with_hyper() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let upstream = upstream().await;
    let dir = tempfile::tempdir().expect("dir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let proxy = Proxy::start_with(
        &format!(
            "lean = false\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
            cert_path.display(),
            key_path.display()
        ),
        &format!(
            "[upstreams.a]\nurls = [\"{}\"]\n[default]\nupstream = \"a\"\n",
            upstream.url()
        ),
        &[],
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let mut tls_config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls_config));
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let connect = || async {
        let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
        connector
            .connect(name.clone(), tcp)
            .await
            .expect("handshake")
    };

    let mut c = support::WireClient::new(connect().await);
    for _ in 0..2 {
        c.send(b"GET /len HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await;
        let r = c.response(false).await;
        assert!(r.head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", r.head);
        assert_eq!(r.body, b"hello");
    }

    let mut bad = connect().await;
    bad.write_all(b"GET /len HTTP/1.1\r\nHost localhost\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let _ = bad.read_to_end(&mut got).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(
        text.contains("content-length: 0\r\n") && text.ends_with("\r\n\r\n"),
        "hyper's empty 400, not the lean path's JSON: {text}"
    );
}
