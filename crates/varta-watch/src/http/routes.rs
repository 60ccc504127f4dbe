//! Request routing: `/metrics` (rate limit, then token, then render),
//! `/-/healthy`, `/-/ready`; 405 with `Allow: GET` for any other method on
//! those paths, 404 for everything else.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};

use super::limit::{IpLimiter, Refusal};
use super::{Format, HttpCounters, RefusalReason, Service};
use crate::http::auth::Token;

/// What every connection's handler shares.
pub(super) struct Ctx {
    pub service: Arc<dyn Service>,
    pub token: Option<Token>,
    pub limiter: Mutex<IpLimiter>,
    pub counters: Arc<HttpCounters>,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROM_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
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

    /// Handles one request from `peer`.
    pub(super) async fn handle<B>(&self, req: Request<B>, peer: IpAddr) -> Response<Full<Bytes>> {
        let path = req.uri().path();
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
                if self.service.healthy() {
                    text(StatusCode::OK, "healthy\n")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the detection loop is not advancing\n",
                    )
                }
            }
            _ => self.metrics(req, peer).await,
        }
    }

    async fn metrics<B>(&self, req: Request<B>, peer: IpAddr) -> Response<Full<Bytes>> {
        let limited = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(peer, Instant::now());
        match limited {
            Ok(()) => {}
            Err(Refusal::RateLimited) => {
                self.refuse(RefusalReason::RateLimited);
                return text(StatusCode::TOO_MANY_REQUESTS, "rate limited\n");
            }
            Err(Refusal::TableFull) => {
                self.refuse(RefusalReason::IpTableFull);
                return text(StatusCode::TOO_MANY_REQUESTS, "too many sources\n");
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
                return r;
            }
        }
        let format = if wants_openmetrics(&req) {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        };
        let body = self.service.render(format).await;
        self.counters.scrapes.fetch_add(1, Ordering::Relaxed);
        let mut r = Response::new(Full::new(Bytes::from(body)));
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
