//! Identities: `did:key` for Ed25519 keys, libp2p peer ids, age recipients, jurisdictions.
//!
//! Each is a newtype that can only hold a well-formed value, so that a function taking a
//! [`Did`] never has to wonder whether it got one.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// The multicodec prefix of an Ed25519 public key (`ed25519-pub`, 0xed, as a varint).
const ED25519_MULTICODEC: [u8; 2] = [0xed, 0x01];
const DID_KEY_PREFIX: &str = "did:key:z";

/// Why an identity could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not a `did:key:z…` string.
    #[error("{0:?} is not a did:key: expected did:key:z6Mk… (an Ed25519 key)")]
    NotDidKey(String),
    /// The key inside is not an Ed25519 public key.
    #[error("{0:?} does not hold a valid Ed25519 public key")]
    BadKey(String),
    /// Not a libp2p peer id.
    #[error("{0:?} is not a libp2p peer id (base58, e.g. 12D3KooW…)")]
    BadPeerId(String),
    /// Not an age recipient.
    #[error("{0:?} is not an age recipient (age1…)")]
    BadAgeRecipient(String),
    /// Not an ISO 3166-1 alpha-2 country code.
    #[error("{0:?} is not an ISO 3166-1 alpha-2 country code (e.g. DE, US, GB)")]
    BadJurisdiction(String),
}

/// Keys decoded lately, by their `did:key`: decoding one (base58, then the curve point) costs
/// more than a lookup, and the same few keys sign most writes and tokens. Only valid keys are
/// kept; emptied when full, so a stranger with many fresh keys costs at most this much memory.
static DECODED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, VerifyingKey>>> =
    std::sync::LazyLock::new(Default::default);
const DECODED_MAX: usize = 4096;

/// A decentralized identifier of the `did:key` method for an Ed25519 public key:
/// `did:key:z` + base58btc(0xed 0x01 ‖ 32-byte key). Users, operators and nodes are all Dids.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Did(String);

impl Did {
    /// The Did of a public key.
    pub fn from_key(key: &VerifyingKey) -> Self {
        let mut bytes = Vec::with_capacity(34);
        bytes.extend_from_slice(&ED25519_MULTICODEC);
        bytes.extend_from_slice(key.as_bytes());
        Self(format!("{DID_KEY_PREFIX}{}", bs58::encode(bytes).into_string()))
    }

    /// Parses a `did:key` and checks that it holds a valid Ed25519 key.
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        Self::decode(s)?;
        Ok(Self(s.to_owned()))
    }

    /// The public key this Did names.
    pub fn verifying_key(&self) -> VerifyingKey {
        // Construction guarantees a valid key, so this cannot fail.
        Self::decode(&self.0).expect("a Did always holds a valid key")
    }

    /// The key `s` names: from [`DECODED`] when it was decoded lately.
    fn decode(s: &str) -> Result<VerifyingKey, IdentityError> {
        if let Some(key) = DECODED.lock().ok().and_then(|keys| keys.get(s).copied()) {
            return Ok(key);
        }
        let key = Self::decode_anew(s)?;
        if let Ok(mut keys) = DECODED.lock() {
            if keys.len() >= DECODED_MAX {
                keys.clear();
            }
            keys.insert(s.to_owned(), key);
        }
        Ok(key)
    }

    fn decode_anew(s: &str) -> Result<VerifyingKey, IdentityError> {
        let not_did = || IdentityError::NotDidKey(s.to_owned());
        let b58 = s.strip_prefix(DID_KEY_PREFIX).ok_or_else(not_did)?;
        if b58.len() > 64 {
            return Err(not_did());
        }
        let bytes = bs58::decode(b58).into_vec().map_err(|_| not_did())?;
        let key = bytes.strip_prefix(&ED25519_MULTICODEC).ok_or_else(not_did)?;
        let key: &[u8; 32] = key.try_into().map_err(|_| IdentityError::BadKey(s.to_owned()))?;
        VerifyingKey::from_bytes(key).map_err(|_| IdentityError::BadKey(s.to_owned()))
    }

    /// The Did as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short form for tables: `did:key:z6Mk…abcd`.
    pub fn short(&self) -> String {
        let tail = &self.0[self.0.len().saturating_sub(6)..];
        format!("{}…{tail}", &self.0[..self.0.len().min(14)])
    }
}

