//! The control API client: HTTP/1.1 over the observer's Unix control
//! socket (docs/api.md), on a current-thread tokio runtime.
//!
//! Every call opens one connection, sends one request and reads the answer,
//! all under one deadline (`--timeout-ms`); only the body of a followed
//! event stream is exempt from it. Failures are a [`ClientError`], whose
//! `Display` is the single line the CLI prints.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Largest JSON body accepted (a page of 10,000 agents is a few MB).
const MAX_BODY: usize = 64 << 20;
/// Longest event line accepted before the stream is treated as broken.
const MAX_LINE: usize = 1 << 20;

/// Why a control API call failed. Each variant renders as one line that
/// says what happened and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket path does not exist.
    #[error("cannot reach the observer at {0}: no such file (is varta-watch running? set --control-socket or VARTA_CONTROL_SOCKET)")]
    NoSocket(PathBuf),
    /// The path exists but nobody accepts connections on it.
    #[error("cannot reach the observer at {0}: connection refused, nobody is listening (a stale socket or not a socket: is varta-watch running?)")]
    Refused(PathBuf),
    /// The socket or a directory on its path is not accessible to us.
    #[error("cannot reach the observer at {0}: permission denied (the control socket is mode 0600: run as the observer's user, e.g. with sudo)")]
    Denied(PathBuf),
    /// Any other failure to connect.
    #[error("cannot reach the observer at {path}: {source}")]
    Connect {
        /// The control socket.
        path: PathBuf,
        /// What connect(2) said.
        source: io::Error,
    },
    /// No complete answer before the deadline.
    #[error(
        "the observer at {path} did not answer within {ms} ms (raise --timeout-ms if it is busy)"
    )]
    Timeout {
        /// The control socket.
        path: PathBuf,
        /// The deadline that passed.
        ms: u128,
    },
    /// The HTTP exchange broke (connection reset, malformed response).
    #[error("talking to the observer at {path} failed: {msg}")]
    Http {
        /// The control socket.
        path: PathBuf,
        /// hyper's description.
        msg: String,
    },
    /// The observer answered with an error status; `message` is its
    /// `error` field.
    #[error("the observer refused the request: {message} (HTTP {status})")]
    Api {
        /// The HTTP status code.
        status: u16,
        /// The `error` message of the JSON body (or the raw body).
        message: String,
    },
    /// A 2xx answer whose body is not the JSON this CLI expects.
    #[error("unexpected answer from the observer for {route}: {msg} (is the CLI the same version as varta-watch?)")]
    BadBody {
        /// The request path.
        route: String,
        /// What did not parse.
        msg: String,
    },
    /// The tokio runtime could not be started.
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(io::Error),
}

/// How a streamed body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The observer ended the response.
    Closed,
    /// The user pressed Ctrl-C.
    Interrupted,
    /// The line callback asked to stop (e.g. standard output was closed).
    Stopped,
}

/// A connection factory for one control socket.
pub struct Control {
    path: PathBuf,
    timeout: Duration,
    rt: tokio::runtime::Runtime,
}

/// An error answer: `{"error": "..."}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

