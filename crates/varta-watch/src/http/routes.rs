//! Request routing: `/metrics` (rate limit, then token, then render),
//! `/-/healthy`, `/-/ready`; 405 with `Allow: GET` for any other method on
//! those paths; `/api/v1/…` (rate limit, then token, then the control
//! [`Api`]); 404 for everything else. On the control Unix socket every
//! request goes to the [`Api`].

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};

use super::limit::{IpLimiter, Refusal};
use super::{Api, Body, ConnState, Format, HttpCounters, RefusalReason, Service, Via};
use crate::http::auth::Token;

/// What every connection's handler shares.
pub(super) struct Ctx {
    /// `/metrics` and health; None when only the control API is served.
    pub service: Option<Arc<dyn Service>>,
    /// The control API, if served.
    pub api: Option<Arc<dyn Api>>,
    pub token: Option<Token>,
    pub limiter: Mutex<IpLimiter>,
    pub counters: Arc<HttpCounters>,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROM_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The scraper asked for OpenMetrics (Prometheus sends it first in
/// `Accept` when it supports it).
pub(super) fn wants_openmetrics<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let mut it = part.split(';').map(str::trim);
            let media = it.next().unwrap_or("");
            // `q=0` means "not acceptable".
            let refused = it.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
}

impl Ctx {
    fn refuse(&self, reason: RefusalReason) {
        self.counters.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Handles one request from the control Unix socket.
    pub(super) async fn handle_unix<B>(
        &self,
        req: Request<B>,
        conn: Arc<ConnState>,
    ) -> Response<Body> {
        match &self.api {
            Some(api) => {
                let (method, path, query) = parts(&req);
                api.call(method, path, query, Via::Unix, conn).await
            }
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// Handles one request from `peer`.
    pub(super) async fn handle<B>(
        &self,
        req: Request<B>,
        peer: IpAddr,
        conn: Arc<ConnState>,
    ) -> Response<Body> {
        let path = req.uri().path();
        if let (Some(api), Some(rest)) = (&self.api, path.strip_prefix("/api")) {
            if rest.starts_with("/v1/") {
                if let Some(refused) = self.admit(&req, peer) {
                    return refused;
                }
                let (method, _, query) = parts(&req);
                return api
                    .call(method, rest.to_string(), query, Via::Tcp, conn)
                    .await;
            }
        }
        let Some(service) = &self.service else {
            self.refuse(RefusalReason::NotFound);
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        let known = matches!(path, "/metrics" | "/-/healthy" | "/-/ready");
        if !known {
            self.refuse(RefusalReason::NotFound);
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        if req.method() != Method::GET {
            self.refuse(RefusalReason::MethodNotAllowed);
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            return r;
        }
        match path {
            "/-/ready" => text(StatusCode::OK, "ready\n"),
            "/-/healthy" => {
                if service.healthy() {
                    text(StatusCode::OK, "healthy\n")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the detection loop is not advancing\n",
                    )
                }
            }
            _ => self.metrics(req, peer, service).await,
        }
    }

    /// The `/metrics` gate, also in front of `/api/v1/…`: the source's
    /// rate limit, then the bearer token. Some: the refusal to send.
    fn admit<B>(&self, req: &Request<B>, peer: IpAddr) -> Option<Response<Body>> {
        let limited = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(peer, Instant::now());
        match limited {
            Ok(()) => {}
            Err(Refusal::RateLimited) => {
                self.refuse(RefusalReason::RateLimited);
                return Some(text(StatusCode::TOO_MANY_REQUESTS, "rate limited\n"));
            }
            Err(Refusal::TableFull) => {
                self.refuse(RefusalReason::IpTableFull);
                return Some(text(StatusCode::TOO_MANY_REQUESTS, "too many sources\n"));
            }
        }
        if let Some(token) = &self.token {
            let header = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .map(HeaderValue::as_bytes);
            if !token.accepts(header) {
                self.refuse(RefusalReason::Unauthorized);
                let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
                r.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"varta\""),
                );
                return Some(r);
            }
        }
        None
    }

    async fn metrics<B>(
        &self,
        req: Request<B>,
        peer: IpAddr,
        service: &Arc<dyn Service>,
    ) -> Response<Body> {
        if let Some(refused) = self.admit(&req, peer) {
            return refused;
        }
        let format = if wants_openmetrics(&req) {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        };
        let body = service.render(format).await;
        self.counters.scrapes.fetch_add(1, Ordering::Relaxed);
        let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(match format {
                Format::OpenMetrics => OPENMETRICS,
                Format::Prometheus => PROM_TEXT,
            }),
        );
        r
    }
}

/// Method, path and query of `req`, owned (the API future outlives it).
fn parts<B>(req: &Request<B>) -> (Method, String, Option<String>) {
    (
        req.method().clone(),
        req.uri().path().to_string(),
        req.uri().query().map(str::to_string),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(accept: &str) -> Request<()> {
        Request::builder()
            .header("accept", accept)
            .body(())
            .unwrap()
    }

    #[test]
    fn accept_negotiation() {
        assert!(wants_openmetrics(&req(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(&req("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(&req("application/openmetrics-text;q=0")));
        assert!(!wants_openmetrics(&Request::new(())));
    }
}
