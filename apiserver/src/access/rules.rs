//! Who writes what, per kind, as data: one table that admission enforces, `kubectl auth can-i`
//! will answer from, and ARCHITECTURE.md shows.
//!
//! Control-plane members may write every part of every kind (within the invariants that bind
//! everyone: a signed object verifies, keeps its signer and never goes back in `signed-at`).
//! Everyone else may write a part only by holding one of the [`Role`]s listed for it; an empty
//! list means "the control plane only".

use api::kinds::{
    AccountSpec, AgentGrantSpec, ApplySetSpec, ApprovalSpec, AttestationSpec, AuditEventSpec,
    CreditGrantSpec, LeaseSpec, NodeOfferSpec, NodeSpec, ReplicaSpec, ReputationSpec, TransferSpec,
    TrustPolicySpec, WorkloadSpec,
};
use api::object::KindSpec;

/// A relation between a caller and an object that may entitle it to write (or read) a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The signer of the object (signed kinds): its owner.
    Owner,
    /// The node a Node object is: its `spec.nodeKey`.
    TheNode,
    /// The node a Replica is bound to: the Node named `spec.nodeName` whose uid is
    /// `spec.nodeUid`, authenticated by its node key.
    BoundNode,
    /// The node a heartbeat Lease belongs to: a Lease in the node-lease namespace named after
    /// the Node whose key the caller holds.
    LeaseOfTheNode,
    /// The user or the agent an Approval or AuditEvent is about: its `spec.owner` or
    /// `spec.agent`.
    Party,
    /// The owner of the object an Event is about (`regarding`, the very object by uid): its
    /// signer, or for a Replica its workload's.
    RegardingOwner,
    /// The node the Replica an Event is about is bound to, reporting as itself
    /// (`reportingInstance` is its name).
    Reporter,
}

impl Role {
    /// Who holds the role, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Role::Owner => "its owner (the signer)",
            Role::TheNode => "the node itself (its node key)",
            Role::BoundNode => "the node it is bound to",
            Role::LeaseOfTheNode => "the node it is named after (in the univrs-node-lease namespace)",
            Role::Party => "the user or the agent it is about",
            Role::RegardingOwner => "the owner of the object it is about",
            Role::Reporter => "the node the replica it is about is bound to, as reportingInstance",
        }
    }
}

/// A part of an object that only some readers see in full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Secret {
    /// JSON pointer to a list of `{name, …}` entries (environment variables).
    pub path: &'static str,
    /// Of each entry, only these fields are shown to other readers (an allow-list).
    pub shown: &'static [&'static str],
    /// Who (besides members) sees it in full.
    pub readers: &'static [Role],
}

/// The write and read rules of one kind.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// The kind (`KindSpec::KIND`).
    pub kind: &'static str,
    /// Who may create an object.
    pub create: &'static [Role],
    /// Who may change its spec and metadata.
    pub update: &'static [Role],
    /// Who may write its `status` subresource.
    pub status: &'static [Role],
    /// Who may delete it.
    pub delete: &'static [Role],
    /// Whether its spec can change at all once created (for anyone, members included).
    pub spec_immutable: bool,
    /// What readers without a role see redacted.
    pub secret: Option<Secret>,
    /// Who (besides members) sees an object of the kind at all; `None`: everyone.
    pub private: Option<&'static [Role]>,
}

const OWNER: &[Role] = &[Role::Owner];
const NOBODY: &[Role] = &[];

/// A kind whose objects a user signs and owns, whose status the control plane writes.
const fn owned(kind: &'static str) -> Rules {
    Rules {
        kind,
        create: OWNER,
        update: OWNER,
        status: NOBODY,
        delete: OWNER,
        spec_immutable: false,
        secret: None,
        private: None,
    }
}

/// Environment variables: names are shown to everyone, values and sealed values only to the
/// readers named.
const fn env(path: &'static str, readers: &'static [Role]) -> Option<Secret> {
    Some(Secret { path, shown: &["name"], readers })
}

