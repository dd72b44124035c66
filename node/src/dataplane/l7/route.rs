//! Content routing at work: a listener's `[[listener.route]]` rules,
//! compiled once per view (regular expressions, header names and values)
//! and tried in order against each request. The first rule whose every
//! condition holds takes the request to its pool, with its header changes.

use super::cookies;
use crate::view::PoolView;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use raftlb_config::{RouteMatch, RouteSpec};
use std::collections::HashMap;
use std::sync::Arc;

/// One compiled route.
#[derive(Debug)]
pub struct RouteView {
    host: Option<String>,
    path: Option<String>,
    path_prefix: Option<String>,
    path_regex: Option<regex::Regex>,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, HeaderValue)>,
    cookies: Vec<(String, String)>,
    pub pool: Arc<PoolView>,
    set_headers: Vec<(HeaderName, HeaderValue)>,
    remove_headers: Vec<HeaderName>,
}

impl RouteView {
    /// Compiles `spec`, sending to its pool in `pools`; `None` if the pool
    /// is missing or a value does not compile (the replicated state's
    /// checks make both impossible).
    pub fn build(spec: &RouteSpec, pools: &HashMap<String, Arc<PoolView>>) -> Option<RouteView> {
        let m: &RouteMatch = &spec.matches;
        let header_pairs = |pairs: &[(String, String)]| -> Option<Vec<(HeaderName, HeaderValue)>> {
            pairs
                .iter()
                .map(|(n, v)| {
                    Some((
                        HeaderName::from_bytes(n.as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect()
        };
        Some(RouteView {
            host: m.host.clone(),
            path: m.path.clone(),
            path_prefix: m.path_prefix.clone(),
            path_regex: match &m.path_regex {
                Some(re) => Some(regex::Regex::new(re).ok()?),
                None => None,
            },
            methods: m
                .methods
                .iter()
                .map(|name| Method::from_bytes(name.as_bytes()).ok())
                .collect::<Option<_>>()?,
            headers: header_pairs(&m.headers)?,
            cookies: m.cookies.clone(),
            pool: Arc::clone(pools.get(&spec.pool)?),
            set_headers: header_pairs(&spec.set_headers)?,
            remove_headers: spec
                .remove_headers
                .iter()
                .map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect::<Option<_>>()?,
        })
    }

    /// Whether every condition of the route holds for `request`.
    pub fn matches<B>(&self, request: &Request<B>) -> bool {
        let path = request.uri().path();
        (self.methods.is_empty() || self.methods.contains(request.method()))
            && self
                .host
                .as_deref()
                .is_none_or(|h| host(request).is_some_and(|r| RouteMatch::host_matches(h, &r)))
            && self.path.as_deref().is_none_or(|p| p == path)
            && self.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
            && self.path_regex.as_ref().is_none_or(|re| re.is_match(path))
            && self
                .headers
                .iter()
                .all(|(name, value)| request.headers().get_all(name).iter().any(|v| v == value))
            && self.cookies.iter().all(|(name, value)| {
                cookies::request_cookie(request.headers(), name) == Some(value.as_bytes())
            })
    }

    /// Applies the route's header changes to a request bound for its pool.
    pub fn rewrite(&self, headers: &mut HeaderMap) {
        for name in &self.remove_headers {
            headers.remove(name);
        }
        for (name, value) in &self.set_headers {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// The request's host, lower case, without port: from the URI (HTTP/2's
/// `:authority`, or an absolute-form target) or the `Host` header.
fn host<B>(request: &Request<B>) -> Option<String> {
    let raw = match request.uri().host() {
        Some(host) => host.to_string(),
        None => {
            let value = request.headers().get(header::HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = value.parse().ok()?;
            authority.host().to_string()
        }
    };
    Some(raw.trim_end_matches('.').to_ascii_lowercase())
}

/// The first route of `routes` that takes `request`.
pub fn find<'r, B>(routes: &'r [RouteView], request: &Request<B>) -> Option<&'r RouteView> {
    routes.iter().find(|route| route.matches(request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools() -> HashMap<String, Arc<PoolView>> {
        let spec = crate::balance::test_pool(&[1]);
        let state = {
            let mut state = raftlb_config::ClusterState::default();
            let seed = raftlb_config::ClusterSpec {
                listeners: Vec::new(),
                pools: vec![spec],
                gslb: None,
            };
            state.apply(raftlb_config::Command::Bootstrap(seed));
            state
        };
        let view = crate::view::ClusterView::build(&state, 0, None, None);
        HashMap::from([("p".to_string(), Arc::clone(view.pool("p").unwrap()))])
    }

    fn route(m: RouteMatch) -> RouteView {
        let spec = RouteSpec {
            matches: m,
            pool: "p".to_string(),
            set_headers: vec![("X-Route".into(), "r".into())],
            remove_headers: vec!["X-Internal".into()],
        };
        RouteView::build(&spec, &pools()).unwrap()
    }

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            builder = builder.header(*n, *v);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn every_condition_must_hold() {
        let r = route(RouteMatch {
            host: Some("*.example.com".into()),
            path_prefix: Some("/api/".into()),
            methods: vec!["GET".into(), "HEAD".into()],
            headers: vec![("x-env".into(), "canary".into())],
            cookies: vec![("beta".into(), "1".into())],
            ..RouteMatch::default()
        });
        let good = [
            ("host", "API.example.com:8080"),
            ("X-Env", "canary"),
            ("cookie", "a=b; beta=1"),
        ];
        assert!(r.matches(&request("GET", "/api/users", &good)));
        assert!(!r.matches(&request("POST", "/api/users", &good)));
        assert!(!r.matches(&request("GET", "/web", &good)));
        assert!(!r.matches(&request("GET", "/api/users", &good[..2])));
        assert!(!r.matches(&request("GET", "/api/users", &[good[0], good[2]])));
        assert!(!r.matches(&request(
            "GET",
            "/api/users",
            &[("host", "example.com"), good[1], good[2]]
        )));
        // HTTP/2: the host comes from :authority.
        assert!(r.matches(&request("GET", "http://x.example.com/api/", &good[1..])));
    }

    #[test]
    fn exact_paths_regexes_and_rewrites() {
        let exact = route(RouteMatch {
            path: Some("/login".into()),
            ..RouteMatch::default()
        });
        assert!(exact.matches(&request("GET", "/login", &[])));
        assert!(!exact.matches(&request("GET", "/login/x", &[])));
        let re = route(RouteMatch {
            path_regex: Some("^/items/[0-9]+$".into()),
            ..RouteMatch::default()
        });
        assert!(re.matches(&request("GET", "/items/42", &[])));
        assert!(!re.matches(&request("GET", "/items/x", &[])));
        let any = route(RouteMatch::default());
        assert!(any.matches(&request("DELETE", "/whatever", &[])));
        let mut headers = HeaderMap::new();
        headers.insert("x-internal", HeaderValue::from_static("secret"));
        headers.insert("x-route", HeaderValue::from_static("client-sent"));
        any.rewrite(&mut headers);
        assert!(headers.get("x-internal").is_none());
        assert_eq!(headers.get("x-route").unwrap(), "r");
    }
}
