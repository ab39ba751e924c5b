//! Binary fields as base64url strings without padding.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr, Schema};
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

impl PartialSchema for B64 {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Byte)))
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
}
