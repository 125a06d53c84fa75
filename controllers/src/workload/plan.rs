//! The workload controller's decision, as a pure function: from the replicas a Workload owns to
//! the replicas to create and delete. A rollout replaces replicas of an old template with new
//! ones, at most `surge` above the desired count, and removes a ready old replica only when as
//! many as desired are ready without it (no unavailability beyond what already is).

use std::collections::BTreeSet;

use api::kinds::ContainerSpec;
use sha2::{Digest, Sha256};

/// Label on every replica: its workload.
pub const WORKLOAD_LABEL: &str = "univrs.io/workload";
/// Label on every replica: the hash of the template it was made from.
pub const TEMPLATE_LABEL: &str = "univrs.io/template-hash";

/// A short, stable hash of what a replica runs.
pub fn template_hash(container: &ContainerSpec) -> String {
    // Serializing a typed struct writes its fields in declaration order: stable.
    let bytes = serde_json::to_vec(container).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// The name of replica `index` of template `hash` of workload `workload`. Names are
/// deterministic so that a create retried (or repeated from a stale cache) can never make a
/// second replica: the apiserver answers 409 instead.
pub fn replica_name(workload: &str, hash: &str, index: u32) -> String {
    // Keep within the 253 characters of a DNS subdomain.
    let mut prefix = &workload[..workload.len().min(230)];
    prefix = prefix.trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}-{index}")
}

/// One replica the workload owns, as the plan sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Have {
    /// Replica name.
    pub name: String,
    /// Its template hash.
    pub hash: String,
    /// Phase Running.
    pub ready: bool,
    /// Bound to a node.
    pub bound: bool,
    /// Being deleted already.
    pub deleting: bool,
}

/// What to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Names of replicas to create (of the current template).
    pub create: Vec<String>,
    /// Names of replicas to delete.
    pub delete: Vec<String>,
}

/// The plan that moves `have` towards `desired` replicas of template `hash`.
pub fn plan(workload: &str, hash: &str, desired: u32, surge: u32, have: &[Have]) -> Plan {
    let desired = desired as usize;
    let active: Vec<&Have> = have.iter().filter(|h| !h.deleting).collect();
    let (current, old): (Vec<&Have>, Vec<&Have>) = active.iter().partition(|h| h.hash == hash);
    let mut out = Plan::default();

    // Too many of the current template: delete the least useful first (unbound, then not
    // ready, then the newest name).
    if current.len() > desired {
        let mut extra = current.clone();
        extra.sort_by(|a, b| {
            (a.bound, a.ready).cmp(&(b.bound, b.ready)).then_with(|| natural(&b.name).cmp(&natural(&a.name)))
        });
        out.delete.extend(extra.iter().take(current.len() - desired).map(|h| h.name.clone()));
    }

    // Old replicas: unready ones give nothing, so they go; ready ones go while enough others
    // are ready.
    let ready_current = current.iter().filter(|h| h.ready).count().min(desired);
    let mut ready_old: Vec<&&Have> = old.iter().filter(|h| h.ready).collect();
    ready_old.sort_by_key(|h| natural(&h.name));
    out.delete.extend(old.iter().filter(|h| !h.ready).map(|h| h.name.clone()));
    let removable = (ready_current + ready_old.len()).saturating_sub(desired).min(ready_old.len());
    out.delete.extend(ready_old.iter().take(removable).map(|h| h.name.clone()));

    // New replicas of the current template, within the surge.
    let want = desired.saturating_sub(current.len());
    let room = (desired + surge as usize).saturating_sub(active.len());
    let taken: BTreeSet<&str> = have.iter().map(|h| h.name.as_str()).collect();
    let mut index = 0u32;
    while out.create.len() < want.min(room) {
        let name = replica_name(workload, hash, index);
        if !taken.contains(name.as_str()) {
            out.create.push(name);
        }
        index += 1;
    }
    out
}

