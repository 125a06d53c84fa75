//! Small serde helpers shared by the newtypes.

use serde::{Deserialize, Deserializer};

/// Reads a value written either as a number or as a string (`cpu: 2`, `cpu: "500m"`,
/// `limit: 12.5`) and returns its text, for the newtype to parse.
pub(crate) fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Unsigned(u64),
        Signed(i64),
        Float(f64),
        Text(String),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::Unsigned(n) => n.to_string(),
        Raw::Signed(n) => n.to_string(),
        Raw::Float(x) => x.to_string(),
        Raw::Text(s) => s,
    })
}