/// A libp2p peer id in its base58 text form (`12D3KooW…` for Ed25519 keys).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PeerId(String);

impl PeerId {
    /// Parses a base58 peer id (a multihash of 34 to 64 bytes).
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let bad = || IdentityError::BadPeerId(s.to_owned());
        if s.len() > 100 {
            return Err(bad());
        }
        let bytes = bs58::decode(s).into_vec().map_err(|_| bad())?;
        // A multihash: code, length, digest. Identity (0x00) or sha2-256 (0x12).
        match bytes.as_slice() {
            [0x00 | 0x12, len, digest @ ..] if usize::from(*len) == digest.len() && digest.len() >= 32 => {
                Ok(Self(s.to_owned()))
            }
            _ => Err(bad()),
        }
    }

    /// The peer id libp2p derives from an Ed25519 key: the identity multihash of the key's
    /// protobuf encoding (`KeyType::Ed25519 = 1`, 32 bytes), in base58: `12D3KooW…`.
    pub fn from_key(key: &VerifyingKey) -> Self {
        let mut bytes = vec![0x00, 36, 0x08, 0x01, 0x12, 32];
        bytes.extend_from_slice(key.as_bytes());
        Self(bs58::encode(bytes).into_string())
    }

    /// The peer id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An age X25519 recipient (`age1…`, bech32): what secrets for a user or node are sealed to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct AgeRecipient(String);

impl AgeRecipient {
    /// Checks the shape of an age recipient: `age1` and 58 bech32 characters.
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        const BECH32: &str = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
        let ok = s.len() == 62
            && s.strip_prefix("age1").is_some_and(|rest| rest.chars().all(|c| BECH32.contains(c)));
        if ok { Ok(Self(s.to_owned())) } else { Err(IdentityError::BadAgeRecipient(s.to_owned())) }
    }

    /// The recipient as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A jurisdiction: an ISO 3166-1 alpha-2 country code such as `DE`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Jurisdiction(String);

/// Every assigned ISO 3166-1 alpha-2 code, in order.
const ISO_3166_ALPHA2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN \
BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER \
ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO \
IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML \
MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT \
PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN \
TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

impl Jurisdiction {
    /// Parses an assigned ISO 3166-1 alpha-2 code (upper case).
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let known = s.len() == 2 && ISO_3166_ALPHA2.split(' ').any(|c| c == s);
        if known { Ok(Self(s.to_owned())) } else { Err(IdentityError::BadJurisdiction(s.to_owned())) }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype {
    ($ty:ident, $desc:literal, $schema:tt) => {
        impl FromStr for $ty {
            type Err = IdentityError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let mut s = schemars::json_schema!($schema);
                s.insert("description".into(), $desc.into());
                s
            }
        }
    };
}

string_newtype!(Did, "An Ed25519 identity as a did:key (did:key:z6Mk…).",
    { "type": "string", "pattern": "^did:key:z6Mk[1-9A-HJ-NP-Za-km-z]{40,50}$" });
string_newtype!(PeerId, "A libp2p peer id (base58).",
    { "type": "string", "pattern": "^[1-9A-HJ-NP-Za-km-z]{40,100}$" });
string_newtype!(AgeRecipient, "An age X25519 recipient (age1…).",
    { "type": "string", "pattern": "^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$" });
string_newtype!(Jurisdiction, "An ISO 3166-1 alpha-2 country code.",
    { "type": "string", "pattern": "^[A-Z]{2}$" });

