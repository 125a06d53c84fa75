//! The workload controller's decision, as a pure function: from the replicas a Workload owns to
//! the replicas to create and delete. A rollout replaces replicas of an old template with new
//! ones, at most `surge` above the desired count, and removes a ready old replica only when as
//! many as desired are ready without it (no unavailability beyond what already is). A replica
//! carries its workload's labels (as a Pod carries its template's), so a selector that finds
//! a workload finds its replicas; when the workload's labels change, its replicas follow.

use std::collections::{BTreeMap, BTreeSet};

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

/// What one replica of a template says about its image: the pin it was made with, and the
/// image its node pulled (`status.imageID`).
#[derive(Clone, Copy, Debug)]
pub struct Pinned<'a> {
    /// `spec.pinnedImage`.
    pub spec: Option<&'a str>,
    /// `status.imageID`.
    pub status: Option<&'a str>,
}

/// The image new replicas of a template are pinned to: the pin the template's replicas were
/// made with, else the repository digest one of them pulled (the first, in the order given).
/// Its node wrote that (a node the owner's policy admits); the agents honour a pin only in the
/// image's own repository, so a node can at most choose another image of that repository.
pub fn image_pin<'a>(replicas: impl Iterator<Item = Pinned<'a>> + Clone) -> Option<String> {
    let valid = |s: &&str| api::kinds::is_repository_digest(s);
    replicas
        .clone()
        .find_map(|r| r.spec.filter(valid))
        .or_else(|| replicas.clone().find_map(|r| r.status.filter(valid)))
        .map(str::to_owned)
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

/// Labels, as in `metadata.labels`.
pub type Labels = BTreeMap<String, String>;

/// The labels of a replica of `workload` (whose own labels are `workload_labels`) made from
/// template `hash`: the workload's labels, then [`WORKLOAD_LABEL`] and [`TEMPLATE_LABEL`], which
/// win over a workload label of the same key (the controller finds its replicas by them).
pub fn replica_labels(workload_labels: &Labels, workload: &str, hash: &str) -> Labels {
    let mut labels = workload_labels.clone();
    labels.insert(WORKLOAD_LABEL.to_owned(), workload.to_owned());
    labels.insert(TEMPLATE_LABEL.to_owned(), hash.to_owned());
    labels
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
    /// Its labels.
    pub labels: Labels,
    /// Not started: its node could not open the workload's sealed values. Kept while its
    /// template is current, as the record the scheduler avoids that node by; it counts for
    /// nothing, so another replica is made in its place.
    pub unopened: bool,
    /// To be replaced whatever its template: its node no longer qualifies (its
    /// `univrs.io/disruption-target` annotation). Replaced as an old replica in a rollout is: a new one
    /// first, within the surge; removed once enough others are ready.
    pub disrupted: bool,
}

/// What to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Names of replicas to create (of the current template).
    pub create: Vec<String>,
    /// Names of replicas to delete.
    pub delete: Vec<String>,
    /// Replicas (kept) whose labels are not their workload's, and the labels they should have.
    pub relabel: Vec<(String, Labels)>,
}

/// What the plan is made for: a workload, its labels, its current template and how many
/// replicas of it are wanted.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The workload's name.
    pub workload: &'a str,
    /// The workload's labels.
    pub labels: &'a Labels,
    /// The hash of its current template.
    pub hash: &'a str,
    /// `spec.replicas`.
    pub desired: u32,
    /// Replicas a rollout may create above `desired`.
    pub surge: u32,
}

