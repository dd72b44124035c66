//! Decoding the command lists of `Batch` and `Independent` with bounds, so
//! crafted bytes cannot overflow the stack or memory: nesting deeper than
//! [`MAX_NESTING`] fails *before* the decoder recurses into it, and a list
//! announcing more than [`MAX_BATCH_COMMANDS`] fails before it allocates.
//! Only decoding changes: the encoding is the derived one, byte for byte.

use crate::command::Command;
use crate::limits::{MAX_BATCH_COMMANDS, MAX_NESTING};
use serde::de::{Deserializer, Error, SeqAccess, Visitor};
use std::cell::{Cell, RefCell};
use std::fmt;

/// Room reserved up front for a list, whatever length it announces; more
/// grows as elements actually arrive.
const PREALLOCATE: usize = 1024;

thread_local! {
    /// Command lists being decoded on this thread, one inside the other.
    static OPEN_LISTS: Cell<usize> = const { Cell::new(0) };
    /// Why the last bound refused, for [`command`]: postcard keeps no text
    /// of a custom error.
    static REFUSED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// `reason` as a decoding error, remembered for [`bounded`].
pub(crate) fn refuse<E: Error>(reason: String) -> E {
    REFUSED.with(|refused| *refused.borrow_mut() = Some(reason.clone()));
    E::custom(reason)
}

/// A command from its postcard bytes; the error says why not, in words
/// when a bound refused it.
pub(crate) fn command(bytes: &[u8]) -> Result<Command, String> {
    bounded(|| postcard::from_bytes(bytes))
}

/// Runs a postcard decoding whose errors may come from [`refuse`], and
/// returns the refusal's words rather than postcard's bare "custom error".
pub(crate) fn bounded<T>(decode: impl FnOnce() -> Result<T, postcard::Error>) -> Result<T, String> {
    REFUSED.with(|refused| refused.borrow_mut().take());
    decode().map_err(|e| {
        REFUSED
            .with(|refused| refused.borrow_mut().take())
            .unwrap_or_else(|| e.to_string())
    })
}

/// One open list; dropping it (on every exit, errors and unwinding
/// included) closes it.
struct OpenList;

impl OpenList {
    fn open() -> Option<OpenList> {
        OPEN_LISTS.with(|open| {
            let depth = open.get() + 1;
            (depth <= MAX_NESTING).then(|| {
                open.set(depth);
                OpenList
            })
        })
    }
}

impl Drop for OpenList {
    fn drop(&mut self) {
        OPEN_LISTS.with(|open| open.set(open.get().saturating_sub(1)));
    }
}

/// `deserialize_with` of the `Vec<Command>` inside `Batch` and `Independent`.
pub(crate) fn commands<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Command>, D::Error> {
    let Some(_open) = OpenList::open() else {
        return Err(refuse(format!("batches nested more than {MAX_NESTING} deep")));
    };
    deserializer.deserialize_seq(CommandList)
}

struct CommandList;

impl<'de> Visitor<'de> for CommandList {
    type Value = Vec<Command>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of at most {MAX_BATCH_COMMANDS} commands")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Command>, A::Error> {
        let announced = seq.size_hint().unwrap_or(0);
        if announced > MAX_BATCH_COMMANDS {
            return Err(refuse(format!(
                "a batch of {announced} commands (at most {MAX_BATCH_COMMANDS})"
            )));
        }
        let mut commands = Vec::with_capacity(announced.min(PREALLOCATE));
        while let Some(command) = seq.next_element()? {
            if commands.len() == MAX_BATCH_COMMANDS {
                return Err(refuse(format!(
                    "a batch of more than {MAX_BATCH_COMMANDS} commands"
                )));
            }
            commands.push(command);
        }
        Ok(commands)
    }
}
