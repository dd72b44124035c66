//! A walker over toml's spanned document tree that never stops at the first
//! problem. Each accessor records what is wrong (with line and key path) and
//! returns `None`, so one pass over the file reports every type error, missing
//! key and unknown key at once.

use crate::duration;
use crate::error::{ConfigError, ConfigErrors};
use crate::validate;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// Collects the problems found in one file.
#[derive(Debug)]
pub(crate) struct Reader<'s> {
    file: &'s str,
    text: &'s str,
    errors: Vec<(usize, ConfigError)>,
}

impl<'s> Reader<'s> {
    pub fn new(file: &'s str, text: &'s str) -> Self {
        Reader {
            file,
            text,
            errors: Vec::new(),
        }
    }

    /// Records a problem at `span` (byte offsets into the file).
    pub fn error(&mut self, span: Range<usize>, path: &str, message: impl Into<String>) {
        let offset = span.start.min(self.text.len());
        let line = self.text[..offset].bytes().filter(|&b| b == b'\n').count() + 1;
        self.errors.push((
            offset,
            ConfigError {
                file: self.file.to_string(),
                line: Some(line),
                path: path.to_string(),
                message: message.into(),
            },
        ));
    }

    /// `Ok(value)` if nothing was recorded, else every problem in file order.
    pub fn finish<T>(mut self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(value);
        }
        self.errors.sort_by_key(|(offset, _)| *offset);
        Err(ConfigErrors(self.errors.into_iter().map(|(_, e)| e).collect()))
    }

    pub fn str<'t>(&mut self, field: &Field<'t, '_>) -> Option<&'t str> {
        match field.value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            other => self.wrong_type(field, "a string", other),
        }
    }

    pub fn bool(&mut self, field: &Field<'_, '_>) -> Option<bool> {
        match field.value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => self.wrong_type(field, "true or false", other),
        }
    }

    /// An integer in `min..=max`.
    pub fn uint(&mut self, field: &Field<'_, '_>, min: u64, max: u64) -> Option<u64> {
        let parsed = match field.value.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            other => return self.wrong_type(field, "an integer", other),
        };
        match parsed {
            Some(n) if n >= 0 && (min..=max).contains(&n.unsigned_abs()) => Some(n.unsigned_abs()),
            _ => {
                let shown = field.value.get_ref();
                let shown = shown.as_integer().map(|i| i.to_string()).unwrap_or_default();
                self.field_error(
                    field,
                    format!("{shown} is out of range (expected {min} to {max})"),
                );
                None
            }
        }
    }

    /// A duration greater than zero and at most [`MAX_DURATION`](crate::limits::MAX_DURATION).
    pub fn duration(&mut self, field: &Field<'_, '_>) -> Option<Duration> {
        let text = self.str(field)?;
        match duration::parse(text).and_then(|d| validate::duration(d, false).map(|()| d)) {
            Ok(d) => Some(d),
            Err(message) => {
                self.field_error(field, message);
                None
            }
        }
    }

    /// Records why `checked` failed, if it did; `Some(value)` otherwise.
    pub fn checked<T>(&mut self, field: &Field<'_, '_>, value: T, checked: Result<(), String>) -> Option<T> {
        match checked {
            Ok(()) => Some(value),
            Err(why) => {
                self.field_error(field, why);
                None
            }
        }
    }

    pub fn socket_addr(&mut self, field: &Field<'_, '_>) -> Option<SocketAddr> {
        let text = self.str(field)?;
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.field_error(
                    field,
                    format!("invalid socket address \"{text}\" (expected IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\")"),
                );
                None
            }
        }
    }

    /// A Raft peer's address: `IP:PORT` or `NAME:PORT`.
    pub fn peer_address(&mut self, field: &Field<'_, '_>) -> Option<crate::PeerAddress> {
        let text = self.str(field)?;
        crate::PeerAddress::parse(text)
            .map_err(|e| self.field_error(field, e))
            .ok()
    }

    /// One of a fixed set of names; the error lists the valid ones.
    pub fn choice<T: Copy>(&mut self, field: &Field<'_, '_>, what: &str, choices: &[(&str, T)]) -> Option<T> {
        let text = self.str(field)?;
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
            return Some(*value);
        }
        let valid: Vec<String> = choices.iter().map(|(name, _)| format!("\"{name}\"")).collect();
        self.field_error(
            field,
            format!("unknown {what} \"{text}\" (valid: {})", valid.join(", ")),
        );
        None
    }

    /// An array; each element comes with its indexed path.
    pub fn array<'t, 'i>(&mut self, field: &Field<'t, 'i>) -> Option<Vec<Field<'t, 'i>>> {
        match field.value.get_ref() {
            DeValue::Array(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, value)| Field {
                        path: format!("{}[{i}]", field.path),
                        value,
                    })
                    .collect(),
            ),
            other => self.wrong_type(field, "an array", other),
        }
    }

    /// A string, or an array whose items are read one by one.
    pub fn str_or_array<'t, 'i>(
        &mut self,
        field: &Field<'t, 'i>,
    ) -> Option<Result<String, Vec<Field<'t, 'i>>>> {
        match field.value.get_ref() {
            DeValue::String(s) => Some(Ok(s.to_string())),
            DeValue::Array(_) => self.array(field).map(Err),
            other => self.wrong_type(field, "a string or an array of strings", other),
        }
    }

    /// A table, as a section whose unknown keys will be reported.
    pub fn table<'t, 'i>(&mut self, field: &Field<'t, 'i>) -> Option<Section<'t, 'i>> {
        match field.value.get_ref() {
            DeValue::Table(table) => Some(Section {
                table,
                span: field.value.span(),
                path: field.path.clone(),
                known: Vec::new(),
            }),
            other => self.wrong_type(field, "a table", other),
        }
    }

    /// A table whose keys are data (not schema): each key with its value.
    pub fn entries<'t, 'i>(&mut self, field: &Field<'t, 'i>) -> Option<Vec<(String, Field<'t, 'i>)>> {
        match field.value.get_ref() {
            DeValue::Table(table) => Some(
                table
                    .iter()
                    .map(|(key, value)| {
                        let key = key.get_ref().to_string();
                        let path = format!("{}.{key}", field.path);
                        (key, Field { path, value })
                    })
                    .collect(),
            ),
            other => self.wrong_type(field, "a table", other),
        }
    }

    pub fn field_error(&mut self, field: &Field<'_, '_>, message: impl Into<String>) {
        self.error(field.value.span(), &field.path, message);
    }

    fn wrong_type<T>(&mut self, field: &Field<'_, '_>, expected: &str, found: &DeValue<'_>) -> Option<T> {
        self.field_error(field, format!("expected {expected}, found {}", found.type_str()));
        None
    }
}

