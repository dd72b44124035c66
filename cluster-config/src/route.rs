//! Content routing: a listener's ordered `[[listener.route]]` rules. The
//! first rule whose every condition holds picks the pool and the header
//! changes; no match falls to the listener's own `pool`, or 404 without one.

use serde::{Deserialize, Serialize};

/// One `[[listener.route]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub matches: RouteMatch,
    pub pool: String,
    /// Set on the request to the backend (replacing any value the client sent).
    pub set_headers: Vec<(String, String)>,
    /// Removed from the request to the backend.
    pub remove_headers: Vec<String>,
}

/// What a request must have for a route to take it: every condition given.
/// No condition at all matches every request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteMatch {
    /// The request's host (without port), case-insensitive; `*.example.com`
    /// matches any one or more labels before `.example.com`.
    pub host: Option<String>,
    /// The path, exactly.
    pub path: Option<String>,
    /// The path starts with this.
    pub path_prefix: Option<String>,
    /// The path matches this regular expression (Rust `regex` syntax,
    /// unanchored unless written with `^…$`).
    pub path_regex: Option<String>,
    /// The method is one of these (upper case).
    pub methods: Vec<String>,
    /// Each header is present with exactly this value (names case-insensitive).
    pub headers: Vec<(String, String)>,
    /// Each cookie is present with exactly this value.
    pub cookies: Vec<(String, String)>,
}

impl RouteMatch {
    /// Whether `host` (lower case, no port) fits the rule's host.
    pub fn host_matches(pattern: &str, host: &str) -> bool {
        match pattern.strip_prefix("*.") {
            Some(suffix) => {
                host.len() > suffix.len() + 1 && host.ends_with(suffix) && {
                    let cut = host.len() - suffix.len();
                    host.as_bytes()[cut - 1] == b'.'
                }
            }
            None => pattern.eq_ignore_ascii_case(host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_hosts_need_a_label() {
        assert!(RouteMatch::host_matches("*.example.com", "api.example.com"));
        assert!(RouteMatch::host_matches("*.example.com", "a.b.example.com"));
        assert!(!RouteMatch::host_matches("*.example.com", "example.com"));
        assert!(!RouteMatch::host_matches("*.example.com", "badexample.com"));
        assert!(RouteMatch::host_matches("API.example.com", "api.example.com"));
        assert!(!RouteMatch::host_matches("api.example.com", "api.example.org"));
    }
}
