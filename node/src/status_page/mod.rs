//! The live status page on the metrics address (`[node] metrics`):
//! `GET /` is one self-contained page (HTML, CSS and JS built into the
//! binary, no external request) that polls `GET /api/status` every
//! second and draws members, VIPs, listeners, pools and backends with
//! per-node health, rates and sparklines, and recent events.
//!
//! - [`local`]: this node's own detail, which the admin API's `Observe`
//!   returns to any member (read access, like `Status`);
//! - [`merge`]: every member's answer merged into the JSON below;
//! - [`access`]: loopback is open; elsewhere `[node] status_token_file`.
//!
//! `/api/status` on any node asks every member for `Observe` (itself
//! directly, the others over mutual TLS, each within [`ASK_TIMEOUT`]) and
//! answers with one JSON object; a member that does not answer is listed
//! with `reachable: false` and why. Its shape:
//!
//! ```text
//! { served_by, cluster_id, at_ms, leader: id|null,
//!   members:  [{ id, address, role: voter|learner|witness, reachable, error,
//!                state, term, applied, lag, certificate_not_after, pid, version }],
//!   vips:     [{ vip, holders: [id] }],
//!   listeners:[{ name, protocol, bind, pool }],
//!   pools:    [{ name, algorithm, sticky: {id: entries}|null,
//!                backends: [{ address, admin_state, weight, health: {id: up|down|ejected|unknown},
//!                             active, requests, errors, connections }] }],
//!   events:   [{ node, at_ms, kind: leader|vip|backend|admin, text }] }   (newest first)
//! ```
//!
//! `requests`, `errors` and `connections` are totals since each node
//! started, summed over the members that answered; the page turns
//! successive readings into rates.

pub mod access;
pub mod local;
pub mod merge;

use crate::control::leader_link::{LeaderLink, NodeClient};
use crate::view::SharedView;
use access::{Route, Token};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use local::Observer;
use merge::{Answer, Listed};
use raftlb_proto::admin::ObserveRequest;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long `/api/status` waits for each member.
pub const ASK_TIMEOUT: Duration = Duration::from_millis(300);

/// The page, its style and script put together once.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    include_str!("page.html")
        .replace("/*STYLE*/", include_str!("page.css"))
        .replace("/*SCRIPT*/", include_str!("page.js"))
});

/// What `/` and `/api/status` are served from.
#[derive(Clone)]
pub struct Observatory {
    me: u64,
    local: Observer,
    link: LeaderLink,
    token: Option<Token>,
    /// Clients of the other members, by id and address.
    clients: Arc<Mutex<HashMap<(u64, String), NodeClient>>>,
}

impl std::fmt::Debug for Observatory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observatory")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Observatory {
    pub fn new(me: u64, local: Observer, link: LeaderLink, token: Option<Token>) -> Observatory {
        Observatory {
            me,
            local,
            link,
            token,
            clients: Arc::default(),
        }
    }

    /// Shows `view`'s listeners, pools and backends from now on.
    pub fn attach(&self, view: &SharedView) {
        let _ = self.local.view.set(Arc::clone(view));
    }

    /// The answer to `GET path` from `peer`, if `path` is the page's.
    pub async fn answer(
        &self,
        path: &str,
        peer: IpAddr,
        authorization: Option<&str>,
    ) -> Option<Response<Full<Bytes>>> {
        let route = match path {
            "/" | "/index.html" => Route::Page,
            "/api/status" => Route::Api,
            _ if path.starts_with("/api/") => Route::Api,
            _ => return None,
        };
        if let Err((status, sentence)) = access::decide(route, peer, self.token.as_ref(), authorization) {
            return Some(respond(status, "text/plain; charset=utf-8", sentence));
        }
        Some(match (route, path) {
            (Route::Page, _) => respond(StatusCode::OK, "text/html; charset=utf-8", PAGE.clone()),
            (Route::Api, "/api/status") => match serde_json::to_string(&self.status().await) {
                Ok(json) => respond(StatusCode::OK, "application/json", json),
                Err(e) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    format!("cannot encode the status: {e}\n"),
                ),
            },
            (Route::Api, _) => respond(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "try /api/status\n".to_string(),
            ),
        })
    }

    /// Every member asked at once, and the answers merged.
    async fn status(&self) -> merge::Status {
        let here = self.local.reply();
        let mut listed: Vec<Listed> = here
            .status
            .iter()
            .flat_map(|s| &s.members)
            .map(|m| Listed {
                id: m.id,
                address: m.address.clone(),
                role: m.role.clone(),
            })
            .collect();
        if !listed.iter().any(|m| m.id == self.me) {
            listed.push(Listed {
                id: self.me,
                address: String::new(),
                role: "voter".to_string(),
            });
        }
        let asks = listed
            .iter()
            .filter(|m| m.id != self.me)
            .map(|m| async move { (m.id, self.ask(m).await) });
        let mut answers: BTreeMap<u64, Answer> =
            futures_util::future::join_all(asks).await.into_iter().collect();
        answers.insert(self.me, Ok(here));
        let view = self.local.view.get().map(|v| v.load_full());
        let mut listeners: Vec<_> = view.iter().flat_map(|v| v.listeners()).map(|l| &l.spec).collect();
        listeners.sort_by(|a, b| a.name.cmp(&b.name));
        let mut pools: Vec<_> = view.iter().flat_map(|v| v.pools()).map(|p| &p.spec).collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        merge::merge(self.me, at_ms, &listed, &answers, &listeners, &pools)
    }

    /// Member `m`'s `Observe`, or why not.
    async fn ask(&self, m: &Listed) -> Answer {
        let key = (m.id, m.address.clone());
        let cached = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let mut client = match cached {
            Some(client) => client,
            None => {
                let client = self
                    .link
                    .member(m.id, &m.address)
                    .map_err(|s| s.message().to_string())?;
                let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
                clients.retain(|(id, _), _| *id != m.id);
                clients.insert(key, client.clone());
                client
            }
        };
        match tokio::time::timeout(ASK_TIMEOUT, client.observe(ObserveRequest {})).await {
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) => Err(status.message().to_string()),
            Err(_) => Err(format!("no answer within {} ms", ASK_TIMEOUT.as_millis())),
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
        ),
    );
    response
}