/// The rules of every kind.
pub static RULES: [Rules; 16] = [
    Rules { secret: env("/spec/env", OWNER), ..owned(WorkloadSpec::KIND) },
    Rules {
        kind: ReplicaSpec::KIND,
        create: NOBODY,
        update: NOBODY,
        status: &[Role::BoundNode],
        delete: NOBODY,
        spec_immutable: false,
        secret: env("/spec/container/env", &[Role::BoundNode]),
        private: None,
    },
    owned(TrustPolicySpec::KIND),
    owned(NodeOfferSpec::KIND),
    Rules {
        kind: NodeSpec::KIND,
        create: &[Role::Owner, Role::TheNode],
        update: &[Role::Owner, Role::TheNode],
        status: &[Role::TheNode],
        delete: &[Role::Owner, Role::TheNode],
        spec_immutable: false,
        secret: None,
        private: None,
    },
    owned(CreditGrantSpec::KIND),
    owned(AttestationSpec::KIND),
    Rules {
        kind: ReputationSpec::KIND,
        create: NOBODY,
        update: NOBODY,
        status: NOBODY,
        delete: NOBODY,
        spec_immutable: false,
        secret: None,
        private: None,
    },
    // A transfer is a record: its payer signs it once (a Payment from their own account;
    // Metering is the control plane's, see `super::kind_rules`), and only the control plane
    // accounts or removes it.
    Rules { update: NOBODY, delete: NOBODY, spec_immutable: true, ..owned(TransferSpec::KIND) },
    Rules {
        kind: LeaseSpec::KIND,
        create: &[Role::LeaseOfTheNode],
        update: &[Role::LeaseOfTheNode],
        status: NOBODY,
        delete: &[Role::LeaseOfTheNode],
        spec_immutable: false,
        secret: None,
        private: None,
    },
    // Balances: written by the apiserver itself in the Raft entry of each committed Transfer;
    // through the API by nobody, members included (an invariant, see `super::invariants`).
    Rules {
        kind: AccountSpec::KIND,
        create: NOBODY,
        update: NOBODY,
        status: NOBODY,
        delete: NOBODY,
        spec_immutable: true,
        secret: None,
        private: None,
    },
    // A user's word on what their agent may do; an agent never writes one (not even with a
    // grant: `api::kinds::NEVER_GRANTED`).
    owned(AgentGrantSpec::KIND),
    // The apiserver makes an approval from an agent's held request and records its outcome;
    // the user decides it through `Registry::decide` (a signed decision), never by writing it.
    // Only the user and the agent read it: it holds the agent's whole request.
    private_record(ApprovalSpec::KIND),
    // What an agent's key did: the control plane's record, read by the agent and the user
    // whose grant decided.
    private_record(AuditEventSpec::KIND),
    // The parent of a user's apply set: theirs, like what it lists.
    owned(ApplySetSpec::KIND),
    // What happened to an object: the control plane's, and a node's about the replicas bound
    // to it; read only by those and the object's owner (an event may say more than the
    // object: a probe's output, why a pull failed). Removed by the control plane (retention).
    Rules {
        kind: api::kinds::event::EVENT_KIND,
        create: &[Role::Reporter],
        update: &[Role::Reporter],
        status: NOBODY,
        delete: NOBODY,
        spec_immutable: false,
        secret: None,
        private: Some(&[Role::RegardingOwner, Role::Reporter]),
    },
];

/// A record only the control plane writes and only its parties (and members) read.
const fn private_record(kind: &'static str) -> Rules {
    Rules {
        kind,
        create: NOBODY,
        update: NOBODY,
        status: NOBODY,
        delete: NOBODY,
        spec_immutable: false,
        secret: None,
        private: Some(&[Role::Party]),
    }
}

/// The rules of `kind`.
///
/// # Panics
/// If `kind` has no rules: a test checks that every kind of `api::kinds::KINDS` has.
pub fn of(kind: &str) -> &'static Rules {
    RULES.iter().find(|r| r.kind == kind).unwrap_or_else(|| panic!("no access rules for kind {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_exactly_one_set_of_rules() {
        for k in &api::kinds::KINDS {
            assert_eq!(RULES.iter().filter(|r| r.kind == k.kind).count(), 1, "{}", k.kind);
        }
        assert_eq!(RULES.len(), api::kinds::KINDS.len());
    }

    #[test]
    fn whoever_may_write_an_object_may_read_its_secret() {
        // Errors of a write (a failed patch test, a validation message) may show stored values
        // to the writer: that is safe only because every writer is also a reader.
        for r in &RULES {
            let Some(secret) = r.secret else { continue };
            for roles in [r.create, r.update, r.status, r.delete] {
                for role in roles {
                    assert!(secret.readers.contains(role), "{}: {role:?} writes but may not read", r.kind);
                }
            }
        }
    }

    #[test]
    fn unsigned_kinds_give_no_one_the_owner_role() {
        // An unsigned object has no signer, so `Owner` could never hold: listing it would be a
        // rule that silently means "nobody".
        for r in &RULES {
            let signed = api::kinds::by_kind(r.kind).unwrap().signed;
            for roles in [r.create, r.update, r.status, r.delete] {
                assert!(signed || !roles.contains(&Role::Owner), "{}", r.kind);
            }
        }
    }
}