impl fmt::Debug for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Did({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn did_key_round_trips_and_starts_with_z6mk() {
        let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
        let did = Did::from_key(&key);
        assert!(did.as_str().starts_with("did:key:z6Mk"), "{did}");
        assert_eq!(Did::parse(did.as_str()).unwrap().verifying_key(), key);
    }

    #[test]
    fn did_key_matches_the_spec_test_vector() {
        // From the did:key method specification's Ed25519 test vectors.
        let did = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp";
        assert!(Did::parse(did).is_ok());
    }

    #[test]
    fn bad_dids_are_refused() {
        for bad in ["", "did:web:example.com", "did:key:zabc", "did:key:z6Mk", "did:key:z0OIl"] {
            assert!(Did::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decoded_keys_are_kept_bounded_and_only_when_valid() {
        let dids: Vec<Did> = (0..DECODED_MAX as u32 + 10)
            .map(|i| {
                let mut seed = [9; 32];
                seed[..4].copy_from_slice(&i.to_le_bytes());
                Did::from_key(&SigningKey::from_bytes(&seed).verifying_key())
            })
            .collect();
        for did in &dids {
            // Twice: the second from the cache, the same key.
            let first = Did::parse(did.as_str()).unwrap().verifying_key();
            assert_eq!(DECODED.lock().unwrap().get(did.as_str()), Some(&first), "kept once decoded");
            assert_eq!(Did::parse(did.as_str()).unwrap().verifying_key(), first);
            assert_eq!(Did::from_key(&first), *did);
            assert!(DECODED.lock().unwrap().len() <= DECODED_MAX);
        }
        // A refused did is refused again and never kept.
        for _ in 0..2 {
            assert!(Did::parse("did:key:z6Mk").is_err());
        }
        assert!(!DECODED.lock().unwrap().contains_key("did:key:z6Mk"));
    }

    #[test]
    fn jurisdictions_are_iso_codes() {
        assert!(Jurisdiction::parse("DE").is_ok());
        assert!(Jurisdiction::parse("GB").is_ok());
        for bad in ["UK", "de", "DEU", "", "XX"] {
            assert!(Jurisdiction::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn peer_ids_and_age_recipients_are_checked() {
        assert!(PeerId::parse("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA").is_ok());
        assert!(PeerId::parse("12D3").is_err());
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let id = PeerId::from_key(&key);
        assert!(id.as_str().starts_with("12D3KooW"), "{}", id.as_str());
        assert_eq!(PeerId::parse(id.as_str()).unwrap(), id);
        assert!(
            AgeRecipient::parse("age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p").is_ok()
        );
        assert!(AgeRecipient::parse("age1short").is_err());
    }
}

/// Where a node's agent serves the control plane (replica output): a literal IP and port, over
/// TLS with the node's own key, written as the multiaddr `/ip4/A/tcp/P/tls/http` (or
/// `/ip6/…`). The agent advertises it in its Node; the apiserver's log proxy reads it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddress(pub std::net::SocketAddr);

/// Why a multiaddr is not a [`NodeAddress`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeAddressError {
    /// The older plain-HTTP form (`/…/tcp/P/http`), which no apiserver calls any more.
    #[error(
        "{0:?} is plain HTTP: the node must be registered again (its agent now serves TLS with the node key)"
    )]
    PlainHttp(String),
    /// Anything else.
    #[error("{0:?} is not a node address ({form})", form = NodeAddress::FORM)]
    Other(String),
}

impl NodeAddress {
    /// The form, for messages.
    pub const FORM: &'static str = "/ip4/ADDRESS/tcp/PORT/tls/http (or /ip6/…)";

    /// Reads a multiaddr.
    pub fn parse(multiaddr: &str) -> Result<Self, NodeAddressError> {
        let other = || NodeAddressError::Other(multiaddr.to_owned());
        let socket = |ip: &str, port: &str| -> Option<std::net::SocketAddr> {
            Some(std::net::SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
        };
        match multiaddr.split('/').collect::<Vec<_>>().as_slice() {
            ["", proto @ ("ip4" | "ip6"), ip, "tcp", port, "tls", "http"] => {
                let addr = socket(ip, port).ok_or_else(other)?;
                // An /ip4 entry holds an IPv4 address and /ip6 an IPv6 one.
                if addr.is_ipv4() == (*proto == "ip4") { Ok(Self(addr)) } else { Err(other()) }
            }
            ["", "ip4" | "ip6", _, "tcp", _, "http"] => {
                Err(NodeAddressError::PlainHttp(multiaddr.to_owned()))
            }
            _ => Err(other()),
        }
    }
}

impl fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            std::net::SocketAddr::V4(a) => write!(f, "/ip4/{}/tcp/{}/tls/http", a.ip(), a.port()),
            std::net::SocketAddr::V6(a) => write!(f, "/ip6/{}/tcp/{}/tls/http", a.ip(), a.port()),
        }
    }
}

/// Where a node receives its replicas' traffic from other nodes: WireGuard over UDP, the
/// multiaddr `/ip4/ADDRESS/udp/PORT/wireguard` (or `/ip6/…`) among a Node's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelAddress(pub std::net::SocketAddr);

impl TunnelAddress {
    /// The first tunnel address of `addresses`, if any reads as one.
    pub fn find(addresses: &[String]) -> Option<Self> {
        addresses.iter().find_map(|a| Self::parse(a))
    }

    /// Reads a multiaddr.
    pub fn parse(multiaddr: &str) -> Option<Self> {
        match multiaddr.split('/').collect::<Vec<_>>().as_slice() {
            ["", proto @ ("ip4" | "ip6"), ip, "udp", port, "wireguard"] => {
                let addr = std::net::SocketAddr::new(ip.parse().ok()?, port.parse().ok()?);
                (addr.is_ipv4() == (*proto == "ip4")).then_some(Self(addr))
            }
            _ => None,
        }
    }
}

impl fmt::Display for TunnelAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            std::net::SocketAddr::V4(a) => write!(f, "/ip4/{}/udp/{}/wireguard", a.ip(), a.port()),
            std::net::SocketAddr::V6(a) => write!(f, "/ip6/{}/udp/{}/wireguard", a.ip(), a.port()),
        }
    }
}

