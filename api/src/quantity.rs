//! Resource quantities, parsed and printed as Kubernetes does (`500m`, `2`, `256Mi`, `1e3`).
//!
//! A [`Quantity`] keeps the text the user wrote, so an object round-trips unchanged (and a
//! signature over it still verifies). Its numeric meaning comes out through newtypes that
//! cannot be mixed up: CPU is [`Millicores`], memory and storage are [`Bytes`].

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::validation::{FieldError, FieldPath, Validate};

/// A quantity as written in a manifest; always a valid Kubernetes quantity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Quantity(String);

/// Why a quantity could not be parsed or converted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text is not of the Kubernetes quantity grammar.
    #[error("{0:?} is not a quantity: write a number with an optional suffix, e.g. 500m, 2, 256Mi, 1G")]
    Syntax(String),
    /// The value does not fit.
    #[error("{0:?} is too large")]
    Overflow(String),
    /// Resources cannot be negative.
    #[error("{0:?} must not be negative")]
    Negative(String),
}

/// CPU in thousandths of a core (`500m` = half a core).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Millicores(pub u64);

/// A number of bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bytes(pub u64);

/// Longest quantity text accepted; keeps the arithmetic inside `i128`.
const MAX_LEN: usize = 40;

impl Quantity {
    /// Parses and checks `s`.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        parse_scaled(s, 0)?;
        Ok(Self(s.to_owned()))
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value in thousandths, rounded up (as Kubernetes' `MilliValue`).
    pub fn millicores(&self) -> Result<Millicores, QuantityError> {
        let v = parse_scaled(&self.0, 3)?;
        u64::try_from(v).map(Millicores).map_err(|_| self.sign_or_overflow(v))
    }

    /// The value as a whole number, rounded up (as Kubernetes' `Value`).
    pub fn bytes(&self) -> Result<Bytes, QuantityError> {
        let v = parse_scaled(&self.0, 0)?;
        u64::try_from(v).map(Bytes).map_err(|_| self.sign_or_overflow(v))
    }

    fn sign_or_overflow(&self, v: i128) -> QuantityError {
        if v < 0 { QuantityError::Negative(self.0.clone()) } else { QuantityError::Overflow(self.0.clone()) }
    }
}

/// Parses `s` and returns its value × 10^`extra_pow10`, rounded towards +∞.
fn parse_scaled(s: &str, extra_pow10: u32) -> Result<i128, QuantityError> {
    let syntax = || QuantityError::Syntax(s.to_owned());
    let overflow = || QuantityError::Overflow(s.to_owned());
    if s.is_empty() || s.len() > MAX_LEN {
        return Err(if s.is_empty() { syntax() } else { overflow() });
    }
    let (negative, rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_end);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
        return Err(syntax());
    }
    // value = digits × 2^bin × 10^(dec − len(frac))
    let digits: i128 = format!("{int_part}{frac_part}").parse().map_err(|_| syntax())?;
    let (bin_pow, dec_pow): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().map_err(|_| syntax())?;
            if !(-30..=30).contains(&e) {
                return Err(overflow());
            }
            (0, e)
        }
        _ => return Err(syntax()),
    };
    let frac_len = i32::try_from(frac_part.len()).map_err(|_| overflow())?;
    let pow10 = dec_pow - frac_len + i32::try_from(extra_pow10).map_err(|_| overflow())?;
    let mut value = digits.checked_mul(1i128 << bin_pow).ok_or_else(overflow)?;
    if pow10 >= 0 {
        value = value
            .checked_mul(10i128.checked_pow(pow10.unsigned_abs()).ok_or_else(overflow)?)
            .ok_or_else(overflow)?;
    } else {
        let div = 10i128.checked_pow(pow10.unsigned_abs()).ok_or_else(overflow)?;
        value = value / div + i128::from(value % div != 0);
    }
    Ok(if negative { -value } else { value })
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Plain integers were most likely written as YAML numbers (`cpu: 2`); keep them numbers
        // so the object reads back as written.
        match self.0.parse::<u64>() {
            Ok(n) if n.to_string() == self.0 => s.serialize_u64(n),
            _ => s.serialize_str(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = crate::de::number_or_string(d)?;
        Quantity::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A Kubernetes quantity: a number with an optional suffix (500m, 2, 256Mi, 1G).",
            "anyOf": [
                { "type": "number", "minimum": 0 },
                { "type": "string", "pattern": "^[+]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]+)?$" }
            ]
        })
    }
}

impl Millicores {
    /// Whole cores (`2`) where exact, else millicores (`500m`).
    pub fn to_quantity(self) -> Quantity {
        if self.0.is_multiple_of(1000) {
            Quantity((self.0 / 1000).to_string())
        } else {
            Quantity(format!("{}m", self.0))
        }
    }
}

