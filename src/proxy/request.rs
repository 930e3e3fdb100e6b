//! The phases before anything is sent: the head's own checks, the route
//! decision, the route's policies (JWT auth, claims, rate limit) and the
//! request head the upstream gets. A phase that answers the request itself
//! returns that answer as `Err`.

use http::Response;
use http::header::{self, HeaderValue};
use strangler_rules::split::{BUCKETS, bucket};
use strangler_rules::{Target, UpstreamId};

use crate::http1::headers::{Forwarding, joined_values, set_forwarded, strip_hop_by_hop};
use crate::mirror::SHADOW_HEADER;
use crate::policy::auth::Claims;
use crate::proxy::context::{RATELIMIT, RATELIMIT_POLICY, RequestCtx};
use crate::proxy::error::ProxyError;
use crate::proxy::headers::{RequestHead, ambiguous_path, request_host, valid_host};
use crate::upstream::UpstreamPool;
use crate::upstream::body::ProxyBody;

/// An answer strangler gives itself: the request goes no further. Boxed:
/// the phases' `Ok` side stays small, and refusals are the rare case.
pub(super) type Answered = Box<Response<ProxyBody>>;

/// What the route decision leaves for the later phases.
pub(super) struct Decided {
    /// The upstream the route table chose (None: the default upstream).
    pub upstream: Option<strangler_rules::UpstreamId>,
    /// The route's index, when a route matched.
    pub route_index: Option<usize>,
    /// The shadow sampling bucket, when the route shadows.
    pub shadow_bucket: Option<u16>,
}

impl<'a> RequestCtx<'a> {
    /// Phase 1, the head's own checks: a request-target form the method
    /// may use, a valid Host, no transfer coding but chunked, no CONNECT,
    /// no ambiguous path; an absolute-form target's host replaces Host.
    pub(super) fn request_filter(&mut self) -> Result<(), Answered> {
        if let Err(e) = request_form(&self.parts) {
            return Err(Box::new(self.error(e)));
        }
        let parts = &self.parts;
        self.host = match request_host(parts) {
            Ok(Some(h)) if !valid_host(h) => {
                return Err(Box::new(self.error(ProxyError::BadRequest(
                    "invalid Host: not an RFC 3986 host[:port]".into(),
                ))));
            }
            // The Host header's own value when that is the host (no copy).
            Ok(h) => h.and_then(|h| match parts.headers.get(header::HOST) {
                Some(v) if v.as_bytes() == h.as_bytes() => Some(v.clone()),
                _ => HeaderValue::from_str(h).ok(),
            }),
            Err(e) => return Err(Box::new(self.error(e))),
        };
        if parts.method == http::Method::CONNECT {
            return Err(Box::new(
                self.error(ProxyError::MethodNotAllowed("CONNECT".into())),
            ));
        }
        if ambiguous_path(parts.uri.path()) {
            return Err(Box::new(self.error(ProxyError::BadRequest(
                "ambiguous path: dot segments and empty segments are refused".into(),
            ))));
        }
        if parts.version != http::Version::HTTP_2
            && parts.uri.authority().is_some()
            && let Some(h) = &self.host
        {
            self.parts.headers.insert(header::HOST, h.clone());
        }
        Ok(())
    }

    /// Phase 2, the route decision: the route table's choice, the shadow
    /// sample (its own seed, sticky on the route's key), and aggregates,
    /// which are answered here.
    pub(super) async fn route_decision(&mut self) -> Result<Decided, Answered> {
        let live = self.live;
        let (decision, shadow_bucket) = {
            let view = RequestHead {
                parts: &self.parts,
                host: self.host.as_ref().and_then(|v| v.to_str().ok()),
            };
            let decision = live.table.decide(&view, || rand::random_range(0..BUCKETS));
            let shadow_bucket = match decision.target {
                Target::Route(i) if live.route(i).shadow.is_some() => {
                    let r = &self.config.routes[i];
                    Some(
                        r.sticky
                            .as_ref()
                            .and_then(|k| k.value(&view))
                            .map(|key| bucket(r.shadow_seed, key))
                            .unwrap_or_else(|| rand::random_range(0..BUCKETS)),
                    )
                }
                _ => None,
            };
            (decision, shadow_bucket)
        };
        let route_index = match decision.target {
            Target::Route(i) => {
                let r = &self.config.routes[i];
                (self.route, self.slot, self.label) = (Some(r), i + 1, Some(r.name.as_str()));
                Some(i)
            }
            Target::Default => None,
            Target::Aggregate(i) => {
                self.label = Some(self.config.aggregates[i].name.as_str());
                let host = self.host.as_ref().and_then(|v| v.to_str().ok());
                // Boxed: rare, and inline its state would grow every
                // request's future (which hyper moves).
                let resp = Box::pin(crate::proxy::aggregate::serve(
                    self.live.clone(),
                    i,
                    &self.parts,
                    host,
                    self.client,
                ))
                .await;
                return Err(Box::new(resp));
            }
        };
        Ok(Decided {
            upstream: decision.upstream,
            route_index,
            shadow_bucket,
        })
    }

