//! Who may see the status page. From loopback, anyone. From elsewhere,
//! only with `[node] status_token_file` set: the page itself (which holds
//! no data) is served, and `/api/*` wants `Authorization: Bearer TOKEN`.
//! Without a token configured, non-loopback clients get 403 and a
//! sentence saying how to let them in.

use http::StatusCode;
use std::net::IpAddr;
use std::path::Path;

/// The bearer token, as read from `[node] status_token_file`.
#[derive(Clone)]
pub struct Token(std::sync::Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("[node] status_token_file = \"{path}\": cannot read it: {source}")]
    Unreadable { path: String, source: std::io::Error },
    #[error(
        "[node] status_token_file = \"{path}\": {reason}; put one line of at least 16 visible \
         characters in it (e.g. `head -c 24 /dev/urandom | base64 > {path}`)"
    )]
    Unusable { path: String, reason: &'static str },
}

impl Token {
    /// Reads the token from `path`: its first line, trimmed.
    pub fn read(path: &str) -> Result<Token, TokenError> {
        let text = std::fs::read_to_string(Path::new(path)).map_err(|source| TokenError::Unreadable {
            path: path.to_string(),
            source,
        })?;
        Token::parse(&text).map_err(|reason| TokenError::Unusable {
            path: path.to_string(),
            reason,
        })
    }

    fn parse(text: &str) -> Result<Token, &'static str> {
        let token = text.lines().next().unwrap_or("").trim();
        if token.len() < 16 {
            return Err("the token is shorter than 16 characters");
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token has characters an HTTP header cannot carry");
        }
        Ok(Token(token.into()))
    }

    /// Whether `presented` is the token, compared in constant time.
    fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// What the page's routes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/`: the page, no data in it.
    Page,
    /// `/api/…`: the data.
    Api,
}

/// The verdict on one request: go ahead, or this status and sentence.
pub fn decide(
    route: Route,
    peer: IpAddr,
    token: Option<&Token>,
    authorization: Option<&str>,
) -> Result<(), (StatusCode, String)> {
    if peer.is_loopback() || peer.to_canonical().is_loopback() {
        return Ok(());
    }
    let Some(token) = token else {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "the status page answers {peer} only with a token: set [node] status_token_file to a \
                 file holding one, then open http://ADDRESS/#token=TOKEN (from loopback no token is needed)\n"
            ),
        ));
    };
    if route == Route::Page {
        return Ok(());
    }
    let presented = authorization.and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(presented) if token.matches(presented.trim()) => Ok(()),
        Some(_) => Err((
            StatusCode::UNAUTHORIZED,
            "the bearer token is not this node's [node] status_token_file\n".to_string(),
        )),
        None => Err((
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer TOKEN (the page takes it from its address: /#token=TOKEN)\n"
                .to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdefXYZ";

    fn remote() -> IpAddr {
        "192.0.2.7".parse().expect("ip")
    }

    #[test]
    fn loopback_needs_nothing() {
        for peer in ["127.0.0.1", "127.0.0.3", "::1", "::ffff:127.0.0.1"] {
            let peer: IpAddr = peer.parse().expect("ip");
            assert_eq!(decide(Route::Api, peer, None, None), Ok(()), "{peer}");
        }
    }

    #[test]
    fn elsewhere_without_a_token_is_refused_with_how_to_allow() {
        for route in [Route::Page, Route::Api] {
            let (status, sentence) = decide(route, remote(), None, Some("Bearer x")).expect_err("remote");
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert!(sentence.contains("status_token_file"), "{sentence}");
        }
    }

    #[test]
    fn elsewhere_with_a_token_the_api_wants_it() {
        let token = Token::parse(&format!("{SECRET}\n")).expect("token");
        assert_eq!(decide(Route::Page, remote(), Some(&token), None), Ok(()));
        let bearer = format!("Bearer {SECRET}");
        assert_eq!(decide(Route::Api, remote(), Some(&token), Some(&bearer)), Ok(()));
        for wrong in [
            None,
            Some("Bearer 0123456789abcdefXYz"),
            Some("Basic abc"),
            Some("Bearer "),
        ] {
            let (status, _) = decide(Route::Api, remote(), Some(&token), wrong).expect_err("wrong");
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?}");
        }
    }

    #[test]
    fn a_weak_or_missing_token_file_is_a_sentence() {
        assert!(Token::parse("short\n").is_err());
        assert!(Token::parse("0123456789 abcdef 0123\n").is_err());
        let missing = Token::read("/nonexistent/raftlb-status.token").expect_err("missing");
        let text = missing.to_string();
        assert!(
            text.starts_with(
                "[node] status_token_file = \"/nonexistent/raftlb-status.token\": cannot read it"
            ),
            "{text}"
        );
    }
}
