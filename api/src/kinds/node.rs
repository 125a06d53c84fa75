use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::identity::{AgeRecipient, Did, PeerId};
use crate::meta::{Condition, Time};
use crate::object::{KindSpec, Scope};
use crate::quantity::Resources;
use crate::validation::{FieldError, FieldPath, Validate};

/// A machine that runs replicas, registered by its node agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// The node's libp2p peer id (derived from the node key).
    pub peer_id: PeerId,
    /// The operator who runs the node and signs its registration.
    pub operator: Did,
    /// The node key's own identity; the agent authenticates with it.
    pub node_key: Did,
    /// Multiaddrs the node listens on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Secrets for this node are sealed to this recipient.
    pub age_recipient: AgeRecipient,
    /// The WireGuard public key (X25519, base64) the node carries its replicas' traffic to
    /// other nodes with, at its `/ip4/…/udp/…/wireguard` address. Derived from the node's key
    /// material; none: this node's replicas reach no other node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_key: Option<String>,
    /// What the machine has.
    pub capacity: Resources,
    /// When true, no new replicas are placed here (drain).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unschedulable: bool,
}

impl Validate for NodeSpec {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        self.capacity.validate(&path.child("capacity"), errors);
        if let Some(key) = &self.tunnel_key
            && crate::identity::tunnel_key_bytes(key).is_none()
        {
            errors.push(
                path.child("tunnelKey")
                    .error(format!("{key:?} is not a WireGuard public key (32 bytes, base64)")),
            );
        }
        for (i, addr) in self.addresses.iter().enumerate() {
            if !addr.starts_with('/') || addr.len() > 256 {
                errors.push(
                    path.child("addresses")
                        .index(i)
                        .error(format!("{addr:?} is not a multiaddr (/ip4/…/tcp/…)")),
                );
            }
        }
    }
}

/// Types of Node conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NodeConditionType {
    /// The agent heartbeats and can run replicas.
    Ready,
}

/// What the node agent and lifecycle controller observed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeStatus {
    /// Conditions (Ready).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition<NodeConditionType>>,
    /// Last heartbeat received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
    /// What is left for new replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocatable: Option<Resources>,
    /// The runtime that runs replicas here (`container` or `process`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The IPv4 network (`A.B.C.D/N`) this node's replicas have their addresses in; written by
    /// the node. An agent picks a network no other Node advertises, so an owner's replicas
    /// have addresses unique across the nodes they span (not enforced here: a node reaches a
    /// peer's replicas only inside a network of 10.0.0.0/8 that does not overlap its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_network: Option<String>,
}

impl KindSpec for NodeSpec {
    type Status = NodeStatus;
    const KIND: &'static str = "Node";
    const PLURAL: &'static str = "nodes";
    const SINGULAR: &'static str = "node";
    const SHORT_NAMES: &'static [&'static str] = &["no"];
    const SCOPE: Scope = Scope::Cluster;
    const SIGNED: bool = true;
    const DESCRIPTION: &'static str = "A machine registered by its node agent, signed by its operator.";
}