/// The 32 bytes of a WireGuard public key in its base64 text form.
pub fn tunnel_key_bytes(text: &str) -> Option<[u8; 32]> {
    use base64::Engine as _;
    if text.len() != 44 {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod node_address_tests {
    use super::*;

    #[test]
    fn tunnel_addresses_and_keys_read_back() {
        for text in ["/ip4/10.0.0.1/udp/10250/wireguard", "/ip6/2001:db8::5/udp/1/wireguard"] {
            assert_eq!(TunnelAddress::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(TunnelAddress::parse("/ip4/2001:db8::5/udp/1/wireguard"), None);
        assert_eq!(TunnelAddress::parse("/ip4/10.0.0.1/tcp/1/tls/http"), None);
        let addrs = ["/ip4/10.0.0.1/tcp/1/tls/http".to_owned(), "/ip4/10.0.0.1/udp/1/wireguard".to_owned()];
        assert_eq!(TunnelAddress::find(&addrs).unwrap().0.port(), 1);
        assert_eq!(tunnel_key_bytes("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), Some([0; 32]));
        assert_eq!(tunnel_key_bytes("AAAA"), None);
    }

    #[test]
    fn node_addresses_read_back_what_they_write() {
        for text in ["/ip4/10.0.0.1/tcp/10250/tls/http", "/ip6/2001:db8::5/tcp/1/tls/http"] {
            assert_eq!(NodeAddress::parse(text).unwrap().to_string(), text);
        }
        assert!(matches!(
            NodeAddress::parse("/ip4/10.0.0.1/tcp/1/http"),
            Err(NodeAddressError::PlainHttp(_))
        ));
        for bad in [
            "/ip4/::1/tcp/1/tls/http",
            "/ip6/10.0.0.1/tcp/1/tls/http",
            "/dns4/x/tcp/1/tls/http",
            "/ip4/1.2.3.4/tcp/99999/tls/http",
            "",
        ] {
            assert!(matches!(NodeAddress::parse(bad), Err(NodeAddressError::Other(_))), "{bad}");
        }
    }
}
