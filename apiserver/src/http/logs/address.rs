//! Where the apiserver may connect to reach a node's agent, decided without I/O.
//!
//! A Node is written by whoever holds a key (any key is a user), so its addresses are an
//! anonymous caller's choice: without a policy, the log proxy would connect wherever a stranger
//! points it (SSRF). The apiserver therefore connects only to
//! - an address its operator signed: the Node's signature verifies and its signer is its
//!   `spec.operator` (checked again here, not only at admission, so data written under older
//!   rules cannot widen it);
//! - of the form `/ip4/A/tcp/P/tls/http` or `/ip6/A/tcp/P/tls/http`: literal IPs only (no DNS
//!   name that could resolve elsewhere later), and TLS, so the agent proves the node key;
//! - that is not loopback, link-local, unspecified, multicast or broadcast (the apiserver's own
//!   host and its metadata services are not a node), unless the operator of the apiserver
//!   allows loopback and link-local with `--allow-loopback-nodes` (one-machine setups, tests).
//!
//! Private ranges (10/8, 172.16/12, 192.168/16, fc00::/7) are allowed: operators run nodes on
//! their LANs.

use api::identity::{NodeAddress, NodeAddressError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use api::identity::Did;
use serde_json::Value;

/// The form of an agent's address in a Node's `spec.addresses`.
pub const EXPECTED_FORM: &str = NodeAddress::FORM;

/// Which addresses the apiserver connects to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Loopback and link-local addresses too (`--allow-loopback-nodes`).
    pub allow_loopback: bool,
}

/// Why an IP address is not an agent's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressRule {
    /// 127.0.0.0/8, ::1: the apiserver's own host.
    Loopback,
    /// 169.254.0.0/16, fe80::/10: the link (and cloud metadata services on it).
    LinkLocal,
    /// 0.0.0.0/8, ::: "this host" on most systems.
    Unspecified,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// ::a.b.c.d (deprecated IPv4-compatible IPv6), which some stacks route to the IPv4 address.
    Ipv4Compatible,
    /// Port 0 is no port.
    PortZero,
}

impl AddressRule {
    /// Whether `--allow-loopback-nodes` lifts this rule.
    pub fn lifted_by_flag(self) -> bool {
        matches!(self, AddressRule::Loopback | AddressRule::LinkLocal)
    }
}

impl std::fmt::Display for AddressRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddressRule::Loopback => "a loopback address",
            AddressRule::LinkLocal => "a link-local address",
            AddressRule::Unspecified => "an unspecified address",
            AddressRule::Multicast => "a multicast address",
            AddressRule::Broadcast => "the broadcast address",
            AddressRule::Ipv4Compatible => "an IPv4-compatible IPv6 address",
            AddressRule::PortZero => "port 0",
        })
    }
}

/// Whether the apiserver may connect to `addr` for a node's agent: `Err` names the rule.
pub fn check_address(addr: SocketAddr, policy: AddressPolicy) -> Result<(), AddressRule> {
    if addr.port() == 0 {
        return Err(AddressRule::PortZero);
    }
    // An IPv4-mapped IPv6 address (::ffff:127.0.0.1) reaches the IPv4 address: judged as that.
    let rule = match addr.ip().to_canonical() {
        IpAddr::V4(ip) => v4_rule(ip),
        IpAddr::V6(ip) => v6_rule(ip),
    };
    match rule {
        Some(rule) if policy.allow_loopback && rule.lifted_by_flag() => Ok(()),
        Some(rule) => Err(rule),
        None => Ok(()),
    }
}

fn v4_rule(ip: Ipv4Addr) -> Option<AddressRule> {
    if ip.is_loopback() {
        Some(AddressRule::Loopback)
    } else if ip.is_link_local() {
        Some(AddressRule::LinkLocal)
    } else if ip.octets()[0] == 0 {
        Some(AddressRule::Unspecified)
    } else if ip.is_multicast() {
        Some(AddressRule::Multicast)
    } else if ip.is_broadcast() {
        Some(AddressRule::Broadcast)
    } else {
        None
    }
}

fn v6_rule(ip: Ipv6Addr) -> Option<AddressRule> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some(AddressRule::Loopback)
    } else if first & 0xffc0 == 0xfe80 {
        Some(AddressRule::LinkLocal)
    } else if ip.is_unspecified() {
        Some(AddressRule::Unspecified)
    } else if ip.is_multicast() {
        Some(AddressRule::Multicast)
    } else if ip.segments()[..6] == [0; 6] {
        Some(AddressRule::Ipv4Compatible)
    } else {
        None
    }
}

