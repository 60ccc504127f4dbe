//! Routing and handlers of the control API (HTTP thread).
//!
//! Handlers return `Result<Answer, Answer>` so `?` can turn any refusal
//! into its JSON error response; the large `Err` is built at most once per
//! request, never on a hot path.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::events::{self, ChannelBody, Kinds};
use super::query::{self, Filter};
use super::{render, ReloadOutcome, Shared, PAGE_SHARE_WINDOW, SHARE_WINDOW};
use crate::http::{Api, Body, ConnState, Via};

/// The [`Api`] the HTTP server calls.
pub struct ControlApi {
    shared: Arc<Shared>,
    tracker_capacity: std::sync::atomic::AtomicU32,
}

type Answer = Response<Body>;

fn json_response(status: StatusCode, v: &Value) -> Answer {
    let mut body = serde_json::to_vec(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, msg: impl Into<String>) -> Answer {
    json_response(status, &json!({ "error": msg.into() }))
}

fn ndjson(body: Body) -> Answer {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// A route of the API, for `varta_control_requests_total{route}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Status,
    Agents,
    Agent(Option<u32>),
    Events,
    Reload,
    Unknown,
}

impl Route {
    fn of(path: &str) -> Route {
        match path.trim_end_matches('/') {
            "/v1/status" => Route::Status,
            "/v1/agents" => Route::Agents,
            "/v1/events" => Route::Events,
            "/v1/reload" => Route::Reload,
            p => match p.strip_prefix("/v1/agents/") {
                Some(pid) if !pid.contains('/') => Route::Agent(pid.parse().ok()),
                _ => Route::Unknown,
            },
        }
    }

    fn label(self) -> &'static str {
        match self {
            Route::Status => "status",
            Route::Agents => "agents",
            Route::Agent(_) => "agent",
            Route::Events => "events",
            Route::Reload => "reload",
            Route::Unknown => "unknown",
        }
    }

    fn method(self) -> Method {
        if self == Route::Reload {
            Method::POST
        } else {
            Method::GET
        }
    }
}

impl ControlApi {
    pub(super) fn new(shared: Arc<Shared>) -> ControlApi {
        ControlApi {
            shared,
            tracker_capacity: Default::default(),
        }
    }

