//! The webhook receiver both Alertmanagers notify: a tiny_http server on a
//! free loopback port that answers 200 and keeps every notification with
//! the path it came to (the bundle routes by severity to `/varta/chat` and
//! `/varta/pager`) and the time it arrived.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One webhook POST from an Alertmanager.
#[derive(Clone, Debug)]
pub struct Notification {
    pub at: Instant,
    pub path: String,
    pub body: Value,
}

impl Notification {
    /// The `externalURL` of the Alertmanager that sent it (each peer is
    /// started with its own `--web.external-url`).
    pub fn sender(&self) -> &str {
        self.body["externalURL"].as_str().unwrap_or("?")
    }

    /// The alerts in it with `status`, as (alertname, instance, name).
    pub fn alerts(&self, status: &str) -> Vec<AlertKey> {
        self.body["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["status"] == status)
            .map(|a| AlertKey::of(&a["labels"]))
            .collect()
    }
}

/// What identifies an alert for "notified exactly once": with the bundle's
/// `group_by: [alertname, instance, name]` each key is its own group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlertKey {
    pub alertname: String,
    pub instance: String,
    /// Empty for alerts without a `name` label (VartaObserverDown).
    pub name: String,
}

impl AlertKey {
    pub fn new(alertname: &str, instance: &str, name: &str) -> AlertKey {
        AlertKey {
            alertname: alertname.into(),
            instance: instance.into(),
            name: name.into(),
        }
    }

    pub fn of(labels: &Value) -> AlertKey {
        let s = |k: &str| labels[k].as_str().unwrap_or("").to_string();
        AlertKey {
            alertname: s("alertname"),
            instance: s("instance"),
            name: s("name"),
        }
    }
}

impl std::fmt::Display for AlertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{{{}/{}}}", self.alertname, self.instance, self.name)
    }
}

/// Stops its server thread when dropped.
pub struct Webhook {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Notification>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Webhook {
    pub fn start() -> Webhook {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let addr = server.server_addr().to_ip().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                let mut text = String::new();
                let _ = req.as_reader().read_to_string(&mut text);
                let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                l.lock().unwrap().push(Notification {
                    at: Instant::now(),
                    path: req.url().to_string(),
                    body,
                });
                let _ = req.respond(tiny_http::Response::empty(200));
            }
        });
        Webhook {
            addr,
            log,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn notifications(&self) -> Vec<Notification> {
        self.log.lock().unwrap().clone()
    }

    /// The notifications carrying `key` with status firing.
    pub fn firing(&self, key: &AlertKey) -> Vec<Notification> {
        self.notifications()
            .into_iter()
            .filter(|n| n.alerts("firing").contains(key))
            .collect()
    }

    /// The labels of every firing alert notified under `key`.
    pub fn firing_labels(&self, key: &AlertKey) -> Vec<Value> {
        self.notifications()
            .iter()
            .flat_map(|n| n.body["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["status"] == "firing" && AlertKey::of(&a["labels"]) == *key)
            .map(|a| a["labels"].clone())
            .collect()
    }

    /// Every notification, one line each, for failure messages.
    pub fn dump(&self, t0: Instant) -> String {
        let mut out = String::new();
        for n in self.notifications() {
            let alerts = |st: &str| {
                n.alerts(st)
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            out += &format!(
                "  +{:.1}s {} from {}: firing [{}] resolved [{}]\n",
                n.at.duration_since(t0).as_secs_f64(),
                n.path,
                n.sender(),
                alerts("firing"),
                alerts("resolved"),
            );
        }
        out
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
