use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::NoStatus;
use crate::meta::Time;
use crate::object::{KindSpec, Scope};
use crate::validation::{FieldError, FieldPath, Validate};

/// The namespace of node heartbeat leases, each named after its node.
pub const NODE_LEASE_NAMESPACE: &str = "univrs-node-lease";

/// The control plane's namespace (the controllers' leader-election leases): members only.
pub const SYSTEM_NAMESPACE: &str = "univrs-system";

/// A heartbeat or leader-election lease, as `coordination.k8s.io/v1` Lease.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseSpec {
    /// Who holds the lease (a did:key or node name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    /// How long the holder keeps it without renewing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<i32>,
    /// When the current holder acquired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<Time>,
    /// When the holder last renewed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<Time>,
    /// How many times it changed holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<i32>,
}

impl Validate for LeaseSpec {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        if self.lease_duration_seconds.is_some_and(|s| s <= 0) {
            errors.push(path.child("leaseDurationSeconds").error("must be > 0"));
        }
        if self.lease_transitions.is_some_and(|t| t < 0) {
            errors.push(path.child("leaseTransitions").error("must be >= 0"));
        }
    }
}

impl KindSpec for LeaseSpec {
    type Status = NoStatus;
    const KIND: &'static str = "Lease";
    const PLURAL: &'static str = "leases";
    const SINGULAR: &'static str = "lease";
    const SHORT_NAMES: &'static [&'static str] = &[];
    const SCOPE: Scope = Scope::Namespaced;
    const SIGNED: bool = false;
    const DESCRIPTION: &'static str = "A heartbeat or leader-election lease.";
}