impl Bytes {
    /// The largest binary suffix that divides exactly (`256Mi`), else plain bytes.
    pub fn to_quantity(self) -> Quantity {
        const SUFFIXES: [(&str, u32); 6] =
            [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];
        for (suffix, shift) in SUFFIXES {
            if self.0 != 0 && self.0.is_multiple_of(1u64 << shift) {
                return Quantity(format!("{}{suffix}", self.0 >> shift));
            }
        }
        Quantity(self.0.to_string())
    }
}

impl fmt::Display for Millicores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_quantity().fmt(f)
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_quantity().fmt(f)
    }
}

/// Amounts of compute: what a workload asks for, a node offers, or a replica used.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// CPU, in cores (`500m`, `2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory, in bytes (`256Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Local disk, in bytes (`1Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Quantity>,
}

impl Resources {
    /// CPU in millicores; zero when unset.
    pub fn cpu_millicores(&self) -> Millicores {
        self.cpu.as_ref().and_then(|q| q.millicores().ok()).unwrap_or_default()
    }
    /// Memory in bytes; zero when unset.
    pub fn memory_bytes(&self) -> Bytes {
        self.memory.as_ref().and_then(|q| q.bytes().ok()).unwrap_or_default()
    }
    /// Storage in bytes; zero when unset.
    pub fn storage_bytes(&self) -> Bytes {
        self.storage.as_ref().and_then(|q| q.bytes().ok()).unwrap_or_default()
    }
}

impl Validate for Resources {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        if let Some(Err(e)) = self.cpu.as_ref().map(Quantity::millicores) {
            errors.push(path.child("cpu").error(e.to_string()));
        }
        for (name, q) in [("memory", &self.memory), ("storage", &self.storage)] {
            if let Some(Err(e)) = q.as_ref().map(Quantity::bytes) {
                errors.push(path.child(name).error(e.to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(q("500m").millicores().unwrap(), Millicores(500));
        assert_eq!(q("2").millicores().unwrap(), Millicores(2000));
        assert_eq!(q("0.5").millicores().unwrap(), Millicores(500));
        assert_eq!(q("1.5k").millicores().unwrap(), Millicores(1_500_000));
        assert_eq!(q("100u").millicores().unwrap(), Millicores(1), "rounds up like MilliValue");
        assert_eq!(q("1e3").millicores().unwrap(), Millicores(1_000_000));
    }

    #[test]
    fn byte_quantities() {
        assert_eq!(q("256Mi").bytes().unwrap(), Bytes(256 << 20));
        assert_eq!(q("1G").bytes().unwrap(), Bytes(1_000_000_000));
        assert_eq!(q("1.5Gi").bytes().unwrap(), Bytes(3 << 29));
        assert_eq!(q("128974848").bytes().unwrap(), Bytes(128_974_848));
        assert_eq!(q("0.5").bytes().unwrap(), Bytes(1), "rounds up like Value");
    }

    #[test]
    fn bad_quantities_say_what_is_wrong() {
        for bad in ["", "abc", "1.2.3", "5 Mi", "1Zi", "Mi", "1e", "."] {
            let err = Quantity::parse(bad).unwrap_err();
            assert!(matches!(err, QuantityError::Syntax(_)), "{bad}: {err}");
        }
        assert!(matches!(Quantity::parse("1e99"), Err(QuantityError::Overflow(_))));
        assert!(matches!(q("-1").bytes(), Err(QuantityError::Negative(_))));
        assert!(matches!(q("100Ei").bytes(), Err(QuantityError::Overflow(_))));
    }

    #[test]
    fn prints_like_kubernetes() {
        assert_eq!(Millicores(500).to_string(), "500m");
        assert_eq!(Millicores(3000).to_string(), "3");
        assert_eq!(Bytes(256 << 20).to_string(), "256Mi");
        assert_eq!(Bytes(1000).to_string(), "1000");
        assert_eq!(Bytes(0).to_string(), "0");
    }

    #[test]
    fn keeps_the_text_and_numbers_as_written() {
        let r: Resources = serde_json::from_str(r#"{"cpu": 2, "memory": "256Mi", "storage": 0.5}"#).unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"cpu":2,"memory":"256Mi","storage":"0.5"}"#);
        let err = serde_json::from_str::<Resources>(r#"{"cpu": "lots"}"#).unwrap_err();
        assert!(err.to_string().contains("is not a quantity"), "{err}");
    }

    proptest! {
        #[test]
        fn printed_quantities_parse_back(m in 0u64..1 << 50, b in 0u64..1 << 60) {
            prop_assert_eq!(Millicores(m).to_quantity().millicores().unwrap(), Millicores(m));
            prop_assert_eq!(Bytes(b).to_quantity().bytes().unwrap(), Bytes(b));
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,30}") {
            let _ = Quantity::parse(&s).map(|q| (q.bytes(), q.millicores()));
        }
    }
}
