use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::credits::Credits;
use crate::identity::Jurisdiction;
use crate::object::{KindSpec, Scope};
use crate::quantity::Resources;
use crate::validation::{FieldError, FieldPath, Validate, check_dns1123_subdomain};

/// An operator's signed offer of one node's resources, at a price, in a jurisdiction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeOfferSpec {
    /// Name of the Node offered.
    pub node: String,
    /// Resources offered.
    pub resources: Resources,
    /// Price per resource-hour.
    #[serde(default)]
    pub price: Price,
    /// ISO 3166-1 alpha-2 country the node is in.
    pub jurisdiction: Jurisdiction,
    /// Free-form region within the jurisdiction (e.g. `eu-central`, `berlin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The node's ports workloads may publish (`hostPort`); default 30000-32767, as
    /// Kubernetes' node ports: the operator's own services on other ports are never taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ports: Option<PortRange>,
}

/// A range of ports, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortRange {
    /// The first port (1-65535).
    pub min: u16,
    /// The last port (at least `min`).
    pub max: u16,
}

/// The host ports an offer without `hostPorts` lets workloads publish.
pub const DEFAULT_HOST_PORTS: PortRange = PortRange { min: 30_000, max: 32_767 };

impl NodeOfferSpec {
    /// The ports it lets workloads publish.
    pub fn host_ports(&self) -> PortRange {
        self.host_ports.unwrap_or(DEFAULT_HOST_PORTS)
    }
}

/// Credits charged per hour of each resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Price {
    /// Per core-hour.
    #[serde(default)]
    pub cpu: Credits,
    /// Per GiB-hour of memory.
    #[serde(default)]
    pub memory: Credits,
    /// Per GiB-hour of storage.
    #[serde(default)]
    pub storage: Credits,
}

impl Validate for NodeOfferSpec {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        if let Err(e) = check_dns1123_subdomain(&self.node) {
            errors.push(path.child("node").error(e));
        }
        self.resources.validate(&path.child("resources"), errors);
        if let Some(r) = self.host_ports
            && (r.min == 0 || r.min > r.max)
        {
            errors.push(path.child("hostPorts").error("min must be from 1 to max"));
        }
        if self.resources.cpu.is_none() && self.resources.memory.is_none() {
            errors.push(path.child("resources").error("offer at least cpu or memory"));
        }
        for (name, v) in
            [("cpu", self.price.cpu), ("memory", self.price.memory), ("storage", self.price.storage)]
        {
            if v.is_negative() {
                errors.push(path.child("price").child(name).error("must be >= 0"));
            }
        }
        if let Some(region) = &self.region
            && (region.is_empty() || region.len() > 63)
        {
            errors.push(path.child("region").error("must be 1 to 63 characters"));
        }
    }
}

/// Lifecycle phase of an offer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OfferPhase {
    /// Not yet matched to a Ready node.
    #[default]
    Pending,
    /// Open for placements.
    Active,
    /// Being drained or withdrawn: no new placements.
    Withdrawn,
}

/// What the node lifecycle controller observed about an offer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeOfferStatus {
    /// Lifecycle phase.
    #[serde(default)]
    pub phase: OfferPhase,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl KindSpec for NodeOfferSpec {
    type Status = NodeOfferStatus;
    const KIND: &'static str = "NodeOffer";
    const PLURAL: &'static str = "nodeoffers";
    const SINGULAR: &'static str = "nodeoffer";
    const SHORT_NAMES: &'static [&'static str] = &["offer", "offers"];
    const SCOPE: Scope = Scope::Cluster;
    const SIGNED: bool = true;
    const DESCRIPTION: &'static str =
        "An operator's signed offer of a node's resources at a price, in a jurisdiction.";
}