    /// The tracker capacity `/v1/status` shows.
    pub fn set_tracker_capacity(&self, n: u32) {
        self.tracker_capacity
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    async fn answer(
        &self,
        method: Method,
        path: &str,
        query: Option<&str>,
        via: Via,
        conn: Arc<ConnState>,
    ) -> Answer {
        let route = Route::of(path);
        if route == Route::Unknown {
            return error(
                StatusCode::NOT_FOUND,
                format!("no route {path}; routes: /v1/status, /v1/agents, /v1/agents/PID, /v1/events, /v1/reload (see docs/api.md)"),
            );
        }
        if route == Route::Reload && via == Via::Tcp {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "reload is only served on the control Unix socket (--control-socket)",
            );
            r.headers_mut().insert(ALLOW, HeaderValue::from_static(""));
            return r;
        }
        // HEAD is answered as GET by hyper's rules for bodies? No: refuse
        // everything but the route's method, naming it.
        if method != route.method() {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} takes {} only", route.method()),
            );
            r.headers_mut().insert(
                ALLOW,
                HeaderValue::from_static(if route == Route::Reload {
                    "POST"
                } else {
                    "GET"
                }),
            );
            return r;
        }
        let res = match route {
            Route::Status => self.status(query).await,
            Route::Agents => self.agents(query).await,
            Route::Agent(pid) => self.agent(pid, path, query).await,
            Route::Events => self.events(query, conn).await,
            Route::Reload => self.reload(query).await,
            Route::Unknown => unreachable!("answered above"),
        };
        res.unwrap_or_else(|e| e)
    }

    async fn snapshot(
        &self,
        window: std::time::Duration,
    ) -> Result<Arc<super::AgentsSnapshot>, Answer> {
        self.shared
            .snapshot(window)
            .await
            .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
    }

    async fn status(&self, q: Option<&str>) -> Result<Answer, Answer> {
        query::params(q, &[]).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
        let snap = self.snapshot(SHARE_WINDOW).await?;
        let cap = self
            .tracker_capacity
            .load(std::sync::atomic::Ordering::Relaxed);
        Ok(json_response(
            StatusCode::OK,
            &render::status(&self.shared, &snap, cap),
        ))
    }

    async fn agents(&self, q: Option<&str>) -> Result<Answer, Answer> {
        let bad = |e: String| error(StatusCode::BAD_REQUEST, e);
        let p = query::params(q, &["state", "name", "limit", "cursor"]).map_err(bad)?;
        let limit = query::limit(p.get("limit"), query::AGENTS_LIMIT).map_err(bad)?;
        let after = query::cursor(p.get("cursor")).map_err(bad)?;
        let history = self.shared.history.clone();
        let filter = Filter::parse(p.get("state"), p.get("name"), || {
            history.map(|h| h.given_up()).unwrap_or_default()
        })
        .map_err(bad)?;
        let window = if after.is_some() {
            PAGE_SHARE_WINDOW
        } else {
            SHARE_WINDOW
        };
        let snap = self.snapshot(window).await?;
        let reg = &self.shared.registry;
        let page = query::page(&snap, reg, &filter, after, limit);
        let recovery_on = self.shared.settings().recovery_on;
        let hist = self.shared.history.as_deref();
        let agents: Vec<Value> = page
            .slots
            .iter()
            .map(|&i| render::agent(&snap, snap.record(i), reg, hist, recovery_on))
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "agents": agents,
                "total": page.total,
                "next_cursor": page.next.map(query::cursor_text),
                "snapshot_age_ms": snap.age_ms(),
            }),
        ))
    }

    async fn agent(&self, pid: Option<u32>, path: &str, q: Option<&str>) -> Result<Answer, Answer> {
        query::params(q, &[]).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
        let Some(pid) = pid else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("{path}: the last part must be a pid (a number)"),
            ));
        };
        let snap = self.snapshot(SHARE_WINDOW).await?;
        let Some(s) = snap.find(pid) else {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("pid {pid} is not tracked"),
            ));
        };
        let v = render::agent(
            &snap,
            s,
            &self.shared.registry,
            self.shared.history.as_deref(),
            self.shared.settings().recovery_on,
        );
        Ok(json_response(StatusCode::OK, &v))
    }

    async fn events(&self, q: Option<&str>, conn: Arc<ConnState>) -> Result<Answer, Answer> {
        let bad = |e: String| error(StatusCode::BAD_REQUEST, e);
        let p = query::params(q, &["follow", "kind", "limit"]).map_err(bad)?;
        let follow = match p.get("follow").map(String::as_str) {
            None | Some("0") => false,
            Some("1") => true,
            Some(v) => return Err(bad(format!("follow={v}: use follow=1 (or leave it out)"))),
        };
        let kinds = Kinds::parse(p.get("kind").map(String::as_str)).map_err(bad)?;
        if follow {
            if p.contains_key("limit") {
                return Err(bad("limit= applies without follow=1 only".into()));
            }
            let rx = events::follow(
                self.shared.stats.events.clone(),
                kinds,
                self.shared.registry.clone(),
                conn,
            );
            return Ok(ndjson(ChannelBody(rx).boxed()));
        }
        let limit = query::limit(p.get("limit"), query::EVENTS_LIMIT).map_err(bad)?;
        let body = events::recent(
            &self.shared.stats.events,
            &kinds,
            limit,
            &self.shared.registry,
        );
        Ok(ndjson(Full::new(Bytes::from(body)).boxed()))
    }

    async fn reload(&self, q: Option<&str>) -> Result<Answer, Answer> {
        query::params(q, &[]).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
        let o = self
            .shared
            .reload()
            .await
            .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        let status = match o {
            ReloadOutcome::Failed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::OK,
        };
        Ok(json_response(status, &render::reload(&o)))
    }
}

impl Api for ControlApi {
    fn call(
        &self,
        method: Method,
        path: String,
        query: Option<String>,
        via: Via,
        conn: Arc<ConnState>,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>> {
        Box::pin(async move {
            let r = self
                .answer(method, &path, query.as_deref(), via, conn)
                .await;
            self.shared
                .stats
                .request(Route::of(&path).label(), r.status().as_u16());
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::of("/v1/status"), Route::Status);
        assert_eq!(Route::of("/v1/agents/"), Route::Agents);
        assert_eq!(Route::of("/v1/agents/12"), Route::Agent(Some(12)));
        assert_eq!(Route::of("/v1/agents/x"), Route::Agent(None));
        assert_eq!(Route::of("/v1/agents/1/2"), Route::Unknown);
        assert_eq!(Route::of("/v2/status"), Route::Unknown);
        assert_eq!(Route::Reload.method(), Method::POST);
    }

    #[test]
    fn errors_are_json() {
        let r = error(StatusCode::BAD_REQUEST, "bad");
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }
}