    /// Phase 3, the route's policies: JWT auth (a route that asks for it
    /// gets no request without a valid token), claims forwarded and as the
    /// sticky key, then the rate limit, before anything is sent anywhere.
    /// Chooses the upstream, and returns it.
    pub(super) async fn policies(
        &mut self,
        decided: &Decided,
    ) -> Result<(UpstreamId, &'a UpstreamPool), Answered> {
        let live = self.live;
        let policies = &live.routes[self.slot];
        let mut claims: Option<Claims> = None;
        if let (Some(_), Some(auth)) = (self.route, policies.auth.as_ref()) {
            // Boxed: its state is large and most requests skip it.
            match Box::pin(auth.verify(&self.parts.headers)).await {
                Ok(c) => claims = Some(c),
                Err(e) => {
                    let mut resp = self.error(ProxyError::Unauthorized(e.to_string()));
                    let challenge = match e {
                        crate::policy::auth::AuthError::Missing => {
                            HeaderValue::from_static("Bearer")
                        }
                        crate::policy::auth::AuthError::Invalid(_) => {
                            HeaderValue::from_static("Bearer error=\"invalid_token\"")
                        }
                    };
                    resp.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, challenge);
                    return Err(Box::new(resp));
                }
            }
        }
        let mut chosen = decided.upstream;
        if let (Some(r), Some(c), Some(i)) = (self.route, &claims, decided.route_index) {
            crate::policy::auth::forward_claims(c, &r.forward_claims, &mut self.parts.headers);
            // A verified claim as the sticky key.
            if let Some(strangler_rules::StickyKey::Claim(name)) = &r.sticky
                && let Some(v) = crate::policy::auth::claim_text(c, name)
            {
                chosen = Some(live.table.split(i).choose(bucket(r.sticky_seed, &v)));
            }
        }
        let id = chosen.unwrap_or(self.config.default_upstream);

        if let (Some(_), Some(limit)) = (self.route, policies.limit.as_ref()) {
            let key = crate::policy::ratelimit::key_of(
                &limit.spec,
                self.client,
                &self.parts.headers,
                claims.as_ref(),
            );
            let verdict = limit.check(key);
            let headers = (limit.policy(), limit.state(&verdict));
            if let crate::policy::ratelimit::Verdict::Limited { retry_after } = verdict {
                let mut resp = self.error(ProxyError::RateLimited(retry_after));
                let h = resp.headers_mut();
                let secs = (retry_after.as_secs_f64().ceil() as u64).max(1);
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
                h.insert(RATELIMIT_POLICY, headers.0);
                h.insert(RATELIMIT, headers.1);
                return Err(Box::new(resp));
            }
            self.rate_headers = Some(headers);
        }
        let pool = &*live.pools[id.index()];
        self.upstream = Some((id, pool, &*policies.cells[id.index()]));
        Ok((id, pool))
    }

    /// Phase 4, the head the upstream gets: hop-by-hop headers out (a
    /// WebSocket handshake's own back in), no client-made shadow mark,
    /// cookies in one field, the forwarding headers, the Host. Returns the
    /// forwarding headers when they are to be written with the encoded
    /// head instead of into the map.
    pub(super) fn upstream_request_filter(&mut self, websocket: bool) -> Option<Forwarding> {
        let headers = &mut self.parts.headers;
        strip_hop_by_hop(headers);
        if websocket {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        // Only strangler marks shadow requests.
        headers.remove(SHADOW_HEADER);
        // Cookies split over several fields (HTTP/2 does) become one
        // header, as HTTP/1.1 upstreams expect (RFC 9113 section 8.2.3).
        if headers.get_all(header::COOKIE).iter().nth(1).is_some()
            && let Some(v) = joined_values(headers, &header::COOKIE)
        {
            headers.insert(header::COOKIE, v);
        }
        // The forwarding headers: written with the head when the request
        // has none of its own, merged into the map when it has.
        let version = self.parts.version;
        let tls = self.shared.tls;
        let forwarding = Forwarding::new(headers, &self.peer_ip, tls, self.host.as_ref(), version);
        if forwarding.is_none() {
            let hops = self.config.listen.trusted_hops;
            set_forwarded(
                headers,
                &self.peer_ip,
                tls,
                self.host.as_ref(),
                hops,
                version,
            );
        }
        match self.route.and_then(|r| r.host_rewrite.as_deref()) {
            Some(rewrite) => {
                if let Ok(v) = HeaderValue::from_str(rewrite) {
                    headers.insert(header::HOST, v);
                }
            }
            None => {
                if !headers.contains_key(header::HOST)
                    && let Some(h) = self.host.clone()
                {
                    headers.insert(header::HOST, h);
                }
            }
        }
        forwarding
    }
}

/// The request line's target form and the framing the proxy can forward:
/// authority-form (`host:port`) only with CONNECT and asterisk-form (`*`)
/// only with OPTIONS (RFC 9112 3.2.3, 3.2.4), which is answered here and
/// not forwarded (as Envoy does); a transfer coding other than `chunked`
/// alone is one the proxy does not understand (RFC 9112 6.1: 501).
fn request_form(parts: &http::request::Parts) -> Result<(), ProxyError> {
    let uri = &parts.uri;
    if uri.scheme().is_none() && uri.authority().is_some() && parts.method != http::Method::CONNECT
    {
        return Err(ProxyError::BadRequest(
            "authority-form target (host:port) is for CONNECT only".into(),
        ));
    }
    if uri.path() == "*" {
        return Err(if parts.method == http::Method::OPTIONS {
            ProxyError::AsteriskNotForwarded
        } else {
            ProxyError::BadRequest("asterisk-form target (*) is for OPTIONS only".into())
        });
    }
    let mut codings = parts.headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = codings.next() {
        let chunked_alone = codings.next().is_none()
            && first
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked");
        if !chunked_alone {
            return Err(ProxyError::NotImplemented(
                "a transfer coding other than chunked alone".into(),
            ));
        }
    }
    Ok(())
}