/// The plan that moves `have` towards `desired` replicas of template `hash`.
pub fn plan(target: Target<'_>, have: &[Have]) -> Plan {
    let Target { workload, labels, hash, desired, surge } = target;
    let desired = desired as usize;
    // A replica its node could not open the secrets of is a record while its template is
    // current, and goes with its template.
    let (unopened, active): (Vec<&Have>, Vec<&Have>) =
        have.iter().filter(|h| !h.deleting).partition(|h| h.unopened);
    let (current, old): (Vec<&Have>, Vec<&Have>) =
        active.iter().partition(|h| h.hash == hash && !h.disrupted);
    let mut out = Plan::default();
    out.delete.extend(unopened.iter().filter(|h| h.hash != hash).map(|h| h.name.clone()));

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

    // The replicas that stay carry the workload's labels as they are now.
    for h in &active {
        if out.delete.contains(&h.name) {
            continue;
        }
        let want = replica_labels(labels, workload, &h.hash);
        if h.labels != want {
            out.relabel.push((h.name.clone(), want));
        }
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

    /// A replica of workload `web` (which has no labels of its own) made from template `hash`.
    fn have(name: &str, hash: &str, ready: bool) -> Have {
        let labels = replica_labels(&Labels::new(), "web", hash);
        Have {
            name: name.into(),
            hash: hash.into(),
            ready,
            bound: ready,
            deleting: false,
            labels,
            unopened: false,
            disrupted: false,
        }
    }

    /// The plan for workload `web`, without labels of its own.
    fn plan(_workload: &str, hash: &str, desired: u32, surge: u32, have: &[Have]) -> Plan {
        let labels = Labels::new();
        super::plan(Target { workload: "web", labels: &labels, hash, desired, surge }, have)
    }

    /// Applies a plan as the cluster would: creates appear unready, deletes vanish.
    fn apply(have: &mut Vec<Have>, p: &Plan, hash: &str) {
        have.retain(|h| !p.delete.contains(&h.name));
        have.extend(p.create.iter().map(|n| have_new(n, hash)));
    }

    fn have_new(name: &str, hash: &str) -> Have {
        Have { ready: false, bound: false, ..have(name, hash, false) }
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
    fn a_replica_whose_node_no_longer_qualifies_is_replaced_new_one_first() {
        let moving = Have { disrupted: true, ..have("web-h1-0", "h1", true) };
        // A replacement first (within the surge); the running one stays.
        let p = plan("web", "h1", 1, 1, std::slice::from_ref(&moving));
        assert_eq!((p.create.clone(), p.delete.clone()), (vec!["web-h1-1".to_owned()], vec![]));
        // Not placed yet (nothing qualifies): the old one keeps running, nothing more is made.
        let waiting = [moving.clone(), Have { ready: false, bound: false, ..have("web-h1-1", "h1", false) }];
        assert_eq!(plan("web", "h1", 1, 1, &waiting), Plan::default());
        // The replacement ready: the old one goes.
        let both = [moving, have("web-h1-1", "h1", true)];
        let p = plan("web", "h1", 1, 1, &both);
        assert_eq!((p.create, p.delete), (vec![], vec!["web-h1-0".to_owned()]));
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
    fn replicas_carry_their_workloads_labels_and_follow_a_change() {
        let labels =
            Labels::from([("app".to_owned(), "hello".to_owned()), ("tier".to_owned(), "web".to_owned())]);
        let target = Target { workload: "web", labels: &labels, hash: "h1", desired: 2, surge: 1 };
        let made = replica_labels(&labels, "web", "h1");
        assert_eq!(made["app"], "hello");
        assert_eq!(made[WORKLOAD_LABEL], "web");
        assert_eq!(made[TEMPLATE_LABEL], "h1");
        // Replicas made before the workload had these labels are relabeled, each keeping the
        // hash of its own template; one on its way out is left alone.
        let old = have("web-h1-0", "h1", true);
        let mut going = have("web-h0-0", "h0", false);
        going.deleting = true;
        let p = super::plan(target, &[old, have("web-h1-1", "h1", true), going]);
        assert!(p.create.is_empty() && p.delete.is_empty(), "{p:?}");
        let names: Vec<&str> = p.relabel.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["web-h1-0", "web-h1-1"]);
        assert!(p.relabel.iter().all(|(_, l)| *l == made));
        // Once they carry them, nothing is left to do.
        let done: Vec<Have> = (0..2)
            .map(|i| Have { labels: made.clone(), ..have(&format!("web-h1-{i}"), "h1", true) })
            .collect();
        assert_eq!(super::plan(target, &done), Plan::default());
        // A workload label cannot take over the controller's own.
        let hostile = Labels::from([(WORKLOAD_LABEL.to_owned(), "other".to_owned())]);
        assert_eq!(replica_labels(&hostile, "web", "h1")[WORKLOAD_LABEL], "web");
    }

    #[test]
    fn a_replica_whose_node_could_not_open_its_secrets_is_replaced_and_kept_until_its_template_goes() {
        let unopened = Have { unopened: true, bound: true, ..have_new("web-h1-0", "h1") };
        let p = plan("web", "h1", 1, 1, std::slice::from_ref(&unopened));
        assert_eq!(p.create, ["web-h1-1"], "a new name: the record keeps its own");
        assert!(p.delete.is_empty() && p.relabel.is_empty(), "{p:?}");
        // With its replacement running, nothing more is made.
        let both = [unopened.clone(), have("web-h1-1", "h1", true)];
        assert_eq!(plan("web", "h1", 1, 1, &both), Plan::default());
        // Sealed again (a new template): the record goes with its template.
        let p = plan("web", "h2", 1, 1, &both);
        assert!(p.delete.contains(&"web-h1-0".to_owned()), "{p:?}");
    }

    #[test]
    fn new_replicas_are_pinned_to_the_template_s_first_pin_or_a_replica_s_digest() {
        fn p<'a>(spec: Option<&'a str>, status: Option<&'a str>) -> Pinned<'a> {
            Pinned { spec, status }
        }
        let d = |c: char| format!("reg/web@sha256:{}", c.to_string().repeat(64));
        let (a, b) = (d('a'), d('b'));
        let (a, b) = (a.as_str(), b.as_str());
        // Nothing pulled yet: no pin.
        assert_eq!(image_pin([p(None, None), p(None, None)].into_iter()), None);
        // A replica's digest; an imported image's bare ID or garbage never.
        assert_eq!(
            image_pin([p(None, Some("sha256:abc")), p(None, Some(b))].into_iter()),
            Some(b.to_owned())
        );
        assert_eq!(image_pin([p(None, Some("reg/web@sha256:short"))].into_iter()), None);
        // A pin the template's replicas were made with wins over what any node reports.
        assert_eq!(image_pin([p(None, Some(b)), p(Some(a), Some(a))].into_iter()), Some(a.to_owned()));
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
