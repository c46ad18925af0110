//! The one encoding of everything Cairn's Raft stores or sends: postcard, a compact serde format.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("encoding to memory cannot fail")
}

/// The length of `value`'s encoding, counted without building it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .expect("counting an encoding cannot fail")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// Decodes a `T` from the start of `bytes`, and returns it with the bytes after it.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), postcard::Error> {
    postcard::take_from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn encoded_len_counts_what_encode_writes() {
        let value = (7u64, "key".to_string(), vec![0u8; 300], Some(-3i64));
        assert_eq!(super::encoded_len(&value), super::encode(&value).len());
    }
}
