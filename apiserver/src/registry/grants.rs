//! The AgentGrants by the agent they name, followed from the change history (as the quota
//! ledger is), so that finding the grants of a request's caller costs a map lookup, not a scan
//! of every grant, however many grants strangers sign.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use api::kinds::AgentGrantSpec;
use api::object::KindSpec as _;
use serde_json::Value;

use super::{ApiError, Registry, unavailable};
use crate::access::agent::GrantFacts;

/// Where the grants are stored.
fn grants_prefix() -> String {
    format!("/registry/{}/", AgentGrantSpec::PLURAL)
}

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
    fn change(&mut self, key: &str, new: Option<&str>) {
        if !key.starts_with(&grants_prefix()) {
            return;
        }
        if let Some((agent, _)) = self.by_key.remove(key)
            && let Some(of_agent) = self.by_agent.get_mut(&agent)
        {
            of_agent.remove(key);
            if of_agent.is_empty() {
                self.by_agent.remove(&agent);
            }
        }
        if let Some(f) = new.and_then(facts) {
            let agent = f.spec.agent.as_str().to_owned();
            let f = Arc::new(f);
            self.by_agent.entry(agent.clone()).or_default().insert(key.to_owned(), f.clone());
            self.by_key.insert(key.to_owned(), (agent, f));
        }
    }

    fn of(&self, agent: &str) -> Vec<Arc<GrantFacts>> {
        self.by_agent.get(agent).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }
}

impl GrantIndex {
    /// The revision the index is at (`None`: not built yet).
    pub(super) fn at(&self) -> Option<u64> {
        self.at
    }
}

impl Registry {
    /// Every stored grant naming `agent`, as of the last applied revision.
    pub(crate) fn grants_of(&self, agent: &str) -> Result<Vec<Arc<GrantFacts>>, ApiError> {
        let state = &*self.store;
        let mut index = self.grants.lock().expect("grant index lock");
        loop {
            let Some(at) = index.at else {
                let (all, revision) = state.list(&grants_prefix()).map_err(unavailable)?;
                *index = GrantIndex { at: Some(revision), ..Default::default() };
                for (k, v) in &all {
                    index.change(k, Some(&v.value));
                }
                continue;
            };
            let applied = *state.subscribe().borrow();
            match state.changes_after(at, 4096).map_err(unavailable)? {
                // Fell behind the history: read them all again.
                Err(_) => *index = GrantIndex::default(),
                Ok(batch) => {
                    for (_, c) in &batch.changes {
                        index.change(&c.key, c.new.as_ref().map(|s| s.value.as_str()));
                    }
                    index.at = Some(batch.upto);
                    if batch.upto >= applied {
                        return Ok(index.of(agent));
                    }
                }
            }
        }
    }
}