/// A value with the dotted path that names it.
#[derive(Debug, Clone)]
pub(crate) struct Field<'t, 'i> {
    pub path: String,
    pub value: &'t Value<'i>,
}

impl Field<'_, '_> {
    pub fn span(&self) -> Range<usize> {
        self.value.span()
    }

    pub fn is_integer(&self) -> bool {
        matches!(self.value.get_ref(), DeValue::Integer(_))
    }
}

/// A table being read; remembers which keys the schema asked for, so
/// [`Section::finish`] can name the ones nobody asked for.
#[derive(Debug)]
pub(crate) struct Section<'t, 'i> {
    table: &'t DeTable<'i>,
    span: Range<usize>,
    path: String,
    known: Vec<&'static str>,
}

impl<'t, 'i> Section<'t, 'i> {
    /// The document root.
    pub fn root(document: &'t Spanned<DeTable<'i>>) -> Self {
        Section {
            table: document.get_ref(),
            span: document.span(),
            path: String::new(),
            known: Vec::new(),
        }
    }

    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The key's value if present.
    pub fn optional(&mut self, key: &'static str) -> Option<Field<'t, 'i>> {
        self.known.push(key);
        self.table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, value)| Field {
                path: self.key_path(key),
                value,
            })
    }

    /// Records that `key` is missing, and why it is needed.
    pub fn missing(&self, reader: &mut Reader<'_>, key: &str, message: &str) {
        reader.error(self.span(), &self.key_path(key), message);
    }

    /// The key's value; its absence is recorded as an error.
    pub fn required(&mut self, reader: &mut Reader<'_>, key: &'static str) -> Option<Field<'t, 'i>> {
        let field = self.optional(key);
        if field.is_none() {
            reader.error(self.span(), &self.key_path(key), "missing required key");
        }
        field
    }

    /// Reports every key the schema did not ask for.
    pub fn finish(self, reader: &mut Reader<'_>) {
        for (key, _) in self.table.iter() {
            let name = key.get_ref().as_ref();
            if !self.known.contains(&name) {
                let mut expected: Vec<&str> = self.known.clone();
                expected.sort_unstable();
                expected.dedup();
                reader.error(
                    key.span(),
                    &self.key_path(name),
                    format!("unknown key (expected one of: {})", expected.join(", ")),
                );
            }
        }
    }
}