/// Sorts `web-ab12-10` after `web-ab12-9`.
fn natural(name: &str) -> (usize, &str) {
    (name.len(), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have(name: &str, hash: &str, ready: bool) -> Have {
        Have { name: name.into(), hash: hash.into(), ready, bound: ready, deleting: false }
    }

    /// Applies a plan as the cluster would: creates appear unready, deletes vanish.
    fn apply(have: &mut Vec<Have>, p: &Plan, hash: &str) {
        have.retain(|h| !p.delete.contains(&h.name));
        have.extend(p.create.iter().map(|n| have_new(n, hash)));
    }

    fn have_new(name: &str, hash: &str) -> Have {
        Have { name: name.into(), hash: hash.into(), ready: false, bound: false, deleting: false }
    }

    #[test]
    fn creates_missing_replicas_with_deterministic_names() {
        let p = plan("web", "h1", 3, 1, &[have("web-h1-1", "h1", true)]);
        assert_eq!(p.create, ["web-h1-0", "web-h1-2"]);
        assert!(p.delete.is_empty());
    }

    #[test]
    fn a_name_held_by_a_replica_being_deleted_is_not_reused() {
        let mut gone = have("web-h1-0", "h1", false);
        gone.deleting = true;
        let p = plan("web", "h1", 1, 1, &[gone]);
        assert_eq!(p.create, ["web-h1-1"]);
    }

    #[test]
    fn scaling_down_removes_unbound_then_unready_then_newest() {
        let mut h =
            vec![have("web-h1-0", "h1", true), have("web-h1-1", "h1", true), have("web-h1-2", "h1", true)];
        h.push(Have { bound: true, ..have_new("web-h1-3", "h1") });
        h.push(have_new("web-h1-4", "h1"));
        let p = plan("web", "h1", 2, 1, &h);
        assert_eq!(p.delete, ["web-h1-4", "web-h1-3", "web-h1-2"]);
        assert!(p.create.is_empty());
        assert_eq!(plan("web", "h1", 0, 1, &h).delete.len(), 5);
    }

    #[test]
    fn a_rollout_never_exceeds_the_surge_nor_drops_below_desired_ready() {
        let desired = 3;
        let surge = 1;
        let mut h: Vec<Have> = (0..3).map(|i| have(&format!("web-h1-{i}"), "h1", true)).collect();
        for _ in 0..20 {
            let p = plan("web", "h2", desired, surge, &h);
            let ready_before = h.iter().filter(|x| x.ready).count();
            apply(&mut h, &p, "h2");
            assert!(h.len() <= (desired + surge) as usize, "{h:?}");
            assert!(h.iter().filter(|x| x.ready).count() >= ready_before.min(desired as usize), "{h:?}");
            // The new replicas start.
            for x in &mut h {
                x.ready = true;
                x.bound = true;
            }
        }
        assert_eq!(h.len(), 3);
        assert!(h.iter().all(|x| x.hash == "h2"));
    }

    #[test]
    fn unready_old_replicas_are_replaced_at_once() {
        let h: Vec<Have> = (0..3).map(|i| have_new(&format!("web-h1-{i}"), "h1")).collect();
        let p = plan("web", "h2", 3, 1, &h);
        assert_eq!(p.delete.len(), 3);
        assert_eq!(p.create, ["web-h2-0"]);
    }

    #[test]
    fn steady_state_does_nothing() {
        let h: Vec<Have> = (0..3).map(|i| have(&format!("web-h1-{i}"), "h1", true)).collect();
        assert_eq!(plan("web", "h1", 3, 1, &h), Plan::default());
    }

    #[test]
    fn template_hash_changes_with_what_runs() {
        let a = ContainerSpec { image: Some("a".into()), ..Default::default() };
        let b = ContainerSpec { image: Some("b".into()), ..Default::default() };
        assert_eq!(template_hash(&a), template_hash(&a.clone()));
        assert_ne!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&a).len(), 8);
        assert!(replica_name(&"x".repeat(253), "abcd1234", 10000).len() <= 253);
    }
}
