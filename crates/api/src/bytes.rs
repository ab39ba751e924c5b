//! Binary fields as base64url strings without padding.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// Bytes that serialize as a base64url (no padding) JSON string.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct B64(pub Vec<u8>);

impl B64 {
    /// Encodes `bytes` as text.
    pub fn encode(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes text produced by [`B64::encode`]; padding or other alphabets are refused.
    pub fn decode(text: &str) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(text).ok()
    }
}

impl std::fmt::Debug for B64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Lengths only: these fields carry ciphertext and key material.
        write!(f, "B64({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for B64 {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

impl Serialize for B64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Self::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::decode(&text)
            .map(B64)
            .ok_or_else(|| serde::de::Error::custom("invalid base64url"))
    }
}

/// Exactly the strings [`B64::decode`] accepts: base64url, no padding, and the unused bits of
/// a final partial group zero (so every byte string has one encoding).
pub const B64_PATTERN: &str =
    "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$";

impl PartialSchema for B64 {
    fn schema() -> RefOr<Schema> {
        // Not `format: byte`: that is standard base64 with padding, which is refused here.
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(B64_PATTERN))
            .content_encoding("base64url")
            .description(Some("base64url without padding"))
            .into()
    }
}

impl ToSchema for B64 {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let b = B64(vec![0xfb, 0xff]);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, "\"-_8\"");
        assert_eq!(serde_json::from_str::<B64>(&json).unwrap(), b);
        assert!(serde_json::from_str::<B64>("\"+/8=\"").is_err());
        assert_eq!(format!("{b:?}"), "B64(2 bytes)");
    }

    /// The documented pattern accepts exactly what the decoder accepts.
    #[test]
    fn pattern_matches_the_decoder() {
        let pattern = regex::Regex::new(B64_PATTERN).unwrap();
        let alphabet: Vec<char> =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ "
                .chars()
                .collect();
        let mut checked = 0;
        for prefix in ["", "AAAA", "-_8A"] {
            for a in &alphabet {
                let one = format!("{prefix}{a}");
                assert_eq!(B64::decode(&one).is_some(), pattern.is_match(&one), "{one}");
                for b in &alphabet {
                    let two = format!("{one}{b}");
                    assert_eq!(B64::decode(&two).is_some(), pattern.is_match(&two), "{two}");
                    for c in ['A', 'B', 'E', 'x', '-', '=', '8'] {
                        let three = format!("{two}{c}");
                        let ok = B64::decode(&three).is_some();
                        assert_eq!(ok, pattern.is_match(&three), "{three}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 90_000);
        assert!(B64_PATTERN.starts_with('^') && B64_PATTERN.ends_with('$'));
    }
}
