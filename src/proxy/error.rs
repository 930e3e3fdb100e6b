//! Every error the proxy answers itself, mapped to its status and JSON body
//! in one place: `{"error": ..., "route": ..., "upstream": ...}`.

use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use crate::http1::server::HeadError;
use crate::upstream::body::ProxyBody;

/// What went wrong while proxying a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("missing Host header")]
    MissingHost,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("cannot connect to upstream: {0}")]
    ConnectFailed(String),
    #[error("upstream connection failed: {0}")]
    UpstreamBroken(String),
    #[error("upstream did not send response headers within {0:?}")]
    UpstreamTimeout(std::time::Duration),
    #[error("no healthy upstream instance")]
    NoHealthyInstance,
    #[error("method {0} is not supported by this proxy")]
    MethodNotAllowed(String),
    #[error("rate limit exceeded; retry after {}s", .0.as_secs_f64().ceil())]
    RateLimited(std::time::Duration),
    #[error("{0}")]
    Unauthorized(String),
    #[error("request head too large: over max_header_bytes or max_headers")]
    HeadTooLarge,
    #[error("request target too long")]
    UriTooLong,
    /// The client's request body failed on its way (an invalid chunk, the
    /// client gone midway): the client's fault, never the upstream's.
    #[error("invalid or incomplete request body")]
    ClientBody,
    /// The client had not sent its whole body when the upstream timeout
    /// fired.
    #[error("request body not received within {0:?}")]
    ClientBodyTimeout(std::time::Duration),
    #[error("not implemented: {0}")]
    NotImplemented(String),
    #[error("OPTIONS * asks about the proxy itself and is not forwarded")]
    AsteriskNotForwarded,
}

impl From<HeadError> for ProxyError {
    fn from(err: HeadError) -> Self {
        match err {
            HeadError::BadRequest(why) => ProxyError::BadRequest(why),
            HeadError::HeadTooLarge => ProxyError::HeadTooLarge,
            HeadError::UriTooLong => ProxyError::UriTooLong,
            HeadError::InterimAsFinal(status) => ProxyError::UpstreamBroken(format!(
                "upstream answered {status} as its final response"
            )),
        }
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::MissingHost | ProxyError::DuplicateHost | ProxyError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::ConnectFailed(_) | ProxyError::UpstreamBroken(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::NoHealthyInstance => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::ClientBody => StatusCode::BAD_REQUEST,
            ProxyError::ClientBodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::AsteriskNotForwarded => StatusCode::NOT_FOUND,
        }
    }

    /// The JSON response for this error.
    pub fn response(&self, route: Option<&str>, upstream: Option<&str>) -> Response<ProxyBody> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: String,
            route: Option<&'a str>,
            upstream: Option<&'a str>,
        }
        let body = serde_json::to_vec(&Body {
            error: self.to_string(),
            route,
            upstream,
        })
        .unwrap_or_else(|_| br#"{"error":"internal error"}"#.to_vec());
        let mut resp = Response::new(ProxyBody::full(body));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}
