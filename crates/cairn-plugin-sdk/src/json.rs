//! For recipe functions that take and return JSON (the `json` feature): the input parsed, with
//! the same `bad input: ...` reason for every plugin, and the output serialised.

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The function's input as `T`, or the reason it is not one.
pub fn parse<'a, T: Deserialize<'a>>(input: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(input).map_err(|e| format!("bad input: {e}"))
}

/// `output` as the function's result.
pub fn reply(output: &impl Serialize) -> Result<Vec<u8>, String> {
    serde_json::to_vec(output).map_err(|e| e.to_string())
}

/// Bytes in a recipe's JSON, such as an etcd key or value: a string when they are UTF-8, as
/// names and values mostly are, and an array of byte values otherwise. Either form reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => self.0.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        deserializer.deserialize_any(BytesVisitor)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a string, or an array of byte values")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Bytes, E> {
        Ok(Bytes(text.as_bytes().to_vec()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut bytes: A) -> Result<Bytes, A::Error> {
        let mut read = Vec::with_capacity(bytes.size_hint().unwrap_or(0));
        while let Some(byte) = bytes.next_element::<u8>()? {
            read.push(byte);
        }
        Ok(Bytes(read))
    }
}

#[cfg(test)]
mod tests {
    use super::{Bytes, parse, reply};

    #[test]
    fn bytes_are_a_string_when_utf8_and_an_array_otherwise_and_read_back_the_same() {
        for (bytes, json) in [
            (&b"election/a"[..], &br#""election/a""#[..]),
            (b"", br#""""#),
            (b"\xff\x00a", b"[255,0,97]"),
        ] {
            let written = reply(&Bytes(bytes.to_vec())).unwrap();
            assert_eq!(written, json);
            assert_eq!(parse::<Bytes>(&written).unwrap(), Bytes(bytes.to_vec()));
        }
        assert!(
            parse::<Bytes>(b"[256]")
                .unwrap_err()
                .starts_with("bad input")
        );
        assert!(
            parse::<Bytes>(b"7")
                .unwrap_err()
                .contains("array of byte values")
        );
    }
}
