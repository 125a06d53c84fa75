use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ContainerSpec;
use crate::meta::{Condition, Time};
use crate::object::{KindSpec, Scope};
use crate::quantity::Resources;
use crate::validation::{FieldError, FieldPath, Validate, check_dns1123_subdomain};

/// One instance of a Workload, created by the workload controller and bound to a node by the
/// scheduler.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaSpec {
    /// Name of the owning Workload (same namespace).
    pub workload: String,
    /// The node this replica is bound to; set once, by the scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The `metadata.uid` of the Node bound to, set with `nodeName`. The replica belongs to
    /// that Node object only: a Node registered later under the same name (after the first
    /// was deleted) is another node, and the replica is evicted rather than handed to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_uid: Option<String>,
    /// What to run, copied from the Workload at creation.
    pub container: ContainerSpec,
    /// The image its tag resolved to for the workload's replicas of this template
    /// (`REGISTRY/REPOSITORY@sha256:…`, from the first replica's pull), set by the workload
    /// controller at creation: the node pulls this rather than what the tag says now, so all
    /// replicas run the same bits. Honoured only when it names the image's own repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_image: Option<String>,
}

/// Whether `s` is a repository digest, `REGISTRY/REPOSITORY@sha256:` and 64 hex digits (what
/// a pull's `imageID` is; an imported image's bare `sha256:…` ID is not one).
pub fn is_repository_digest(s: &str) -> bool {
    s.len() <= 600
        && s.split_once("@sha256:").is_some_and(|(repo, hex)| {
            !repo.is_empty()
                && !repo.contains(char::is_whitespace)
                && hex.len() == 64
                && hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        })
}

impl Validate for ReplicaSpec {
    fn validate(&self, path: &FieldPath, errors: &mut Vec<FieldError>) {
        if let Err(e) = check_dns1123_subdomain(&self.workload) {
            errors.push(path.child("workload").error(e));
        }
        if let Some(node) = &self.node_name
            && let Err(e) = check_dns1123_subdomain(node)
        {
            errors.push(path.child("nodeName").error(e));
        }
        if self.node_uid.is_some() && self.node_name.is_none() {
            errors.push(path.child("nodeUid").error("set only together with nodeName"));
        }
        self.container.validate(&path.child("container"), errors);
        if let Some(pin) = &self.pinned_image {
            if self.container.image.is_none() {
                errors.push(path.child("pinnedImage").error("set only for a container image"));
            } else if !is_repository_digest(pin) {
                errors.push(
                    path.child("pinnedImage").error("must be REGISTRY/REPOSITORY@sha256:<64 hex digits>"),
                );
            }
        }
    }
}

/// Lifecycle phase of a replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReplicaPhase {
    /// Not running yet: unscheduled, or being started.
    #[default]
    Pending,
    /// The process runs.
    Running,
    /// Exited with status 0 and will not be restarted.
    Succeeded,
    /// Exited with an error (or was killed) and will not be restarted.
    Failed,
    /// The node stopped reporting.
    Unknown,
}

/// The annotation of a Replica naming who pays for it (its workload's signer), written by the
/// workload controller when it makes the replica.
pub const PAYER_ANNOTATION: &str = "univrs.io/payer";

impl ReplicaPhase {
    /// Whether the replica has finished for good.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// Types of Replica conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReplicaConditionType {
    /// Bound to a node (or why not).
    Scheduled,
    /// Running and ready.
    Ready,
}

/// What the node agent (and scheduler) observed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaStatus {
    /// Lifecycle phase.
    #[serde(default)]
    pub phase: ReplicaPhase,
    /// How many times the process was restarted.
    #[serde(default)]
    pub restarts: u32,
    /// Exit code of the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// One CamelCase word: `OOMKilled`, `Error`, `Completed`, `Unschedulable`,
    /// `CrashLoopBackOff` (waiting to be started again after it ended), …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How the last run ended (`Error`, `OOMKilled`, `Completed`, …), kept while the replica
    /// waits to be started again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_reason: Option<String>,
    /// A sentence for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the current run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the last run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Measured usage: average CPU over the run, peak memory (for metering and honesty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Resources>,
    /// The limits the node applied to the replica's cgroup, read back from it (for honesty:
    /// what was delivered against what was asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Resources>,
    /// The image it runs, pinned (as Kubernetes' `imageID`): `REPOSITORY@sha256:…` of the
    /// manifest its reference resolved to at the first pull, or the image ID (`sha256:…` of its
    /// config) of an image imported without one. The replica's restarts run this image.
    #[serde(default, rename = "imageID", skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The replica's address on its node's network for its owner (as Kubernetes' `podIP`):
    /// its owner's other replicas on the node reach it there, and by name.
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// The node's ports published to it, as `HOSTPORT→PORT/PROTOCOL`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published_ports: Vec<String>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition<ReplicaConditionType>>,
}

/// The reason of a replica waiting to be started again after its process ended (as
/// Kubernetes' container waiting reason).
pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";

/// The annotation the scheduler puts on a Replica whose node no longer satisfies its
/// workload's trust policy or placement (its value says why): the replica is replaced, a new
/// one first. An annotation, not a condition: only the control plane writes a Replica's
/// metadata, while its node writes its status.
pub const DISRUPTION_ANNOTATION: &str = "univrs.io/disruption-target";

/// Why `annotations` (a Replica's) mark it for replacement, if they do.
pub fn disruption_of(annotations: Option<&std::collections::BTreeMap<String, String>>) -> Option<&str> {
    annotations?.get(DISRUPTION_ANNOTATION).map(String::as_str)
}

impl ReplicaStatus {
    /// Whether the replica counts as ready: its process runs and its `Ready` condition is not
    /// `False` (a node agent writes it at every start: `True` at once without a readiness
    /// probe, after the probe passes with one; `False` while it waits to restart).
    pub fn is_ready(&self) -> bool {
        self.phase == ReplicaPhase::Running
            && !self.conditions.iter().any(|c| {
                c.type_ == ReplicaConditionType::Ready && c.status != crate::meta::ConditionStatus::True
            })
    }
}

impl KindSpec for ReplicaSpec {
    type Status = ReplicaStatus;
    const KIND: &'static str = "Replica";
    const PLURAL: &'static str = "replicas";
    const SINGULAR: &'static str = "replica";
    const SHORT_NAMES: &'static [&'static str] = &["rp"];
    const SCOPE: Scope = Scope::Namespaced;
    const SIGNED: bool = false;
    const DESCRIPTION: &'static str = "One instance of a Workload, bound to a node by the scheduler.";
    const CATEGORIES: &'static [&'static str] =
        &[crate::object::CATEGORY_ALL, crate::object::CATEGORY_UNIVRS];
}
