//! Gateway policies through the real binary: per-route rate limits.

mod support;

use support::{Backend, Proxy, client, get};

/// A slow refill (one request every 5 s) so the test never races it.
fn config(b: &Backend, key: &str) -> String {
    format!(
        r#"[upstreams.app]
urls = ["{}"]
[default]
upstream = "app"
[[routes]]
name = "api"
match.path_prefix = "/api"
split = {{ app = 100 }}
rate_limit = {{ per_second = 0.2, burst = 3, key = "{key}" }}
"#,
        b.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_then_429_with_the_headers_and_keys_are_isolated() {
    let b = Backend::start("app").await;
    let proxy = Proxy::start(&config(&b, "header:x-user-id"));
    let c = client();
    let ana = [("x-user-id", "ana")];
    for left in [2, 1, 0] {
        let r = get(&c, &proxy.url("/api/x"), &ana).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["ratelimit-policy"], "\"default\";q=3;w=15");
        let state = r.headers["ratelimit"].to_str().expect("ascii");
        assert!(
            state.starts_with(&format!("\"default\";r={left};")),
            "{state}"
        );
    }
    let r = get(&c, &proxy.url("/api/x"), &ana).await;
    assert_eq!(
        r.status, 429,
        "the fourth within 5 s is over the burst of 3"
    );
    assert_eq!(r.headers["retry-after"], "5");
    assert_eq!(r.headers["ratelimit"], "\"default\";r=0;t=5");
    assert_eq!(r.headers["ratelimit-policy"], "\"default\";q=3;w=15");
    let body = r.json();
    assert_eq!(body["route"], "api");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("rate limit")),
        "{body}"
    );
    // Another user has a budget of their own; a path outside the route has no limit.
    assert_eq!(
        get(&c, &proxy.url("/api/x"), &[("x-user-id", "bo")])
            .await
            .status,
        200
    );
    for _ in 0..5 {
        assert_eq!(get(&c, &proxy.url("/other"), &ana).await.status, 200);
    }
    assert_eq!(
        b.requests(),
        3 + 1 + 5,
        "the refused request never reached the upstream"
    );
    let metrics = get(&c, &format!("{}/metrics", proxy.admin_url()), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains("strangler_rate_limited_total{route=\"api\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ip_key_and_a_reload_keep_the_count() {
    let b = Backend::start("app").await;
    let mut proxy = Proxy::start(&config(&b, "ip"));
    let c = client();
    for _ in 0..3 {
        assert_eq!(get(&c, &proxy.url("/api/x"), &[]).await.status, 200);
    }
    // A reload with the same limit keeps its state: still over the burst.
    proxy.reload(&config(&b, "ip"));
    proxy.wait_for_log("config reloaded");
    assert_eq!(get(&c, &proxy.url("/api/x"), &[]).await.status, 429);
    // Any client header does not matter with the ip key.
    assert_eq!(
        get(&c, &proxy.url("/api/x"), &[("x-user-id", "bo")])
            .await
            .status,
        429
    );
}

/// A 16 KiB key unique to `i`.
fn long_key(i: usize) -> String {
    let mut k = format!("{i:06}-");
    k.extend(std::iter::repeat_n('k', 16 * 1024 - k.len()));
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_distinct_long_keys_limit_alone_and_cost_no_memory_each() {
    let b = Backend::start("app").await;
    let proxy = Proxy::start(&config(&b, "header:x-user-id"));
    let c = client();
    // Warm up: the buffers a 16 KiB head needs are allocated once.
    let first = long_key(0);
    for _ in 0..3 {
        let r = get(&c, &proxy.url("/api/x"), &[("x-user-id", &first)]).await;
        assert_eq!(r.status, 200);
    }
    let before = proxy.peak_rss_kb();
    // 1500 distinct keys, each within its 15 s window: whole keys would
    // hold 24 MiB.
    let n = 1500;
    for i in 1..=n {
        let r = get(&c, &proxy.url("/api/x"), &[("x-user-id", &long_key(i))]).await;
        assert_eq!(r.status, 200, "key {i} has a budget of its own");
    }
    let grown = proxy.peak_rss_kb().saturating_sub(before);
    assert!(
        grown < 8 * 1024,
        "{n} distinct 16 KiB keys grew the peak RSS by {grown} kB"
    );
    // The first key is still over its burst; a key that differs from it in
    // its last byte only is not.
    let r = get(&c, &proxy.url("/api/x"), &[("x-user-id", &first)]).await;
    assert_eq!(r.status, 429, "the same long key stays limited");
    let mut near = first.clone();
    near.pop();
    near.push('j');
    for left in [2, 1, 0] {
        let r = get(&c, &proxy.url("/api/x"), &[("x-user-id", &near)]).await;
        assert_eq!(r.status, 200);
        let state = r.headers["ratelimit"].to_str().expect("ascii");
        assert!(
            state.starts_with(&format!("\"default\";r={left};")),
            "{state}"
        );
    }
    let r = get(&c, &proxy.url("/api/x"), &[("x-user-id", &near)]).await;
    assert_eq!(r.status, 429);
}

mod jwt {
    use super::*;
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use serde_json::{Value, json};

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64
    }

    fn b64url(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    fn claims(extra: Value) -> Value {
        let mut c = json!({"sub": "user-42", "iss": "https://id.example", "aud": "shop", "exp": now() + 600});
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        c
    }

    fn hs(c: &Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            c,
            &EncodingKey::from_secret(secret),
        )
        .expect("sign")
    }

    fn route(b: &Backend, jwt: &str) -> String {
        format!(
            r#"[upstreams.app]
urls = ["{}"]
[default]
upstream = "app"
[[routes]]
name = "api"
match.path_prefix = "/api"
split = {{ app = 100 }}
auth.jwt = {{ {jwt}, issuer = "https://id.example", audience = ["shop"] }}
auth.forward_claims = {{ sub = "x-user-id" }}
"#,
            b.url()
        )
    }

    async fn call(c: &support::TestClient, p: &Proxy, token: Option<&str>) -> support::Reply {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut h = vec![("x-user-id", "forged")];
        if let Some(b) = &bearer {
            h.push(("authorization", b.as_str()));
        }
        get(c, &p.url("/api/me"), &h).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hmac_tokens_claims_and_every_way_to_fail() {
        let b = Backend::start("app").await;
        let proxy = Proxy::start_env(
            "",
            &route(&b, r#"algorithms = ["HS256"], secret_env = "JWT_SECRET""#),
            &[],
            &[("JWT_SECRET", "s3cret-s3cret-s3cret")],
        );
        let c = client();
        let secret = b"s3cret-s3cret-s3cret";
        let ok = call(&c, &proxy, Some(&hs(&claims(json!({})), secret))).await;
        assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
        assert_eq!(
            ok.seen_header("x-user-id"),
            ["user-42"],
            "the claim, not the forged header"
        );
        let none_token = format!(
            "{}.{}.",
            b64url(br#"{"alg":"none","typ":"JWT"}"#),
            b64url(claims(json!({})).to_string().as_bytes())
        );
        let cases: Vec<(&str, Option<String>)> = vec![
            ("missing", None),
            ("garbage", Some("not.a.token".into())),
            ("alg none", Some(none_token)),
            (
                "other secret",
                Some(hs(&claims(json!({})), b"another-secret-entirely")),
            ),
            (
                "expired",
                Some(hs(&claims(json!({"exp": now() - 3600})), secret)),
            ),
            (
                "future nbf",
                Some(hs(&claims(json!({"nbf": now() + 3600})), secret)),
            ),
            (
                "wrong aud",
                Some(hs(&claims(json!({"aud": "admin"})), secret)),
            ),
            (
                "wrong iss",
                Some(hs(&claims(json!({"iss": "https://evil.example"})), secret)),
            ),
            (
                "no exp",
                Some(hs(
                    &json!({"sub": "x", "iss": "https://id.example", "aud": "shop"}),
                    secret,
                )),
            ),
        ];
        for (what, token) in &cases {
            let r = call(&c, &proxy, token.as_deref()).await;
            assert_eq!(r.status, 401, "{what}");
            let challenge = r.headers["www-authenticate"].to_str().expect("ascii");
            if token.is_some() {
                assert_eq!(challenge, "Bearer error=\"invalid_token\"", "{what}");
            } else {
                assert_eq!(challenge, "Bearer");
            }
            assert_eq!(r.json()["route"], "api", "{what}");
        }
        assert_eq!(b.requests(), 1, "only the valid token reached the upstream");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn public_keys_jwks_by_kid_and_no_algorithm_confusion() {
        let b = Backend::start("app").await;
        let key = rcgen::KeyPair::generate().expect("EC key");
        let signing = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("EC pem");
        let dir = tempfile::tempdir().expect("dir");
        let pem = dir.path().join("public.pem");
        std::fs::write(&pem, key.public_key_pem()).expect("write pem");
        let mut jwk = Jwk::from_encoding_key(&signing, Algorithm::ES256).expect("jwk");
        jwk.common.key_id = Some("k1".into());
        let jwks = dir.path().join("jwks.json");
        std::fs::write(
            &jwks,
            serde_json::to_string(&JwkSet { keys: vec![jwk] }).expect("json"),
        )
        .expect("write jwks");
        let es = |kid: Option<&str>| {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = kid.map(str::to_string);
            encode(&h, &claims(json!({})), &signing).expect("sign")
        };
        let c = client();

        let by_pem = Proxy::start(&route(
            &b,
            &format!(
                r#"algorithms = ["ES256"], public_key_pem = "{}""#,
                pem.display()
            ),
        ));
        assert_eq!(call(&c, &by_pem, Some(&es(None))).await.status, 200);
        // HS256 "signed" with the public key: the classic confusion attack.
        let confused = hs(&claims(json!({})), key.public_key_pem().as_bytes());
        assert_eq!(call(&c, &by_pem, Some(&confused)).await.status, 401);
        // The same with an RSA key, the form the attack usually takes.
        let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
        let rsa_pem = dir.path().join("rsa.pem");
        std::fs::write(&rsa_pem, rsa.public_key_pem()).expect("write pem");
        let by_rsa = Proxy::start(&route(
            &b,
            &format!(
                r#"algorithms = ["RS256"], public_key_pem = "{}""#,
                rsa_pem.display()
            ),
        ));
        let rs = encode(
            &Header::new(Algorithm::RS256),
            &claims(json!({})),
            &EncodingKey::from_rsa_pem(rsa.serialize_pem().as_bytes()).expect("RSA pem"),
        )
        .expect("sign");
        assert_eq!(call(&c, &by_rsa, Some(&rs)).await.status, 200);
        let confused = hs(&claims(json!({})), rsa.public_key_pem().as_bytes());
        assert_eq!(call(&c, &by_rsa, Some(&confused)).await.status, 401);

        let by_kid = Proxy::start(&route(
            &b,
            &format!(
                r#"algorithms = ["ES256"], jwks_file = "{}""#,
                jwks.display()
            ),
        ));
        assert_eq!(call(&c, &by_kid, Some(&es(Some("k1")))).await.status, 200);
        let unknown = call(&c, &by_kid, Some(&es(Some("k2")))).await;
        assert_eq!(unknown.status, 401);
        assert!(
            unknown.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains("unknown key id"))
        );
        assert_eq!(
            call(&c, &by_kid, Some(&es(None))).await.status,
            401,
            "no kid"
        );
        assert_eq!(b.requests(), 3, "the three valid tokens, nothing else");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_as_sticky_key_and_rate_limit_key() {
        let (one, two) = (Backend::start("one").await, Backend::start("two").await);
        let body = format!(
            r#"[upstreams.one]
urls = ["{}"]
[upstreams.two]
urls = ["{}"]
[default]
upstream = "one"
[[routes]]
name = "api"
match.path_prefix = "/api"
split = {{ one = 50, two = 50 }}
sticky = "claim:sub"
auth.jwt = {{ algorithms = ["HS256"], secret_env = "JWT_SECRET" }}
rate_limit = {{ per_second = 0.2, burst = 3, key = "claim:sub" }}
"#,
            one.url(),
            two.url()
        );
        let proxy = Proxy::start_env("", &body, &[], &[("JWT_SECRET", "s3cret-s3cret-s3cret")]);
        let c = client();
        let token = |sub: &str| {
            let t = hs(
                &json!({"sub": sub, "exp": now() + 600}),
                b"s3cret-s3cret-s3cret",
            );
            format!("Bearer {t}")
        };
        let mut sides = std::collections::BTreeSet::new();
        for user in 0..20 {
            let t = token(&format!("user-{user}"));
            let first = get(&c, &proxy.url("/api/x"), &[("authorization", t.as_str())]).await;
            let again = get(&c, &proxy.url("/api/x"), &[("authorization", t.as_str())]).await;
            assert_eq!(
                first.backend(),
                again.backend(),
                "sticky on the verified sub"
            );
            sides.insert(first.backend());
        }
        assert_eq!(sides.len(), 2, "users spread over both sides: {sides:?}");
        // Each user has their own budget, whatever their address.
        let a = token("user-0");
        let third = get(&c, &proxy.url("/api/x"), &[("authorization", a.as_str())]).await;
        assert_eq!(third.status, 200);
        let fourth = get(&c, &proxy.url("/api/x"), &[("authorization", a.as_str())]).await;
        assert_eq!(fourth.status, 429);
        let b = token("user-1");
        assert_eq!(
            get(&c, &proxy.url("/api/x"), &[("authorization", b.as_str())])
                .await
                .status,
            200
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_remote_jwks_is_fetched_again_for_a_new_kid_once_per_cooldown() {
        use std::sync::{Arc, Mutex};
        let b = Backend::start("app").await;
        let k1 = rcgen::KeyPair::generate().expect("key 1");
        let k2 = rcgen::KeyPair::generate().expect("key 2");
        let jwk = |k: &rcgen::KeyPair, kid: &str| {
            let enc = EncodingKey::from_ec_pem(k.serialize_pem().as_bytes()).expect("pem");
            let mut j = Jwk::from_encoding_key(&enc, Algorithm::ES256).expect("jwk");
            j.common.key_id = Some(kid.into());
            (j, enc)
        };
        let (j1, e1) = jwk(&k1, "k1");
        let (j2, e2) = jwk(&k2, "k2");
        let served = Arc::new(Mutex::new(
            serde_json::to_string(&JwkSet {
                keys: vec![j1.clone()],
            })
            .expect("json"),
        ));
        let s2 = served.clone();
        let (jwks, _) = support::ScriptedBackend::start(move |_| support::Answer {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: s2.lock().expect("lock").clone().into_bytes(),
        })
        .await;
        let proxy = Proxy::start(&route(
            &b,
            &format!(
                r#"algorithms = ["ES256"], jwks_url = "{}/jwks.json", jwks_cooldown = "1h""#,
                jwks.url()
            ),
        ));
        let sign = |enc: &EncodingKey, kid: &str| {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(kid.into());
            encode(&h, &claims(json!({})), enc).expect("sign")
        };
        let c = client();
        assert_eq!(call(&c, &proxy, Some(&sign(&e1, "k1"))).await.status, 200);
        assert_eq!(jwks.seen().len(), 1, "fetched once at start");
        // The identity provider rotates in k2: the first token with it
        // makes the proxy fetch again.
        *served.lock().expect("lock") =
            serde_json::to_string(&JwkSet { keys: vec![j1, j2] }).expect("json");
        assert_eq!(call(&c, &proxy, Some(&sign(&e2, "k2"))).await.status, 200);
        assert_eq!(jwks.seen().len(), 2);
        // Unknown kids do not hammer the endpoint: once per cool-down.
        for _ in 0..5 {
            assert_eq!(call(&c, &proxy, Some(&sign(&e2, "k9"))).await.status, 401);
        }
        assert_eq!(jwks.seen().len(), 2, "within the cool-down: no new fetch");
    }

    #[test]
    fn a_missing_secret_is_one_clear_line_at_start() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("strangler.toml");
        let body = r#"[upstreams.app]
urls = ["http://127.0.0.1:9"]
[default]
upstream = "app"
[[routes]]
name = "api"
match.path_prefix = "/api"
split = { app = 100 }
auth.jwt = { algorithms = ["HS256"], secret_env = "STRANGLER_TEST_UNSET_SECRET" }
"#;
        std::fs::write(&path, support::config_with(dir.path(), "", body)).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
            .args(["serve", "--config"])
            .arg(&path)
            .env_remove("STRANGLER_TEST_UNSET_SECRET")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("STRANGLER_TEST_UNSET_SECRET") && err.contains("not set"),
            "{err}"
        );
    }
}

mod cache {
    use super::*;
    use serde_json::json;
    use support::{Answer, ScriptedBackend, Seen, send};

    fn answer(who: &'static str) -> impl Fn(&Seen) -> Answer + Send + Sync + 'static {
        move |s: &Seen| {
            let lang = s
                .headers
                .get("accept-language")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let a = Answer::json(json!({"who": who, "path": s.path, "lang": lang}));
            match s.path.as_str() {
                "/api/nostore" => a.header("cache-control", "no-store"),
                "/api/private" => a.header("cache-control", "private, max-age=60"),
                "/api/cookie" => a.header("set-cookie", "sid=1"),
                "/api/vary" => a.header("vary", "accept-language"),
                "/api/public" => a.header("cache-control", "public, max-age=60"),
                _ => a,
            }
        }
    }

    fn hits(b: &ScriptedBackend, path: &str) -> usize {
        b.seen().iter().filter(|s| s.path == path).count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hits_misses_and_what_is_never_stored() {
        let (b, _) = ScriptedBackend::start(answer("monolith")).await;
        let proxy = Proxy::start(&format!(
            r#"[upstreams.monolith]
urls = ["{}"]
[default]
upstream = "monolith"
[[routes]]
name = "api"
match.path_prefix = "/api"
split = {{ monolith = 100 }}
cache = {{ ttl = "60s" }}
"#,
            b.url()
        ));
        let c = client();
        let first = get(&c, &proxy.url("/api/plain"), &[]).await;
        assert_eq!(first.headers["x-cache"], "MISS");
        let second = get(&c, &proxy.url("/api/plain"), &[]).await;
        assert_eq!(second.headers["x-cache"], "HIT");
        assert!(second.headers.contains_key("age"));
        assert_eq!(second.body, first.body);
        let head = send(&c, "HEAD", &proxy.url("/api/plain"), &[], "").await;
        assert_eq!(head.headers["x-cache"], "HIT");
        assert!(head.body.is_empty());
        assert_eq!(
            hits(&b, "/api/plain"),
            1,
            "a hit never reaches the upstream"
        );

        for path in ["/api/nostore", "/api/private", "/api/cookie"] {
            get(&c, &proxy.url(path), &[]).await;
            let again = get(&c, &proxy.url(path), &[]).await;
            assert_eq!(again.headers["x-cache"], "MISS", "{path}");
            assert_eq!(hits(&b, path), 2, "{path} is never stored");
        }
        // Vary: one entry per language.
        for lang in ["en", "de", "en", "de"] {
            let r = get(&c, &proxy.url("/api/vary"), &[("accept-language", lang)]).await;
            assert_eq!(r.json()["lang"], lang);
        }
        assert_eq!(hits(&b, "/api/vary"), 2);
        // With Authorization: only answers marked public (or s-maxage).
        let auth = [("authorization", "Bearer x")];
        get(&c, &proxy.url("/api/auth-plain"), &auth).await;
        get(&c, &proxy.url("/api/auth-plain"), &auth).await;
        assert_eq!(hits(&b, "/api/auth-plain"), 2);
        get(&c, &proxy.url("/api/public"), &auth).await;
        assert_eq!(
            get(&c, &proxy.url("/api/public"), &auth).await.headers["x-cache"],
            "HIT"
        );
        // A client asking for a fresh answer gets one; POST never touches the cache.
        let fresh = get(
            &c,
            &proxy.url("/api/plain"),
            &[("cache-control", "no-cache")],
        )
        .await;
        assert_eq!(fresh.headers["x-cache"], "MISS");
        send(&c, "POST", &proxy.url("/api/plain"), &[], "x").await;
        assert_eq!(hits(&b, "/api/plain"), 3);
        let metrics = get(&c, &format!("{}/metrics", proxy.admin_url()), &[]).await;
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        assert!(
            text.contains("strangler_cache_total{route=\"api\",result=\"hit\"}"),
            "{text}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shift_and_a_rollback_never_serve_the_other_sides_answer() {
        let (mono, _) = ScriptedBackend::start(answer("monolith")).await;
        let (orders, _) = ScriptedBackend::start(answer("orders")).await;
        let proxy = Proxy::start(&format!(
            r#"[upstreams.monolith]
urls = ["{}"]
[upstreams.orders]
urls = ["{}"]
[default]
upstream = "monolith"
[[routes]]
name = "api"
match.path_prefix = "/api"
split = {{ monolith = 100, orders = 0 }}
cache = {{ ttl = "60s" }}
"#,
            mono.url(),
            orders.url()
        ));
        let c = client();
        let who = |r: &support::Reply| r.json()["who"].as_str().unwrap_or("").to_string();
        assert_eq!(who(&get(&c, &proxy.url("/api/o/1"), &[]).await), "monolith");
        assert_eq!(
            get(&c, &proxy.url("/api/o/1"), &[]).await.headers["x-cache"],
            "HIT"
        );
        assert!(
            proxy
                .cli(&["shift", "api", "100", "--to", "orders"])
                .status
                .success()
        );
        let after = get(&c, &proxy.url("/api/o/1"), &[]).await;
        assert_eq!(
            (who(&after), after.headers["x-cache"].clone()),
            ("orders".into(), "MISS".parse().unwrap())
        );
        assert_eq!(who(&get(&c, &proxy.url("/api/o/1"), &[]).await), "orders");
        assert!(proxy.cli(&["rollback", "api"]).status.success());
        for _ in 0..3 {
            assert_eq!(who(&get(&c, &proxy.url("/api/o/1"), &[]).await), "monolith");
        }
        assert_eq!(
            mono.seen().len(),
            1,
            "the monolith's answer was still fresh"
        );
    }
}

mod aggregate {
    use super::*;
    use serde_json::json;
    use support::{Answer, ScriptedBackend, Seen};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parts_merge_route_and_fail_alone() {
        let (users, _) = ScriptedBackend::start(|s: &Seen| {
            Answer::json(json!({"from": "users", "path": s.path, "uid": s.headers.get("x-user-id").and_then(|v| v.to_str().ok())}))
        })
        .await;
        let (orders, _) = ScriptedBackend::start(|s: &Seen| {
            Answer::json(json!({"from": "orders", "path": s.path}))
        })
        .await;
        let (broken, _) =
            ScriptedBackend::start(|_| Answer::json(json!({"error": "boom"})).status(500)).await;
        let slow = Backend::start("slow").await;
        let proxy = Proxy::start(&format!(
            r#"[upstreams.monolith]
urls = ["{}"]
[upstreams.users]
urls = ["{}"]
[upstreams.orders]
urls = ["{}"]
[upstreams.broken]
urls = ["{}"]
[upstreams.slow]
urls = ["{}"]
[default]
upstream = "monolith"
[[routes]]
name = "users"
match.path_prefix = "/api/users"
split = {{ users = 100 }}
[[aggregates]]
name = "dashboard"
match.path_template = "/api/dashboard/{{user}}"
parts.profile = {{ path = "/api/users/{{user}}" }}
parts.orders = {{ path = "/api/orders?user={{user}}", upstream = "orders" }}
parts.broken = {{ path = "/x", upstream = "broken" }}
parts.slow = {{ path = "/gate", upstream = "slow", timeout = "200ms" }}
"#,
            users.url(),
            users.url(),
            orders.url(),
            broken.url(),
            slow.url(),
        ));
        let c = client();
        let r = get(
            &c,
            &proxy.url("/api/dashboard/a%20b"),
            &[("x-user-id", "7")],
        )
        .await;
        assert_eq!(r.status, 200);
        let v = r.json();
        // Through the route table: the users route sent the part to `users`.
        assert_eq!(v["profile"]["from"], "users");
        assert_eq!(
            v["profile"]["path"], "/api/users/a%20b",
            "decoded, then encoded once"
        );
        assert_eq!(
            v["profile"]["uid"], "7",
            "the client's headers are passed on"
        );
        assert_eq!(v["orders"]["path"], "/api/orders?user=a%20b");
        assert_eq!(v["broken"], serde_json::Value::Null);
        assert_eq!(v["slow"], serde_json::Value::Null);
        let partial = r.headers["x-strangler-partial"].to_str().expect("ascii");
        assert!(
            partial.contains("broken") && partial.contains("slow"),
            "{partial}"
        );
        slow.open_gate();
    }
}

mod aggregate_policies {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use serde_json::json;
    use support::{Answer, ScriptedBackend};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_part_obeys_its_routes_auth() {
        let (private, _) = ScriptedBackend::start(|_| Answer::json(json!({"secret": 1}))).await;
        let proxy = Proxy::start_env(
            "",
            &format!(
                r#"[upstreams.app]
urls = ["{}"]
[default]
upstream = "app"
[[routes]]
name = "private"
match.path_prefix = "/api/private"
split = {{ app = 100 }}
auth.jwt = {{ algorithms = ["HS256"], secret_env = "JWT_SECRET" }}
[[aggregates]]
name = "dash"
match.path = "/dash"
parts.private = {{ path = "/api/private/x" }}
"#,
                private.url()
            ),
            &[],
            &[("JWT_SECRET", "s3cret-s3cret-s3cret")],
        );
        let c = client();
        let r = get(&c, &proxy.url("/dash"), &[]).await;
        assert_eq!(r.json()["private"], serde_json::Value::Null);
        assert_eq!(r.headers["x-strangler-partial"], "private");
        assert!(
            private.seen().is_empty(),
            "no token, no request to the protected upstream"
        );
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 600;
        let token = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "u", "exp": exp}),
            &EncodingKey::from_secret(b"s3cret-s3cret-s3cret"),
        )
        .expect("sign");
        let bearer = format!("Bearer {token}");
        let r = get(
            &c,
            &proxy.url("/dash"),
            &[("authorization", bearer.as_str())],
        )
        .await;
        assert_eq!(r.json()["private"]["secret"], 1);
    }
}

mod websocket {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    /// A WebSocket echo server on 127.0.0.1:0 (frames echoed as they come).
    async fn echo_server() -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                        return;
                    };
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_text() || m.is_binary() {
                            if ws.send(m).await.is_err() {
                                return;
                            }
                        } else if m.is_close() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn config(ws: std::net::SocketAddr, idle: &str) -> String {
        format!(
            r#"[upstreams.monolith]
urls = ["http://127.0.0.1:9"]
[upstreams.ws]
urls = ["http://{ws}"]
[default]
upstream = "monolith"
[[routes]]
name = "live"
match.path_prefix = "/ws"
split = {{ ws = 100 }}
websocket = true
idle_timeout = "{idle}"
"#
        )
    }

    async fn connect(proxy: &Proxy) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        let (ws, resp) =
            tokio_tungstenite::client_async(format!("ws://{}/ws/echo", proxy.addr), tcp)
                .await
                .expect("handshake through the proxy");
        assert_eq!(resp.status(), 101);
        ws
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_both_ways_and_the_close_handshake() {
        let proxy = Proxy::start(&config(echo_server().await, "60s"));
        let mut ws = connect(&proxy).await;
        ws.send(Message::text("hello")).await.expect("send text");
        assert_eq!(
            ws.next().await.expect("frame").expect("ok"),
            Message::text("hello")
        );
        let bytes = vec![0u8, 1, 2, 255];
        ws.send(Message::binary(bytes.clone()))
            .await
            .expect("send binary");
        assert_eq!(
            ws.next().await.expect("frame").expect("ok"),
            Message::binary(bytes)
        );
        ws.close(None).await.expect("close");
        // The close handshake ends the stream.
        while let Some(Ok(m)) = ws.next().await {
            assert!(m.is_close(), "{m:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_tunnel_is_closed() {
        let proxy = Proxy::start(&config(echo_server().await, "300ms"));
        let mut ws = connect(&proxy).await;
        ws.send(Message::text("still here")).await.expect("send");
        assert!(ws.next().await.expect("frame").is_ok());
        // Nothing more is sent: the proxy closes the tunnel on its own.
        let ended = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) => return,
                    Some(Ok(m)) if m.is_close() => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the idle tunnel was not closed");
    }

    /// RFC 9110 section 15.2.2: a 101 that does not name WebSocket opens no
    /// tunnel. Before, the client's next request on that connection went to
    /// the upstream raw, past routing (and JWT).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_101_that_is_not_websocket_is_502_and_opens_no_tunnel() {
        use support::{RawBackend, RawReply, WireClient};
        let raw = RawBackend::start_with(|head| {
            if head.contains(" /ws/h2c ") {
                RawReply::keep(
                    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n",
                )
            } else {
                RawReply::keep(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
            }
        })
        .await;
        let app = Backend::start("app").await;
        let cfg = format!(
            r#"[upstreams.app]
urls = ["{}"]
[upstreams.ws]
urls = ["{}"]
[default]
upstream = "app"
[[routes]]
name = "live"
match.path_prefix = "/ws"
split = {{ ws = 100 }}
websocket = true
"#,
            app.url(),
            raw.url()
        );
        let proxy = Proxy::start(&cfg);
        for path in ["/ws/bare", "/ws/h2c"] {
            let mut c = WireClient::connect(proxy.addr).await;
            c.send(
                format!(
                    "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                )
                .as_bytes(),
            )
            .await;
            let r = c.response(false).await;
            assert!(r.head.starts_with("HTTP/1.1 502"), "{path}: {}", r.head);
            let j: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
            assert_eq!(
                (j["route"].as_str(), j["upstream"].as_str()),
                (Some("live"), Some("ws"))
            );
            // The connection is still HTTP: the next request is routed.
            c.send(b"GET /private HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .await;
            let r = c.response(false).await;
            assert!(r.head.starts_with("HTTP/1.1 200"), "{path}: {}", r.head);
            let j: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
            assert_eq!(j["backend"], "app", "{path}");
        }
        assert!(
            raw.request_lines().iter().all(|l| !l.contains("/private")),
            "{:?}",
            raw.request_lines()
        );
    }

    /// Such a 101 counts against the instance, as other upstream faults:
    /// with `eject_after = 1` the instance that sent it gets no more
    /// handshakes, and the other one (a real WebSocket server) takes them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_101_that_is_not_websocket_counts_as_an_upstream_failure() {
        use support::{RawBackend, RawReply};
        let raw =
            RawBackend::start_with(|_| RawReply::keep(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"))
                .await;
        let echo = echo_server().await;
        let cfg = format!(
            r#"[upstreams.monolith]
urls = ["http://127.0.0.1:9"]
[upstreams.ws]
urls = ["{}", "http://{echo}"]
eject_after = 1
eject_for = "600s"
[default]
upstream = "monolith"
[[routes]]
name = "live"
match.path_prefix = "/ws"
split = {{ ws = 100 }}
websocket = true
"#,
            raw.url()
        );
        let proxy = Proxy::start(&cfg);
        let mut refused = 0;
        for _ in 0..4 {
            let tcp = tokio::net::TcpStream::connect(proxy.addr)
                .await
                .expect("connect");
            match tokio_tungstenite::client_async(format!("ws://{}/ws/echo", proxy.addr), tcp).await
            {
                Ok((_, resp)) => assert_eq!(resp.status(), 101),
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                    assert_eq!(resp.status(), 502);
                    refused += 1;
                }
                Err(e) => panic!("unexpected handshake error: {e}"),
            }
        }
        assert_eq!(refused, 1, "the instance was not ejected after its 101");
        assert_eq!(raw.request_lines().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upgrades_on_other_routes_are_plain_requests() {
        let b = Backend::start("app").await;
        let proxy = Proxy::start(&format!(
            "[upstreams.app]\nurls = [\"{}\"]\n[default]\nupstream = \"app\"\n",
            b.url()
        ));
        let r = get(
            &client(),
            &proxy.url("/ws/echo"),
            &[("upgrade", "websocket"), ("connection", "upgrade")],
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(
            r.seen_header("upgrade").is_empty(),
            "hop-by-hop headers removed"
        );
    }
}

mod hardening {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use serde_json::json;
    use support::{Answer, ScriptedBackend, Seen, send};

    fn token() -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 600;
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "u", "exp": exp}),
            &EncodingKey::from_secret(b"s3cret-s3cret-s3cret"),
        )
        .expect("sign")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_path_or_header_trick_gets_around_auth() {
        let b = Backend::start("app").await;
        let proxy = Proxy::start_env(
            "",
            &format!(
                r#"[upstreams.app]
urls = ["{}"]
[default]
upstream = "app"
[[routes]]
name = "secure"
match.path_prefix = "/secure"
split = {{ app = 100 }}
auth.jwt = {{ algorithms = ["HS256"], secret_env = "JWT_SECRET" }}
"#,
                b.url()
            ),
            &[],
            &[("JWT_SECRET", "s3cret-s3cret-s3cret")],
        );
        for path in [
            "/open/../secure/admin",
            "/open/%2e%2e/secure/a",
            "/open/..;/secure/a",
            "//secure/a",
            "/open/..%2fsecure/a",
        ] {
            let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let answer = support::raw(proxy.addr, head.as_bytes()).await;
            assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        }
        // Two Authorization headers: which would the upstream read? Refused.
        let good = format!("Bearer {}", token());
        let head = format!(
            "GET /secure/a HTTP/1.1\r\nHost: x\r\nAuthorization: {good}\r\nAuthorization: Bearer garbage\r\nConnection: close\r\n\r\n"
        );
        let answer = support::raw(proxy.addr, head.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert_eq!(b.requests(), 0, "nothing reached the upstream");
        // The ordinary case still works.
        let ok = get(
            &client(),
            &proxy.url("/secure/a"),
            &[("authorization", good.as_str())],
        )
        .await;
        assert_eq!(ok.status, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cache_keys_on_every_value_and_forgets_after_a_write() {
        let (b, _) = ScriptedBackend::start(|s: &Seen| {
            let cookies: Vec<String> = s
                .headers
                .get_all("cookie")
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect();
            Answer::json(json!({"cookies": cookies, "method": s.method})).header("vary", "cookie")
        })
        .await;
        let proxy = Proxy::start(&format!(
            r#"[upstreams.app]
urls = ["{}"]
[default]
upstream = "app"
[[routes]]
name = "api"
match.path_prefix = "/api"
split = {{ app = 100 }}
cache = {{ ttl = "60s" }}
"#,
            b.url()
        ));
        let raw = |cookies: &[&str]| {
            let lines: String = cookies.iter().map(|c| format!("Cookie: {c}\r\n")).collect();
            format!("GET /api/me HTTP/1.1\r\nHost: x\r\n{lines}Connection: close\r\n\r\n")
        };
        let alice = support::raw(proxy.addr, raw(&["theme=dark", "s=alice"]).as_bytes()).await;
        assert!(alice.contains("s=alice"), "{alice}");
        let bob = support::raw(proxy.addr, raw(&["theme=dark", "s=bob"]).as_bytes()).await;
        assert!(
            bob.contains("s=bob") && !bob.contains("alice"),
            "bob got alice's answer: {bob}"
        );
        // Split cookies reach the upstream as one header.
        assert!(
            alice.contains(r#""cookies":["theme=dark; s=alice"]"#),
            "{alice}"
        );

        let c = client();
        get(&c, &proxy.url("/api/p"), &[]).await;
        assert_eq!(
            get(&c, &proxy.url("/api/p"), &[]).await.headers["x-cache"],
            "HIT"
        );
        assert_eq!(
            send(&c, "POST", &proxy.url("/api/p"), &[], "x")
                .await
                .status,
            200
        );
        assert_eq!(
            get(&c, &proxy.url("/api/p"), &[]).await.headers["x-cache"],
            "MISS",
            "a successful write forgets the stored answer"
        );
    }
}

#[test]
fn check_reports_an_unset_jwt_secret() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("strangler.toml");
    std::fs::write(
        &path,
        r#"[upstreams.app]
urls = ["http://127.0.0.1:9"]
[default]
upstream = "app"
[[routes]]
name = "api"
match.path_prefix = "/api"
split = { app = 100 }
auth.jwt = { algorithms = ["HS256"], secret_env = "STRANGLER_TEST_UNSET_SECRET_2" }
"#,
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("STRANGLER_TEST_UNSET_SECRET_2")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("STRANGLER_TEST_UNSET_SECRET_2"), "{err}");
}
