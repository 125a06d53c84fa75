//! Who may read a replica's output (`replicas/NAME/log`): the control-plane members and the
//! owner of the workload the replica belongs to. One rule, for the log proxy that enforces it
//! and for `kubectl auth can-i get replicas --subresource=log` that answers from it.

use api::kinds::WorkloadSpec;
use api::object::KindSpec as _;
use serde_json::Value;

use super::{Caller, Lookup, signer};
use crate::registry::ApiError;

/// The signer of `workload` (as stored) if it is the workload `replica` belongs to: the one its
/// owner reference names by uid, so a new workload of the same name owns nothing of the old.
pub fn replica_owner<'a>(replica: &Value, workload: Option<&'a Value>) -> Option<&'a str> {
    let workload = workload?;
    let uid = workload.pointer("/metadata/uid").and_then(Value::as_str)?;
    let owned = replica.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|refs| {
        refs.iter().any(|r| r["kind"] == WorkloadSpec::KIND && r["uid"].as_str() == Some(uid))
    });
    if owned { signer(workload) } else { None }
}

/// Whether `who` may read the output of `replica`, whose workload (named by `spec.workload`)
/// is stored as `workload`: a member, the workload's owner, or an agent the owner granted
/// `logs` on Workloads in the replica's namespace.
pub fn may_read_log(
    who: &Caller,
    replica: &Value,
    workload: Option<&Value>,
    lookup: &dyn Lookup,
) -> Result<(), ApiError> {
    let owner = replica_owner(replica, workload);
    if who.member || (who.did.is_some() && who.is(owner)) {
        return Ok(());
    }
    let meta =
        |f: &str| replica.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).unwrap_or_default();
    if let Some(owner) = owner
        && let Some(granted) =
            super::agent::may_read_logs(who, owner, meta("namespace"), lookup, chrono::Utc::now())
    {
        return granted.map_err(ApiError::Forbidden);
    }
    let name = replica.pointer("/spec/workload").and_then(Value::as_str).unwrap_or_default();
    Err(ApiError::Forbidden(format!(
        "{} may not read the output of replica {}/{}: only the owner of workload {name} may",
        who.name(),
        meta("namespace"),
        meta("name"),
    )))
}

/// Whether `who` may run a command in `replica`'s container (`replicas/NAME/exec`): only the
/// owner of its workload, with their own key. Not a member (the control plane runs nothing in
/// users' containers), not an agent key (what an agent may do is what its grant lists, and no
/// grant lists exec).
pub fn may_exec(who: &Caller, replica: &Value, workload: Option<&Value>) -> Result<(), ApiError> {
    let owner = replica_owner(replica, workload);
    if owner.is_some() && who.is(owner) {
        return Ok(());
    }
    let meta =
        |f: &str| replica.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).unwrap_or_default();
    let name = replica.pointer("/spec/workload").and_then(Value::as_str).unwrap_or_default();
    Err(ApiError::Forbidden(format!(
        "{} may not run commands in replica {}/{}: only the owner of workload {name} may",
        who.name(),
        meta("namespace"),
        meta("name"),
    )))
}

#[cfg(test)]
mod tests {
    use api::identity::Did;
    use serde_json::json;

    use super::*;
    use crate::access::{NodeFacts, ObjectFacts};

    struct NoGrants;
    impl Lookup for NoGrants {
        fn node(&self, _: &str) -> Option<NodeFacts> {
            None
        }
        fn object(&self, _: &api::KindInfo, _: Option<&str>, _: &str) -> Option<ObjectFacts> {
            None
        }
        fn grants(&self, _: &str) -> Vec<std::sync::Arc<crate::access::agent::GrantFacts>> {
            Vec::new()
        }
    }

    fn may_read_log(who: &Caller, replica: &Value, workload: Option<&Value>) -> Result<(), ApiError> {
        super::may_read_log(who, replica, workload, &NoGrants)
    }

