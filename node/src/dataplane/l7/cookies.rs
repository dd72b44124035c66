//! Cookies in headers: a request's `Cookie` values by name, and the value a
//! response's `Set-Cookie` gives one (for sticky sessions and routing).

use http::header::{self, HeaderMap};

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn request_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| cookie_value(pair, name))
}

/// The value `Set-Cookie` gives cookie `name`, unless it deletes it.
pub fn response_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.as_bytes().split(|&b| b == b';').next())
        .find_map(|pair| cookie_value(pair, name))
        .filter(|value| !value.is_empty())
}

/// `value` if `pair` is `name=value` (whitespace and quotes trimmed).
fn cookie_value<'p>(pair: &'p [u8], name: &str) -> Option<&'p [u8]> {
    let pair = pair.trim_ascii();
    let eq = pair.iter().position(|&b| b == b'=')?;
    let (key, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
    if key != name.as_bytes() {
        return None;
    }
    let value = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    fn headers(name: header::HeaderName, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn finds_request_cookies() {
        let h = headers(header::COOKIE, &["a=1; JSESSIONID=abc ; b=2", "c=\"q\""]);
        assert_eq!(request_cookie(&h, "JSESSIONID"), Some(&b"abc"[..]));
        assert_eq!(request_cookie(&h, "c"), Some(&b"q"[..]));
        assert_eq!(request_cookie(&h, "JSESSION"), None);
        assert_eq!(request_cookie(&h, "d"), None);
        assert_eq!(
            request_cookie(&headers(header::COOKIE, &["garbage;;=;x"]), "x"),
            None
        );
    }

    #[test]
    fn learns_set_cookies_but_not_deletions() {
        let h = headers(
            header::SET_COOKIE,
            &["other=1; Path=/", "JSESSIONID=s1; Path=/; HttpOnly"],
        );
        assert_eq!(response_cookie(&h, "JSESSIONID"), Some(&b"s1"[..]));
        let deleted = headers(header::SET_COOKIE, &["JSESSIONID=; Max-Age=0"]);
        assert_eq!(response_cookie(&deleted, "JSESSIONID"), None);
    }
}
