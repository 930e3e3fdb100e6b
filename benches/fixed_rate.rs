//! A fixed-rate HTTP/1.1 load generator for benches/load.sh: latency at a
//! set request rate (not at saturation), measured from each request's
//! scheduled send time so a stalled server cannot hide its queueing
//! (no coordinated omission). Never run by CI.
//!
//! cargo bench --bench fixed_rate -- URL RATE SECONDS [CONNECTIONS]
//! prints: `rate=... sent=... p50_ms=... p99_ms=... errors=...`

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.len() < 3 {
        eprintln!("usage: fixed_rate URL RATE SECONDS [CONNECTIONS]");
        return;
    }
    let url: http::Uri = match args[0].parse() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("bad url: {e}");
            return;
        }
    };
    let rate: f64 = args[1].parse().unwrap_or(1000.0);
    let secs: f64 = args[2].parse().unwrap_or(10.0);
    let conns: usize = args.get(3).and_then(|c| c.parse().ok()).unwrap_or(50);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return;
        }
    };
    rt.block_on(run(url, rate, secs, conns));
}

async fn run(url: http::Uri, rate: f64, secs: f64, conns: usize) {
    let authority = url.authority().map(|a| a.to_string()).unwrap_or_default();
    let per_conn = Duration::from_secs_f64(conns as f64 / rate);
    let total = Duration::from_secs_f64(secs);
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let authority = authority.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let Ok(stream) = tokio::net::TcpStream::connect(&authority).await else {
                return (lat, 1);
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            else {
                return (lat, 1);
            };
            tokio::spawn(conn);
            // Spread the connections' schedules evenly.
            let mut next = start + per_conn.mul_f64(c as f64 / conns as f64);
            while next < start + total {
                tokio::time::sleep_until(next.into()).await;
                let req = http::Request::get(url.clone())
                    .header(http::header::HOST, authority.as_str())
                    .body(Empty::<Bytes>::new());
                let Ok(req) = req else { break };
                if sender.ready().await.is_err() {
                    errors += 1;
                    break;
                }
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        if ok {
                            lat.push(next.elapsed().as_micros() as u64);
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
                next += per_conn;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0
    };
    println!(
        "rate={:.0} sent={} p50_ms={:.3} p99_ms={:.3} errors={}",
        all.len() as f64 / secs,
        all.len(),
        pct(0.50),
        pct(0.99),
        errors
    );
}
