//! Credits: the unit of the mutual-credit economy.
//!
//! Amounts are fixed-point with six decimals ([`Credits::SCALE`] micro-credits per credit) so
//! that sums are exact: the balances of all accounts must add up to zero, always, which floats
//! cannot promise.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of credits, stored as micro-credits. Written as a decimal: `12.5`, `"0.000001"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Credits(i64);

/// Why a credit amount could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a credit amount: write a decimal number with at most 6 decimals, e.g. 12.5")]
pub struct CreditsError(String);

impl Credits {
    /// Micro-credits per credit.
    pub const SCALE: i64 = 1_000_000;
    /// No credits.
    pub const ZERO: Credits = Credits(0);

    /// An amount from micro-credits.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// The amount in micro-credits.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Whether the amount is below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Sum, or `None` on overflow.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    /// Difference, or `None` on overflow.
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.0.checked_sub(other.0).map(Self)
    }

    /// Parses a decimal such as `-12.5`.
    pub fn parse(s: &str) -> Result<Self, CreditsError> {
        let err = || CreditsError(s.to_owned());
        let (negative, body) = s.strip_prefix('-').map_or((false, s), |b| (true, b));
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let digits_only = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits_only(int) || !digits_only(frac) || frac.len() > 6 || int.len() > 12 {
            return Err(err());
        }
        let int: i64 = int.parse().map_err(|_| err())?;
        let frac: i64 = format!("{frac:0<6}").parse().map_err(|_| err())?;
        let micros = int * Self::SCALE + frac;
        Ok(Self(if negative { -micros } else { micros }))
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (int, frac) = (abs / Self::SCALE as u64, abs % Self::SCALE as u64);
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let frac = format!("{frac:06}");
            write!(f, "{sign}{int}.{}", frac.trim_end_matches('0'))
        }
    }
}

impl Serialize for Credits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Credits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = crate::de::number_or_string(d)?;
        Credits::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Credits {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Credits".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An amount of credits: a decimal with at most 6 decimals.",
            "anyOf": [
                { "type": "number" },
                { "type": "string", "pattern": "^-?[0-9]{1,12}(\\.[0-9]{0,6})?$" }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints_decimals() {
        assert_eq!(Credits::parse("12.5").unwrap().micros(), 12_500_000);
        assert_eq!(Credits::parse("-0.000001").unwrap().micros(), -1);
        assert_eq!(Credits::parse("3").unwrap().to_string(), "3");
        assert_eq!(Credits::from_micros(-1_250_000).to_string(), "-1.25");
        let c: Credits = serde_json::from_str("0.05").unwrap();
        assert_eq!(c.micros(), 50_000);
        for bad in ["", "1.2345678", "1,5", "abc", "1e3", "--1", "."] {
            assert!(Credits::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn display_parses_back(m in -(1i64 << 52)..(1i64 << 52)) {
            let c = Credits::from_micros(m);
            prop_assert_eq!(Credits::parse(&c.to_string()).unwrap(), c);
        }
    }
}