/// Why the apiserver does not connect to a node's agent.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No `/tls/http` address, and no older one either.
    #[error(
        "node {node} names no agent address: its spec.addresses needs an entry {EXPECTED_FORM}, signed by its operator (ui node register)"
    )]
    NoAddress {
        /// The node.
        node: String,
    },
    /// Only a plain-HTTP address (the form before the hop spoke TLS).
    #[error(
        "node {node}'s agent address {address} is plain HTTP, and the apiserver calls agents only over TLS with the node's key: register the node again with a current ui (ui node register), which writes {EXPECTED_FORM}"
    )]
    PlainHttp {
        /// The node.
        node: String,
        /// The address it names.
        address: String,
    },
    /// The Node's signature does not verify, or its signer is not its operator.
    #[error(
        "node {node}'s addresses are not signed by its operator ({why}): the apiserver connects only to addresses a node's operator signed; the operator can sign the Node again with ui node register"
    )]
    NotOperatorSigned {
        /// The node.
        node: String,
        /// What is wrong.
        why: String,
    },
    /// `spec.nodeKey` is not a did:key.
    #[error("node {node}'s spec.nodeKey is not a did:key, so its agent cannot be authenticated")]
    BadNodeKey {
        /// The node.
        node: String,
    },
    /// Every agent address it names breaks a rule.
    #[error("{}", refused_address(node, *address, *rule))]
    Address {
        /// The node.
        node: String,
        /// The (first) address.
        address: SocketAddr,
        /// The rule it breaks.
        rule: AddressRule,
    },
}

fn refused_address(node: &str, address: SocketAddr, rule: AddressRule) -> String {
    let mut text =
        format!("node {node}'s agent address {address} is {rule}: the apiserver does not connect to it");
    if rule.lifted_by_flag() {
        text.push_str(
            " (only an apiserver started with --allow-loopback-nodes connects to loopback and link-local agents, for one-machine setups)",
        );
    } else {
        text.push_str(&format!(
            "; the node's operator must sign a routable address of the form {EXPECTED_FORM}"
        ));
    }
    text
}

/// Where and whom to call: the agent's address and the node's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentEndpoint {
    /// The address, allowed by the policy.
    pub addr: SocketAddr,
    /// The node's Ed25519 public key (`spec.nodeKey`), which the agent must prove.
    pub node_key: [u8; 32],
}

/// Parses one multiaddr (`api::identity::NodeAddress`): `Some(Ok(addr))` for the TLS form,
/// `Some(Err(text))` for the older plain `/…/tcp/P/http`, `None` for anything else.
fn parse(multiaddr: &str) -> Option<Result<SocketAddr, String>> {
    match NodeAddress::parse(multiaddr) {
        Ok(a) => Some(Ok(a.0)),
        Err(NodeAddressError::PlainHttp(text)) => Some(Err(text)),
        Err(NodeAddressError::Other(_)) => None,
    }
}

