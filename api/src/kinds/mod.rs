//! The kinds of `univrs.io/v1` (design.md §3), and `events.k8s.io/v1` Event ([`event`]).

mod account;
mod agent_grant;
mod apply_set;
mod approval;
mod attestation;
mod audit_event;
mod credit_grant;
pub mod event;
mod lease;
mod node;
mod node_offer;
mod probe;
mod replica;
mod reputation;
mod transfer;
mod trust_policy;
mod workload;

pub use account::*;
pub use agent_grant::*;
pub use apply_set::*;
pub use approval::*;
pub use attestation::*;
pub use audit_event::*;
pub use credit_grant::*;
pub use lease::*;
pub use node::*;
pub use node_offer::*;
pub use probe::*;
pub use replica::*;
pub use reputation::*;
pub use transfer::*;
pub use trust_policy::*;
pub use workload::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::object::{KindInfo, Object};

/// A Workload object.
pub type Workload = Object<WorkloadSpec>;
/// A Replica object.
pub type Replica = Object<ReplicaSpec>;
/// A TrustPolicy object.
pub type TrustPolicy = Object<TrustPolicySpec>;
/// A NodeOffer object.
pub type NodeOffer = Object<NodeOfferSpec>;
/// A Node object.
pub type Node = Object<NodeSpec>;
/// A CreditGrant object.
pub type CreditGrant = Object<CreditGrantSpec>;
/// An Attestation object.
pub type Attestation = Object<AttestationSpec>;
/// A Reputation object.
pub type Reputation = Object<ReputationSpec>;
/// A Transfer object.
pub type Transfer = Object<TransferSpec>;
/// A Lease object.
pub type Lease = Object<LeaseSpec>;
/// An Account object.
pub type Account = Object<AccountSpec>;
/// An AgentGrant object.
pub type AgentGrant = Object<AgentGrantSpec>;
/// An Approval object.
pub type Approval = Object<ApprovalSpec>;
/// An AuditEvent object.
pub type AuditEvent = Object<AuditEventSpec>;
/// An ApplySet object.
pub type ApplySet = Object<ApplySetSpec>;

/// Every kind, in the order of design.md §3: each carries its group and version, so a kind
/// of another group is one more entry here, not a special case elsewhere.
pub static KINDS: [KindInfo; 16] = [
    KindInfo::of::<WorkloadSpec>(),
    KindInfo::of::<ReplicaSpec>(),
    KindInfo::of::<TrustPolicySpec>(),
    KindInfo::of::<NodeOfferSpec>(),
    KindInfo::of::<NodeSpec>(),
    KindInfo::of::<CreditGrantSpec>(),
    KindInfo::of::<AttestationSpec>(),
    KindInfo::of::<ReputationSpec>(),
    KindInfo::of::<TransferSpec>(),
    KindInfo::of::<LeaseSpec>(),
    KindInfo::of::<AccountSpec>(),
    KindInfo::of::<AgentGrantSpec>(),
    KindInfo::of::<ApprovalSpec>(),
    KindInfo::of::<AuditEventSpec>(),
    KindInfo::of::<ApplySetSpec>(),
    event::INFO,
];

/// Each API group version the kinds are served in (`univrs.io/v1`, `events.k8s.io/v1`), in
/// the order of [`KINDS`]: `(group, version, group/version)`.
pub fn group_versions() -> Vec<(&'static str, &'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str, &'static str)> = Vec::new();
    for k in &KINDS {
        if !out.iter().any(|(_, _, gv)| *gv == k.api_version) {
            out.push((k.group, k.version, k.api_version));
        }
    }
    out
}

/// The kinds served in the group version `api_version`.
pub fn in_group_version(api_version: &str) -> impl Iterator<Item = &'static KindInfo> + '_ {
    KINDS.iter().filter(move |k| k.api_version == api_version)
}

/// The facts of kind `S` (`info::<WorkloadSpec>()`): no name to mistype.
pub fn info<S: crate::KindSpec>() -> &'static KindInfo {
    by_kind(S::KIND).expect("every KindSpec is in KINDS")
}

/// The kind with this exact `kind` value.
pub fn by_kind(kind: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// The kind a user means by `name`: kind, plural, singular or short name (as kubectl).
pub fn lookup(name: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.is_named(name))
}

/// The kinds in `category` (`all`, `univrs`), in the order of [`KINDS`]: what kubectl lists
/// for `kubectl get CATEGORY`.
pub fn in_category(category: &str) -> impl Iterator<Item = &'static KindInfo> {
    let category = category.to_owned();
    KINDS.iter().filter(move |k| k.categories.contains(&category.as_str()))
}

/// Whether the subject of an attestation or reputation is an operator or a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SubjectKind {
    /// An operator, named by its did:key.
    Operator,
    /// A node, named by its Node object's name.
    Node,
}

/// A status with nothing in it, for kinds whose state is all in `spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoStatus {}

fn check_subject(
    kind: SubjectKind,
    subject: &str,
    path: &crate::FieldPath,
    errors: &mut Vec<crate::FieldError>,
) {
    let result = match kind {
        SubjectKind::Operator => crate::identity::Did::parse(subject).map(drop).map_err(|e| e.to_string()),
        SubjectKind::Node => crate::validation::check_dns1123_subdomain(subject),
    };
    if let Err(e) = result {
        errors.push(path.error(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KindSpec as _;

    #[test]
    fn kinds_are_found_by_every_name_kubectl_accepts() {
        assert_eq!(lookup("workloads").unwrap().kind, "Workload");
        assert_eq!(lookup("Workload").unwrap().kind, "Workload");
        assert_eq!(lookup("workload").unwrap().kind, "Workload");
        assert_eq!(lookup("wl").unwrap().kind, "Workload");
        assert_eq!(lookup("tp").unwrap().kind, "TrustPolicy");
        assert!(lookup("pods").is_none());
    }

    #[test]
    fn every_univrs_kind_is_in_the_univrs_category_and_what_runs_is_in_all() {
        let univrs = KINDS.iter().filter(|k| k.group == crate::GROUP).count();
        assert_eq!(in_category(crate::object::CATEGORY_UNIVRS).count(), univrs);
        assert_eq!(univrs, KINDS.len() - 1, "Event is the one kind of another group");
        let all: Vec<&str> = in_category(crate::object::CATEGORY_ALL).map(|k| k.kind).collect();
        assert_eq!(all, [WorkloadSpec::KIND, ReplicaSpec::KIND]);
        // A category is never also the name of a kind: kubectl would take it for the kind.
        for c in KINDS.iter().flat_map(|k| k.categories) {
            assert!(lookup(c).is_none(), "{c} is a category and a kind's name");
        }
    }

    #[test]
    fn names_are_unique_across_kinds() {
        let mut names: Vec<&str> = KINDS
            .iter()
            .flat_map(|k| [k.plural, k.singular].into_iter().chain(k.short_names.iter().copied()))
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a plural, singular or short name is used twice");
    }
}
