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