/// The agent of `node` (a stored Node object) under `policy`.
pub fn agent_endpoint(node: &Value, policy: AddressPolicy) -> Result<AgentEndpoint, Refused> {
    let name = node.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let operator = node.pointer("/spec/operator").and_then(Value::as_str).unwrap_or_default();
    match api::signing::verify(node) {
        Ok(v) if v.signer.as_str() == operator => {}
        Ok(v) => {
            let why = format!("signed by {}, operator {operator}", v.signer.as_str());
            return Err(Refused::NotOperatorSigned { node: name, why });
        }
        Err(e) => return Err(Refused::NotOperatorSigned { node: name, why: e.to_string() }),
    }
    let node_key = node
        .pointer("/spec/nodeKey")
        .and_then(Value::as_str)
        .and_then(|k| Did::parse(k).ok())
        .map(|d| d.verifying_key().to_bytes())
        .ok_or_else(|| Refused::BadNodeKey { node: name.clone() })?;
    let entries = node.pointer("/spec/addresses").and_then(Value::as_array);
    let parsed: Vec<Result<SocketAddr, String>> =
        entries.into_iter().flatten().filter_map(Value::as_str).filter_map(parse).collect();
    let mut first_refusal = None;
    for addr in parsed.iter().filter_map(|p| p.as_ref().ok()) {
        match check_address(*addr, policy) {
            Ok(()) => return Ok(AgentEndpoint { addr: *addr, node_key }),
            Err(rule) => {
                first_refusal.get_or_insert(Refused::Address { node: name.clone(), address: *addr, rule });
            }
        }
    }
    if let Some(refused) = first_refusal {
        return Err(refused);
    }
    match parsed.into_iter().find_map(Result::err) {
        Some(address) => Err(Refused::PlainHttp { node: name, address }),
        None => Err(Refused::NoAddress { node: name }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use serde_json::json;

    const STRICT: AddressPolicy = AddressPolicy { allow_loopback: false };
    const LOOPBACK_OK: AddressPolicy = AddressPolicy { allow_loopback: true };

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn routable_and_private_addresses_are_allowed() {
        for a in [
            "203.0.113.7:10250",
            "10.1.2.3:10250",
            "172.16.0.9:1",
            "192.168.1.20:443",
            "100.64.0.1:10250",
            "[2001:db8::1]:10250",
            "[fd12:3456::1]:10250",
        ] {
            assert_eq!(check_address(at(a), STRICT), Ok(()), "{a}");
        }
    }

    #[test]
    fn loopback_and_link_local_are_refused_unless_the_flag_allows_them() {
        for (a, rule) in [
            ("127.0.0.1:10250", AddressRule::Loopback),
            ("127.8.9.10:10250", AddressRule::Loopback),
            ("[::1]:10250", AddressRule::Loopback),
            ("169.254.169.254:80", AddressRule::LinkLocal),
            ("[fe80::1]:10250", AddressRule::LinkLocal),
            ("[febf::1]:10250", AddressRule::LinkLocal),
            // The IPv4-mapped form reaches the IPv4 address: no way around the rule.
            ("[::ffff:127.0.0.1]:10250", AddressRule::Loopback),
            ("[::ffff:169.254.169.254]:80", AddressRule::LinkLocal),
        ] {
            assert_eq!(check_address(at(a), STRICT), Err(rule), "{a}");
            assert_eq!(check_address(at(a), LOOPBACK_OK), Ok(()), "{a} with the flag");
        }
    }

    #[test]
    fn unspecified_multicast_broadcast_and_port_zero_are_refused_even_with_the_flag() {
        for (a, rule) in [
            ("0.0.0.0:10250", AddressRule::Unspecified),
            ("0.1.2.3:10250", AddressRule::Unspecified),
            ("[::]:10250", AddressRule::Unspecified),
            ("[::ffff:0.0.0.0]:10250", AddressRule::Unspecified),
            ("224.0.0.1:10250", AddressRule::Multicast),
            ("239.255.255.250:1900", AddressRule::Multicast),
            ("[ff02::1]:10250", AddressRule::Multicast),
            ("255.255.255.255:10250", AddressRule::Broadcast),
            ("[::127.0.0.1]:10250", AddressRule::Ipv4Compatible),
            ("203.0.113.7:0", AddressRule::PortZero),
        ] {
            assert_eq!(check_address(at(a), STRICT), Err(rule), "{a}");
            assert_eq!(check_address(at(a), LOOPBACK_OK), Err(rule), "{a} with the flag");
        }
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// A Node named `n1` with `addresses`, its key `node_key`, signed by `signer` and naming
    /// `operator`.
    fn node(addresses: &[&str], node_key: &SigningKey, signer: &SigningKey, operator: &SigningKey) -> Value {
        let did = |k: &SigningKey| Did::from_key(&k.verifying_key()).as_str().to_owned();
        let mut obj = json!({
            "apiVersion": "univrs.io/v1", "kind": "Node",
            "metadata": { "name": "n1" },
            "spec": { "operator": did(operator), "nodeKey": did(node_key), "addresses": addresses },
        });
        api::signing::sign(&mut obj, signer, chrono::Utc::now()).unwrap();
        obj
    }

    #[test]
    fn the_endpoint_is_the_first_allowed_tls_address_with_the_node_key() {
        let (nk, op) = (key(1), key(2));
        let n = node(
            &[
                "/ip4/10.0.0.1/udp/9000/quic-v1",
                "/ip4/127.0.0.1/tcp/1/tls/http",
                "/ip6/2001:db8::5/tcp/10250/tls/http",
            ],
            &nk,
            &op,
            &op,
        );
        let e = agent_endpoint(&n, STRICT).unwrap();
        assert_eq!(e.addr, at("[2001:db8::5]:10250"));
        assert_eq!(e.node_key, nk.verifying_key().to_bytes());
        assert_eq!(agent_endpoint(&n, LOOPBACK_OK).unwrap().addr, at("127.0.0.1:1"));
    }

    #[test]
    fn a_refused_address_names_the_rule_the_node_and_the_flag() {
        let op = key(2);
        let n = node(&["/ip4/127.0.0.1/tcp/10250/tls/http"], &key(1), &op, &op);
        let refused = agent_endpoint(&n, STRICT).unwrap_err();
        assert_eq!(
            refused,
            Refused::Address {
                node: "n1".into(),
                address: at("127.0.0.1:10250"),
                rule: AddressRule::Loopback
            }
        );
        let text = refused.to_string();
        assert!(text.contains("node n1") && text.contains("loopback"), "{text}");
        assert!(text.contains("--allow-loopback-nodes"), "{text}");
        let n = node(&["/ip4/224.0.0.1/tcp/10250/tls/http"], &key(1), &op, &op);
        let text = agent_endpoint(&n, LOOPBACK_OK).unwrap_err().to_string();
        assert!(text.contains("multicast") && !text.contains("--allow-loopback-nodes"), "{text}");
    }

    #[test]
    fn plain_http_dns_and_mismatched_families_are_not_agent_addresses() {
        let op = key(2);
        let plain = node(&["/ip4/10.0.0.1/tcp/10250/http"], &key(1), &op, &op);
        assert!(matches!(agent_endpoint(&plain, STRICT), Err(Refused::PlainHttp { .. })));
        assert!(agent_endpoint(&plain, STRICT).unwrap_err().to_string().contains("/tls/http"));
        for other in [
            "/dns4/agent.example/tcp/10250/tls/http",
            "/ip4/::1/tcp/10250/tls/http",
            "/ip6/10.0.0.1/tcp/10250/tls/http",
            "/ip4/10.0.0.1/tcp/99999/tls/http",
            "/ip4/10.0.0.1/tcp/10250/tls/http/extra",
        ] {
            let n = node(&[other], &key(1), &op, &op);
            assert_eq!(
                agent_endpoint(&n, LOOPBACK_OK),
                Err(Refused::NoAddress { node: "n1".into() }),
                "{other}"
            );
        }
        let none = node(&[], &key(1), &op, &op);
        assert!(agent_endpoint(&none, STRICT).unwrap_err().to_string().contains(EXPECTED_FORM));
    }

    #[test]
    fn only_addresses_the_operator_signed_count() {
        let (nk, op, stranger) = (key(1), key(2), key(3));
        let addresses = ["/ip4/10.0.0.1/tcp/10250/tls/http"];
        // Signed by someone who is not the operator it names.
        let n = node(&addresses, &nk, &stranger, &op);
        assert!(matches!(agent_endpoint(&n, STRICT), Err(Refused::NotOperatorSigned { .. })));
        // Signed by the operator, then changed.
        let mut n = node(&addresses, &nk, &op, &op);
        n["spec"]["addresses"] = json!(["/ip4/10.9.9.9/tcp/10250/tls/http"]);
        assert!(matches!(agent_endpoint(&n, STRICT), Err(Refused::NotOperatorSigned { .. })));
        // Not signed at all.
        let mut n = node(&addresses, &nk, &op, &op);
        n["metadata"]["annotations"] = json!({});
        assert!(matches!(agent_endpoint(&n, STRICT), Err(Refused::NotOperatorSigned { .. })));
        // What the server adds (uid, resourceVersion, status) is not signed and changes nothing.
        let mut n = node(&addresses, &nk, &op, &op);
        n["metadata"]["uid"] = json!("u-1");
        n["metadata"]["resourceVersion"] = json!("7");
        n["status"] = json!({ "runtime": "container" });
        assert_eq!(agent_endpoint(&n, STRICT).unwrap().addr, at("10.0.0.1:10250"));
    }

    #[test]
    fn a_node_key_that_is_not_a_did_key_is_refused() {
        let op = key(2);
        let mut n = json!({
            "apiVersion": "univrs.io/v1", "kind": "Node", "metadata": { "name": "n1" },
            "spec": { "operator": Did::from_key(&op.verifying_key()).as_str(), "nodeKey": "did:key:zNope",
                      "addresses": ["/ip4/10.0.0.1/tcp/10250/tls/http"] },
        });
        api::signing::sign(&mut n, &op, chrono::Utc::now()).unwrap();
        assert_eq!(agent_endpoint(&n, STRICT), Err(Refused::BadNodeKey { node: "n1".into() }));
    }
}
