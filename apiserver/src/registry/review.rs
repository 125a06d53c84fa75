//! The stored state the answers of reviews need (`access::review`), read the way a write
//! reads it: after a read barrier, from this member's state.

use api::kinds::{NodeSpec, WorkloadSpec};
use api::{KindInfo, Scope};
use serde_json::Value;

use super::meta::prefix;
use super::{ApiError, ObjectRef, Registry, not_ready, unavailable};
use crate::access::Caller;
use crate::access::review::{self, Answer, Question, Stored};

/// At most this many Nodes are named as a caller's in a `SelfSubjectReview`.
pub const MAX_NODES_SHOWN: usize = 16;

impl Registry {
    fn read_now(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let key = ObjectRef::new(kind, namespace, name).key();
        match self.store.get(&key).map_err(unavailable)? {
            Some(stored) => serde_json::from_str(&stored.value).map(Some).map_err(unavailable),
            None => Ok(None),
        }
    }

    /// The answer to `who`'s question `q` (`SelfSubjectAccessReview`), from the same rules and
    /// the same stored state as the request it is about.
    pub async fn review(&self, who: &Caller, q: &Question<'_>) -> Result<Answer, ApiError> {
        self.store.read_barrier().await.map_err(not_ready)?;
        let one_place = q.kind.scope == Scope::Cluster || q.namespace.is_some();
        let object = match q.name {
            Some(name) if one_place => self.read_now(q.kind, q.namespace, name)?,
            _ => None,
        };
        let workload = match (&object, q.subresource) {
            (Some(replica), Some("log")) => {
                let name = replica.pointer("/spec/workload").and_then(Value::as_str).unwrap_or_default();
                let kind = api::kinds::info::<WorkloadSpec>();
                if name.is_empty() { None } else { self.read_now(kind, q.namespace, name)? }
            }
            _ => None,
        };
        // A member's question about every object: each one there now (members are trusted
        // with the cost; anyone else's answer never depends on them).
        let all: Vec<Value> =
            if who.member && q.name.is_none() && matches!(q.verb, "update" | "patch" | "delete" | "*") {
                let listing = self.store.list(&prefix(q.kind, q.namespace)).map_err(unavailable)?;
                listing.0.into_iter().filter_map(|(_, s)| serde_json::from_str(&s.value).ok()).collect()
            } else {
                Vec::new()
            };
        let stored = Stored { object: object.as_ref(), workload: workload.as_ref(), all: &all };
        Ok(review::answer(who, q, &stored, &self.lookup(who).await))
    }

    /// What `who` may do to every object of each kind in `namespace` (`SelfSubjectRulesReview`).
    pub async fn rules_review(
        &self,
        who: &Caller,
        namespace: Option<&str>,
    ) -> Result<Vec<review::ResourceRule>, ApiError> {
        self.store.read_barrier().await.map_err(not_ready)?;
        Ok(review::rules(who, namespace, &self.lookup(who).await))
    }

    /// The names of the Nodes whose key `did` is (at most [`MAX_NODES_SHOWN`]), and whether
    /// there are more.
    pub async fn nodes_of(&self, did: &str) -> Result<(Vec<String>, bool), ApiError> {
        self.store.read_barrier().await.map_err(not_ready)?;
        let kind = api::kinds::info::<NodeSpec>();
        let listing = self.store.list(&prefix(kind, None)).map_err(unavailable)?;
        let mut names = Vec::new();
        let mut more = false;
        for (_, stored) in listing.0 {
            let Ok(node) = serde_json::from_str::<Value>(&stored.value) else { continue };
            if node.pointer("/spec/nodeKey").and_then(Value::as_str) != Some(did) {
                continue;
            }
            let Some(name) = node.pointer("/metadata/name").and_then(Value::as_str) else { continue };
            if names.len() == MAX_NODES_SHOWN {
                more = true;
                break;
            }
            names.push(name.to_owned());
        }
        Ok((names, more))
    }
}
