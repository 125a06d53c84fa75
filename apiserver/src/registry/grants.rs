//! The AgentGrants by the agent they name, followed from the change history (as the quota
//! ledger is), so that finding the grants of a request's caller costs a map lookup, not a scan
//! of every grant, however many grants strangers sign.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use api::kinds::AgentGrantSpec;
use api::object::KindSpec as _;
use serde_json::Value;

use super::follow::Index;
use super::{ApiError, Registry};
use crate::access::Caller;
use crate::access::agent::GrantFacts;
use crate::raft::history::Change;

/// Where the grants are stored.
static GRANTS: LazyLock<String> = LazyLock::new(|| format!("/registry/{}/", AgentGrantSpec::PLURAL));

/// The grants by agent, as of revision `at`.
#[derive(Debug, Default)]
pub(crate) struct GrantIndex {
    at: Option<u64>,
    /// key → (agent, facts).
    by_key: HashMap<String, (String, Arc<GrantFacts>)>,
    /// agent → key → facts.
    by_agent: HashMap<String, BTreeMap<String, Arc<GrantFacts>>>,
}

fn facts(value: &str) -> Option<GrantFacts> {
    let obj: Value = serde_json::from_str(value).ok()?;
    let spec: AgentGrantSpec = serde_json::from_value(obj.get("spec")?.clone()).ok()?;
    let name = obj.pointer("/metadata/name")?.as_str()?.to_owned();
    let owner = crate::access::signer(&obj)?.to_owned();
    // Only a grant its agent accepted makes its key an agent: nobody makes someone else's key
    // one (and so audited, and its requests costly) by naming it.
    spec.accepted_by_agent(&owner, &name).then_some(GrantFacts { name, owner, spec })
}

impl GrantIndex {
    fn of(&self, agent: &str) -> Vec<Arc<GrantFacts>> {
        self.by_agent.get(agent).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Takes out what `key` held.
    fn remove(&mut self, key: &str) {
        if let Some((agent, _)) = self.by_key.remove(key)
            && let Some(of_agent) = self.by_agent.get_mut(&agent)
        {
            of_agent.remove(key);
            if of_agent.is_empty() {
                self.by_agent.remove(&agent);
            }
        }
    }
}

impl Index for GrantIndex {
    fn prefix() -> String {
        GRANTS.clone()
    }

    fn at(&self) -> Option<u64> {
        self.at
    }

    fn insert(&mut self, key: &str, value: &str) {
        if let Some(f) = facts(value) {
            let agent = f.spec.agent.as_str().to_owned();
            let f = Arc::new(f);
            self.by_agent.entry(agent.clone()).or_default().insert(key.to_owned(), f.clone());
            self.by_key.insert(key.to_owned(), (agent, f));
        }
    }

    fn change(&mut self, _revision: u64, change: &Change) {
        if !change.key.starts_with(GRANTS.as_str()) {
            return;
        }
        self.remove(&change.key);
        if let Some(new) = &change.new {
            self.insert(&change.key, &new.value);
        }
    }

    fn advance(&mut self, revision: u64) {
        self.at = Some(self.at.map_or(revision, |at| at.max(revision)));
    }
}

impl Registry {
    /// Every stored grant naming `agent`, as of the last applied revision, followed here
    /// (see [`super::follow::Followed::read_now`]: callers on an async worker take the
    /// access rules' facts from [`Registry::lookup`], which follows first).
    pub(crate) fn grants_of(&self, agent: &str) -> Result<Vec<Arc<GrantFacts>>, ApiError> {
        self.grants.read_now(&*self.store, |index| index.of(agent))
    }

    /// [`Registry::grants_of`], caught up off the async workers if far behind.
    pub(crate) async fn grants_now(&self, agent: &str) -> Result<Vec<Arc<GrantFacts>>, ApiError> {
        let agent = agent.to_owned();
        self.grants.read(&self.store, move |index| index.of(&agent)).await
    }

    /// [`Registry::follow_grants`], with its error.
    pub(crate) async fn follow_grants_for(&self, who: &Caller) -> Result<(), ApiError> {
        if who.did.is_some() && !who.member {
            self.grants.read(&self.store, |_| ()).await?;
        }
        Ok(())
    }
}
