//! [`Proposal`]: what a Raft log entry carries, a [`Command`] with the
//! format version it is encoded in.
//!
//! Format 1 is the bare postcard encoding of the command (every release
//! before versions wrote that, and a mixed cluster still on version 1
//! must keep writing it). From format 2 on, an entry is an *envelope*: the
//! enum index [`ENVELOPE`] (which no command of format 1 has), then the
//! format and the command's bytes in that format. Decoding reads the
//! index first and dispatches: an envelope by its format, any other index
//! as a format-1 command. A format this binary does not read is an error
//! that says which formats it reads.
//!
//! Only index-tagged encodings (postcard) are supported: the decoder
//! relies on enum variants being read by index.

use crate::command::Command;
use crate::decode::refuse;
use crate::format::{self, Formats};
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, VariantAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// The enum index that marks an envelope: far above the 21 commands of
/// format 1, whose indexes the bare encoding keeps forever.
pub const ENVELOPE: u32 = 127;

/// A command as a log entry carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The format version the command is encoded in.
    pub format: u16,
    pub command: Command,
}

impl Proposal {
    pub fn new(format: u16, command: Command) -> Proposal {
        Proposal { format, command }
    }

    /// The command's bytes as a proposal of `format` (the admin API and
    /// the forwarding of writes to the leader use these).
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        postcard::to_allocvec(self).map_err(|e| format!("cannot encode the command: {e}"))
    }

    /// A proposal from its bytes, bounded (see `decode`); the error says why not.
    pub fn decode(bytes: &[u8]) -> Result<Proposal, String> {
        crate::decode::bounded(|| postcard::from_bytes(bytes))
    }
}

/// Decodes postcard bytes that carry proposals (a Raft message, a log
/// entry): a proposal refused on the way (a format this binary does not
/// read, a bound) is reported in words, not as postcard's "custom error".
pub fn decode_carrier<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    crate::decode::bounded(|| postcard::from_bytes(bytes))
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.command.fmt(f)
    }
}

impl Serialize for Proposal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.format {
            1 => format::encoded_in(1, || self.command.serialize(serializer)),
            version => {
                let bytes = format::encoded_in(version, || postcard::to_allocvec(&self.command))
                    .map_err(serde::ser::Error::custom)?;
                serializer.serialize_newtype_variant(
                    "Command",
                    ENVELOPE,
                    "Envelope",
                    &(version, serde_bytes(&bytes)),
                )
            }
        }
    }
}

/// Bytes serialized as a byte string (postcard: length, then the bytes).
fn serde_bytes(bytes: &[u8]) -> impl Serialize + '_ {
    struct Bytes<'a>(&'a [u8]);
    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(self.0)
        }
    }
    Bytes(bytes)
}

impl<'de> Deserialize<'de> for Proposal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Proposal, D::Error> {
        deserializer.deserialize_enum("Command", &[], ProposalVisitor)
    }
}

struct ProposalVisitor;

impl<'de> Visitor<'de> for ProposalVisitor {
    type Value = Proposal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a command, bare (format 1) or in an envelope")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Proposal, A::Error> {
        let (index, variant) = data.variant::<u32>()?;
        if index != ENVELOPE {
            let command = format::encoded_in(1, || Command::deserialize(Replay { index, variant }))?;
            return Ok(Proposal::new(1, command));
        }
        let (version, bytes): (u16, ByteBuf) = variant.newtype_variant()?;
        if version < 2 {
            return Err(refuse(format!(
                "an envelope of format {version} (format 1 is never enveloped)"
            )));
        }
        if !Formats::BUILT.contains(version) {
            return Err(refuse(format!(
                "an entry of format {version}, but this binary reads formats {}",
                Formats::BUILT
            )));
        }
        // Every format from 2 to `CURRENT` encodes the command as today's
        // `Command`, without the fields of later formats (see `format`).
        let command = format::encoded_in(version, || crate::decode::command(&bytes.0)).map_err(refuse)?;
        Ok(Proposal::new(version, command))
    }
}

/// An owned byte string (postcard: length, then the bytes).
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ByteBuf, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(bytes.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(bytes))
            }
        }
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

/// Hands the derived `Command` decoder an enum whose index was already
/// read: it gets the index back, then reads the variant's content from
/// the original decoder.
struct Replay<A> {
    index: u32,
    variant: A,
}

impl<'de, A: VariantAccess<'de>> Deserializer<'de> for Replay<A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, A::Error> {
        Err(de::Error::custom("a command is decoded as an enum"))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

impl<'de, A: VariantAccess<'de>> EnumAccess<'de> for Replay<A> {
    type Error = A::Error;
    type Variant = A;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, A), A::Error> {
        let index: de::value::U32Deserializer<A::Error> = self.index.into_deserializer();
        Ok((seed.deserialize(index)?, self.variant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StickySecret;

    #[test]
    fn format_one_is_the_bare_command() {
        let command = Command::SetStickySecret(StickySecret([7; 32]));
        let bare = postcard::to_allocvec(&command).unwrap();
        let proposal = Proposal::new(1, command.clone());
        assert_eq!(proposal.encode().unwrap(), bare);
        assert_eq!(Proposal::decode(&bare).unwrap(), proposal);
    }

    #[test]
    fn later_formats_travel_in_an_envelope() {
        let proposal = Proposal::new(2, Command::SetClusterVersion(2));
        let bytes = proposal.encode().unwrap();
        assert_eq!(bytes[0], ENVELOPE as u8);
        assert_eq!(bytes[1], 2);
        assert_eq!(Proposal::decode(&bytes).unwrap(), proposal);
    }

    #[test]
    fn an_unknown_format_says_which_formats_are_read() {
        let mut bytes = Proposal::new(2, Command::SetClusterVersion(2)).encode().unwrap();
        bytes[1] = 9;
        let error = Proposal::decode(&bytes).unwrap_err();
        assert!(error.contains("format 9"), "{error}");
        assert!(error.contains(&Formats::BUILT.to_string()), "{error}");
    }

    #[test]
    fn a_format_one_reader_cannot_take_an_envelope() {
        let bytes = Proposal::new(2, Command::RemovePool { name: "a".into() })
            .encode()
            .unwrap();
        assert!(postcard::from_bytes::<Command>(&bytes).is_err());
    }
}
