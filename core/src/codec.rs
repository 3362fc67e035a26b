//! Canonical binary encoding (postcard) for everything that is hashed, signed
//! or sent: one encoding per value, so hashes and signatures are stable.

use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};

/// Encodes a value canonically.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain data structures into a Vec cannot fail with postcard:
    // it only fails for unsupported serde features, which our types do not use.
    postcard::to_stdvec(value).unwrap_or_default()
}

/// Decodes bytes, refusing anything but the canonical encoding of the value
/// (no trailing bytes, no alternative varint forms).
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    let value: T = postcard::from_bytes(bytes).map_err(|_| Error::Decode { what })?;
    if encode(&value) != bytes {
        return Err(Error::Decode { what });
    }
    Ok(value)
}

/// Serde helpers for a list of byte strings (`Vec<Vec<u8>>`), each read
/// and written as bytes, in one copy. The encoding is the same as serde's
/// default for it (postcard writes a `u8` as one byte, so a sequence of
/// bytes and a byte string look alike); only the speed differs.
pub(crate) mod byte_strings {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(items: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(items.iter().map(|i| Bytes::new(i)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let items = Vec::<ByteBuf>::deserialize(d)?;
        Ok(items.into_iter().map(ByteBuf::into_vec).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_trailing_and_truncated_bytes() {
        let bytes = encode(&(7u32, String::from("karmyq")));
        assert_eq!(
            decode::<(u32, String)>(&bytes, "t").ok(),
            Some((7, "karmyq".into()))
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<(u32, String)>(&longer, "t").is_err());
        assert!(decode::<(u32, String)>(&bytes[..bytes.len() - 1], "t").is_err());
    }
}