impl Control {
    /// A client for the socket at `path` with a per-request deadline.
    pub fn new(path: PathBuf, timeout: Duration) -> Result<Control, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(ClientError::Runtime)?;
        Ok(Control { path, timeout, rt })
    }

    /// `GET route` and parse the JSON answer; non-2xx answers become
    /// [`ClientError::Api`].
    pub fn get_json<T: DeserializeOwned>(&self, route: &str) -> Result<T, ClientError> {
        let (status, body) = self.request(Method::GET, route)?;
        if !status.is_success() {
            return Err(api_error(status, &body));
        }
        parse_body(route, &body)
    }

    /// Sends `method route` and returns the status and whole body, whatever
    /// the status (for routes whose error answers carry data, like reload).
    pub fn request(&self, method: Method, route: &str) -> Result<(StatusCode, Bytes), ClientError> {
        let fut = async {
            let resp = self.send(method, route).await?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| self.http_err(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        self.rt.block_on(self.deadline(fut))
    }

    /// `GET route` and hand each line of the body to `on_line` as it
    /// arrives. With `follow`, only connecting and the response headers are
    /// under the deadline and Ctrl-C ends the stream cleanly. `on_line`
    /// returns `false` to stop.
    pub fn stream_lines(
        &self,
        route: &str,
        follow: bool,
        mut on_line: impl FnMut(&[u8]) -> bool,
    ) -> Result<StreamEnd, ClientError> {
        self.rt.block_on(async {
            let resp = self.deadline(self.send(Method::GET, route)).await?;
            let status = resp.status();
            if !status.is_success() {
                let body = self.deadline(async {
                    Limited::new(resp.into_body(), MAX_BODY)
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .map_err(|e| self.http_err(e.to_string()))
                });
                return Err(api_error(status, &body.await?));
            }
            let read = self.read_lines(resp.into_body(), &mut on_line);
            if follow {
                tokio::select! {
                    end = read => end,
                    _ = tokio::signal::ctrl_c() => Ok(StreamEnd::Interrupted),
                }
            } else {
                self.deadline(read).await
            }
        })
    }

    async fn read_lines(
        &self,
        mut body: Incoming,
        on_line: &mut impl FnMut(&[u8]) -> bool,
    ) -> Result<StreamEnd, ClientError> {
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.http_err(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            let mut start = 0;
            while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
                let line = &buf[start..start + nl];
                start += nl + 1;
                if !line.iter().all(u8::is_ascii_whitespace) && !on_line(line) {
                    return Ok(StreamEnd::Stopped);
                }
            }
            buf.drain(..start);
            if buf.len() > MAX_LINE {
                return Err(self.http_err(format!("an event line is over {MAX_LINE} bytes")));
            }
        }
        if !buf.iter().all(u8::is_ascii_whitespace) && !on_line(&buf) {
            return Ok(StreamEnd::Stopped);
        }
        Ok(StreamEnd::Closed)
    }

    async fn send(&self, method: Method, route: &str) -> Result<Response<Incoming>, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.path)
            .await
            .map_err(|e| self.connect_err(e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http_err(e.to_string()))?;
        // The connection task ends with the response (or with the runtime).
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(route)
            .header(HOST, "localhost")
            .header(ACCEPT, "application/json, application/x-ndjson")
            .header(CONTENT_TYPE, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| self.http_err(e.to_string()))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| self.http_err(e.to_string()))
    }

    async fn deadline<T>(
        &self,
        fut: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                path: self.path.clone(),
                ms: self.timeout.as_millis(),
            }),
        }
    }

    fn connect_err(&self, e: io::Error) -> ClientError {
        let path = self.path.clone();
        match e.kind() {
            io::ErrorKind::NotFound => ClientError::NoSocket(path),
            io::ErrorKind::ConnectionRefused => ClientError::Refused(path),
            io::ErrorKind::PermissionDenied => ClientError::Denied(path),
            _ => ClientError::Connect { path, source: e },
        }
    }

    fn http_err(&self, msg: String) -> ClientError {
        ClientError::Http {
            path: self.path.clone(),
            msg,
        }
    }
}

/// Parses a JSON body, naming the route on failure.
pub fn parse_body<T: DeserializeOwned>(route: &str, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::BadBody {
        route: route.split('?').next().unwrap_or(route).to_owned(),
        msg: e.to_string(),
    })
}

/// The error of a non-2xx answer: its JSON `error` message, or the start
/// of the raw body when it is not the documented JSON.
pub fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => b.error,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("no message").to_owned()
            } else {
                text.chars().take(200).collect()
            }
        }
    };
    ClientError::Api {
        status: status.as_u16(),
        message,
    }
}

/// Builds `route?k=v&…`, leaving out `None` values and percent-encoding
/// what a query value may not hold literally. Glob characters `*` and the
/// list separator `,` are kept as they are (both legal in a query).
pub fn with_query(route: &str, params: &[(&str, Option<&str>)]) -> String {
    let mut out = route.to_owned();
    let mut sep = '?';
    for (k, v) in params {
        let Some(v) = v else { continue };
        out.push(sep);
        sep = '&';
        out.push_str(k);
        out.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~*,:@/!$'()".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encodes_only_what_it_must() {
        assert_eq!(
            with_query(
                "/v1/agents",
                &[
                    ("state", Some("stalled,given_up")),
                    ("name", Some("ng inx*&[a]?")),
                    ("cursor", None),
                    ("limit", Some("10")),
                ]
            ),
            "/v1/agents?state=stalled,given_up&name=ng%20inx*%26%5Ba%5D%3F&limit=10"
        );
        assert_eq!(with_query("/v1/status", &[("x", None)]), "/v1/status");
    }

    #[test]
    fn api_error_prefers_the_json_message() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            br#"{"error":"pid 7 is not tracked"}"#,
        );
        assert_eq!(
            e.to_string(),
            "the observer refused the request: pid 7 is not tracked (HTTP 404)"
        );
        let e = api_error(StatusCode::BAD_GATEWAY, b"");
        assert!(e.to_string().contains("Bad Gateway (HTTP 502)"), "{e}");
    }

    #[test]
    fn connect_errors_are_one_clear_line() {
        let c = Control::new("/nope/varta.ctl".into(), Duration::from_millis(100)).unwrap();
        let e = c.get_json::<serde_json::Value>("/v1/status").unwrap_err();
        assert!(matches!(e, ClientError::NoSocket(_)), "{e:?}");
        let line = e.to_string();
        assert!(!line.contains('\n'));
        assert!(line.contains("/nope/varta.ctl"));
    }
}
