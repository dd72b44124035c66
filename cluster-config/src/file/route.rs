//! The `[[listener.route]]` sections of the file: content-routing rules.

use super::across::Site;
use crate::reader::{Field, Reader, Section};
use crate::route::{RouteMatch, RouteSpec};
use crate::validate;

/// One `[[listener.route]]`: `match = { … }`, `pool`, `set_headers`,
/// `remove_headers`. Also returns where its pool was named, for the check
/// that the pool exists.
pub(super) fn route(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> (Option<RouteSpec>, Option<Site>) {
    let matches = match s.optional("match") {
        Some(f) => reader.table(&f).and_then(|t| route_match(reader, t)),
        None => Some(RouteMatch::default()),
    };
    let pool_field = s.required(reader, "pool");
    let pool = pool_field
        .as_ref()
        .and_then(|f| reader.str(f))
        .map(str::to_string);
    let set_headers = s.optional("set_headers").map(|f| pairs(reader, &f, "header"));
    let remove_headers = s.optional("remove_headers").map(|f| {
        let items = reader.array(&f)?;
        let names: Vec<Option<String>> = items.iter().map(|item| header_name(reader, item)).collect();
        names.into_iter().collect::<Option<Vec<_>>>()
    });
    s.finish(reader);
    let site = pool_field
        .as_ref()
        .zip(pool.clone())
        .map(|(f, p)| Site::new(f, p));
    let spec = (|| {
        Some(RouteSpec {
            matches: matches?,
            pool: pool?,
            set_headers: set_headers.unwrap_or(Some(Vec::new()))?,
            remove_headers: remove_headers.unwrap_or(Some(Vec::new()))?,
        })
    })();
    (spec, site)
}

/// `match = { host, path, path_prefix, path_regex, method, header, cookie }`.
fn route_match(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> Option<RouteMatch> {
    let mut ok = true;
    let mut text = |reader: &mut Reader<'_>, key: &'static str, s: &mut Section<'_, '_>| {
        let f = s.optional(key)?;
        let value = reader.str(&f).map(str::to_string);
        let checked = value.and_then(|v| match check(key, &v) {
            Ok(()) => Some(v),
            Err(reason) => {
                reader.field_error(&f, reason);
                None
            }
        });
        ok &= checked.is_some();
        checked
    };
    let host = text(reader, "host", &mut s).map(|h| h.to_ascii_lowercase());
    let path = text(reader, "path", &mut s);
    let path_prefix = text(reader, "path_prefix", &mut s);
    let path_regex = text(reader, "path_regex", &mut s);
    let methods = match s.optional("method") {
        Some(f) => {
            let single = reader_str_or_array(reader, &f);
            ok &= single.is_some();
            single
                .unwrap_or_default()
                .into_iter()
                .map(|m| m.to_ascii_uppercase())
                .collect()
        }
        None => Vec::new(),
    };
    let headers = s.optional("header").map(|f| pairs(reader, &f, "header"));
    let cookies = s.optional("cookie").map(|f| pairs(reader, &f, "cookie"));
    s.finish(reader);
    let headers = headers.unwrap_or(Some(Vec::new()))?;
    let cookies = cookies.unwrap_or(Some(Vec::new()))?;
    ok.then_some(RouteMatch {
        host,
        path,
        path_prefix,
        path_regex,
        methods,
        headers,
        cookies,
    })
}

/// Why `value` is no good for `key`, if it is not.
fn check(key: &str, value: &str) -> Result<(), String> {
    match key {
        "host" => validate::host(value),
        "path" | "path_prefix" => validate::http_path(value),
        _ => validate::path_regex(value),
    }
}

/// `"GET"` or `["GET", "HEAD"]`: method tokens.
fn reader_str_or_array(reader: &mut Reader<'_>, f: &Field<'_, '_>) -> Option<Vec<String>> {
    let items = match reader.str_or_array(f)? {
        Ok(one) => vec![(one, f.clone())],
        Err(items) => items
            .into_iter()
            .map(|item| reader.str(&item).map(|s| (s.to_string(), item.clone())))
            .collect::<Option<Vec<_>>>()?,
    };
    let mut methods = Vec::new();
    for (method, field) in items {
        methods.push(reader.checked(&field, method.clone(), validate::route_method(&method))?);
    }
    Some(methods)
}

/// `{ "Name" = "value", … }`: header or cookie names with their values.
fn pairs(reader: &mut Reader<'_>, f: &Field<'_, '_>, what: &str) -> Option<Vec<(String, String)>> {
    let entries = reader.entries(f)?;
    let mut pairs = Vec::new();
    let mut ok = true;
    for (name, value) in entries {
        if let Err(why) = validate::token(what, &name) {
            reader.field_error(&value, why);
            ok = false;
            continue;
        }
        match reader.str(&value) {
            Some(v) => match validate::token_value(what, v) {
                Ok(()) => pairs.push((name, v.to_string())),
                Err(why) => {
                    reader.field_error(&value, why);
                    ok = false;
                }
            },
            None => ok = false,
        }
    }
    ok.then_some(pairs)
}

fn header_name(reader: &mut Reader<'_>, f: &Field<'_, '_>) -> Option<String> {
    let name = reader.str(f)?;
    reader.checked(f, name.to_string(), validate::token("header", name))
}