    /// One grant: `owner` lets `agent` read logs (`mode`) of Workloads in `default`.
    struct Granted {
        owner: Did,
        agent: Did,
        mode: api::kinds::GrantMode,
    }
    impl Lookup for Granted {
        fn node(&self, _: &str) -> Option<NodeFacts> {
            None
        }
        fn object(&self, _: &api::KindInfo, _: Option<&str>, _: &str) -> Option<ObjectFacts> {
            None
        }
        fn grants(&self, agent: &str) -> Vec<std::sync::Arc<crate::access::agent::GrantFacts>> {
            if agent != self.agent.as_str() {
                return Vec::new();
            }
            let spec = api::kinds::AgentGrantSpec {
                agent: self.agent.clone(),
                expires: api::meta::Time(chrono::Utc::now() + chrono::Duration::hours(1)),
                rules: vec![api::kinds::GrantRule {
                    verbs: vec![api::kinds::AgentVerb::Logs],
                    kinds: vec!["Workload".into()],
                    namespaces: vec!["default".into()],
                    mode: self.mode,
                }],
                reveal_env: false,
                spending_cap: None,
                approval_ttl_seconds: None,
                acceptance: None,
            };
            vec![std::sync::Arc::new(crate::access::agent::GrantFacts {
                name: "g".into(),
                owner: self.owner.as_str().into(),
                spec,
            })]
        }
    }

    #[test]
    fn an_agent_reads_the_output_its_users_grant_gives_it_and_no_other() {
        let (alice, agent) = (did(1), did(3));
        let workload = json!({ "kind": "Workload", "metadata": { "name": "w", "uid": "wuid",
            "annotations": { "univrs.io/signer": alice.as_str() } } });
        let replica = |ns: &str| {
            json!({ "kind": "Replica", "metadata": { "name": "w-0", "namespace": ns,
                "ownerReferences": [{ "kind": "Workload", "name": "w", "uid": "wuid" }] },
                "spec": { "workload": "w" } })
        };
        let who = Caller::identity(agent.clone(), false);
        let granted =
            Granted { owner: alice.clone(), agent: agent.clone(), mode: api::kinds::GrantMode::Autonomous };
        assert!(super::may_read_log(&who, &replica("default"), Some(&workload), &granted).is_ok());
        let err = super::may_read_log(&who, &replica("prod"), Some(&workload), &granted).unwrap_err();
        assert!(err.to_string().contains("no rule of AgentGrant \"g\" grants it"), "{err}");
        let forbidden = Granted { mode: api::kinds::GrantMode::Forbidden, ..granted };
        let err = super::may_read_log(&who, &replica("default"), Some(&workload), &forbidden).unwrap_err();
        assert!(err.to_string().contains("forbids it"), "{err}");
        // A grant by someone else than the workload's owner gives nothing.
        let strangers = Granted { owner: did(2), agent, mode: api::kinds::GrantMode::Autonomous };
        assert!(super::may_read_log(&who, &replica("default"), Some(&workload), &strangers).is_err());
    }

    fn did(seed: u8) -> Did {
        Did::from_key(&ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key())
    }

    #[test]
    fn only_the_owner_of_the_replicas_workload_and_members_read_its_output() {
        let alice = did(1);
        let workload = json!({ "kind": "Workload", "metadata": { "name": "w", "uid": "wuid",
            "annotations": { "univrs.io/signer": alice.as_str() } } });
        let replica = |uid: &str| {
            json!({ "kind": "Replica", "metadata": { "name": "w-0", "namespace": "default",
                "ownerReferences": [{ "kind": "Workload", "name": "w", "uid": uid }] },
                "spec": { "workload": "w" } })
        };
        let owner = Caller::identity(alice.clone(), false);
        assert!(may_read_log(&owner, &replica("wuid"), Some(&workload)).is_ok());
        assert!(may_read_log(&Caller::identity(did(9), true), &replica("wuid"), None).is_ok());
        let err =
            may_read_log(&Caller::identity(did(2), false), &replica("wuid"), Some(&workload)).unwrap_err();
        assert_eq!(err.code(), 403);
        assert!(err.to_string().contains("only the owner of workload w may"), "{err}");
        // A workload of the same name that is not the one the replica belongs to owns nothing.
        assert!(may_read_log(&owner, &replica("another-uid"), Some(&workload)).is_err());
        assert!(may_read_log(&owner, &replica("wuid"), None).is_err());
    }
}
