//! The garbage collector: deletes dependents whose owners are gone, and carries out foreground
//! and orphan deletion (`plan`).
//!
//! Unlike the other controllers it is not one reconcile per object: which object to collect
//! depends on others of any kind, so it watches every kind into caches and, after each burst of
//! changes (and every `resync`), plans over all of them at once — O(objects), no I/O — then
//! does what the plan says through the API. Owners missing from the caches are confirmed gone
//! with a live GET first, so a cache late to see a new owner never costs its dependents.
//!
//! References count only between objects of one owner (see `plan`): so that the plan knows who
//! signed an owner already gone, the collector remembers the author of every object it has
//! seen (from every watch event, so an owner that went while a watch was being relisted is
//! known too), for as long as the object is there or something refers to it.

pub mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt, future, stream};
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;
use tokio::time::Instant;

use self::plan::{Action, Author, Key, Obj, Owner};
use crate::Error;
use crate::runtime::Shared;
use client::resource::{is_conflict, is_not_found};

/// The collector's settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// A full pass this often even without changes.
    pub resync: Duration,
    /// Changes are gathered this long before a pass.
    pub debounce: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self { resync: Duration::from_secs(30), debounce: Duration::from_millis(200) }
    }
}

fn resource(kind: &api::KindInfo) -> ApiResource {
    ApiResource {
        group: kind.group.to_owned(),
        version: kind.version.to_owned(),
        api_version: kind.api_version.to_owned(),
        kind: kind.kind.to_owned(),
        plural: kind.plural.to_owned(),
    }
}

/// The author of every object seen, by uid.
type Authors = Arc<Mutex<HashMap<String, Author>>>;

fn namespaced(kind: &str) -> bool {
    api::kinds::by_kind(kind).is_some_and(|k| k.scope == api::Scope::Namespaced)
}

fn api_for(client: &Client, kind: &str, namespace: Option<&str>) -> Option<Api<DynamicObject>> {
    let info = api::kinds::by_kind(kind)?;
    let ar = resource(info);
    Some(match namespace {
        Some(ns) if info.scope == api::Scope::Namespaced => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    })
}

/// Runs the collector until shutdown (call through `runtime::run_elected`).
pub async fn run(shared: Shared, config: Config) {
    let client = shared.client.clone();
    let mut stores: Vec<(&'static str, Store<DynamicObject>)> = Vec::new();
    let mut streams = Vec::new();
    let authors: Authors = Arc::default();
    for kind in &api::kinds::KINDS {
        let ar = resource(kind);
        let writer = Writer::new(ar.clone());
        stores.push((kind.kind, writer.as_reader()));
        // Only changes that can matter start a pass: not, say, every renewal of a Lease.
        let mut seen = Relevant::default();
        let (authors, kind_name) = (authors.clone(), kind.kind);
        let changes =
            watcher(Api::<DynamicObject>::all_with(client.clone(), &ar), watcher::Config::default())
                .default_backoff()
                .reflect(writer)
                .inspect(move |event| {
                    if let Ok(
                        watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o),
                    ) = event
                        && let Some(uid) = &o.metadata.uid
                    {
                        let mut authors = authors.lock().expect("authors lock");
                        if !authors.contains_key(uid) {
                            // A signer never changes (admission refuses it): the first is the one.
                            authors.insert(uid.clone(), author(kind_name, o));
                        }
                    }
                })
                .filter_map(move |event| future::ready(seen.matters(&event).then_some(())));
        streams.push(changes.boxed());
    }
    let mut changes = stream::select_all(streams);
    let mut next_resync = Instant::now() + config.resync;
    let mut dirty_since: Option<Instant> = Some(Instant::now());
    loop {
        let deadline = match dirty_since {
            Some(t) => t + config.debounce,
            None => next_resync,
        };
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            change = changes.next() => match change {
                Some(()) => { dirty_since.get_or_insert_with(Instant::now); }
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => {
                let since = dirty_since.take().unwrap_or_else(Instant::now);
                next_resync = Instant::now() + config.resync;
                if stores.iter().all(|(_, s)| s.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())) {
                    shared.metrics.queued_for("gc", since.elapsed());
                    let start = Instant::now();
                    let result = pass(&client, &stores, &authors, &shared).await;
                    shared.metrics.reconciled("gc", start.elapsed(), result.as_ref().err().map(Error::label));
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "garbage collection pass failed");
                        dirty_since = Some(Instant::now() + Duration::from_secs(1));
                    }
                } else {
                    dirty_since = Some(Instant::now());
                }
            }
        }
    }
}

/// The objects of one kind that had owners, finalizers or a deletion timestamp when last seen.
#[derive(Default)]
struct Relevant(std::collections::HashSet<String>);

impl Relevant {
    /// Whether a watch event can change what the collector does: an object that has (or had:
    /// its owner references were just removed) owners, finalizers or a deletion timestamp
    /// changed, an object went, or a (re)list ended.
    fn matters(&mut self, event: &Result<watcher::Event<DynamicObject>, watcher::Error>) -> bool {
        let has = |o: &DynamicObject| {
            let m = &o.metadata;
            m.owner_references.as_ref().is_some_and(|v| !v.is_empty())
                || m.finalizers.as_ref().is_some_and(|v| !v.is_empty())
                || m.deletion_timestamp.is_some()
        };
        let uid = |o: &DynamicObject| o.metadata.uid.clone().unwrap_or_default();
        match event {
            Ok(watcher::Event::Apply(o)) => {
                let had = if has(o) { !self.0.insert(uid(o)) } else { self.0.remove(&uid(o)) };
                has(o) || had
            }
            Ok(watcher::Event::InitApply(o)) => {
                if has(o) {
                    self.0.insert(uid(o));
                }
                false
            }
            Ok(watcher::Event::Init) => {
                self.0.clear();
                false
            }
            Ok(watcher::Event::Delete(o)) => {
                self.0.remove(&uid(o));
                true
            }
            Ok(watcher::Event::InitDone) | Err(_) => true,
        }
    }
}

fn author(kind: &str, o: &DynamicObject) -> Author {
    let signed = api::kinds::by_kind(kind).is_some_and(|k| k.signed);
    let signer =
        o.metadata.annotations.as_ref().and_then(|a| a.get(api::signing::SIGNER)).map(String::as_str);
    Author::of(kind, signed, signer)
}

fn view(kind: &str, o: &DynamicObject) -> Obj {
    let m = &o.metadata;
    Obj {
        author: author(kind, o),
        key: Key {
            kind: kind.to_owned(),
            namespace: if namespaced(kind) {
                Some(m.namespace.clone().unwrap_or_else(|| "default".into()))
            } else {
                None
            },
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
        },
        version: m.resource_version.clone().unwrap_or_default(),
        owners: m
            .owner_references
            .iter()
            .flatten()
            .map(|r| Owner {
                kind: r.kind.clone(),
                name: r.name.clone(),
                uid: r.uid.clone(),
                block: r.block_owner_deletion == Some(true),
            })
            .collect(),
        deleting: m.deletion_timestamp.is_some(),
        finalizers: m.finalizers.clone().unwrap_or_default(),
    }
}

/// One pass: plan over the caches, then act.
async fn pass(
    client: &Client,
    stores: &[(&'static str, Store<DynamicObject>)],
    authors: &Authors,
    shared: &Shared,
) -> Result<(), Error> {
    let mut objects = Vec::new();
    for (kind, store) in stores {
        objects.extend(store.state().iter().map(|o| view(kind, o)));
    }
    let actions = {
        let mut authors = authors.lock().expect("authors lock");
        // Kept while the object is there or something refers to it (the watch streams are not
        // polled during a pass, so nothing is recorded meanwhile).
        let keep: HashSet<&str> = objects
            .iter()
            .flat_map(|o| std::iter::once(o.key.uid.as_str()).chain(o.owners.iter().map(|r| r.uid.as_str())))
            .collect();
        authors.retain(|uid, _| keep.contains(uid.as_str()));
        plan::plan(&objects, namespaced, &authors)
    };
    shared.metrics.set_queue_depth("gc", actions.len());
    for action in actions {
        act(client, stores, action).await?;
    }
    shared.metrics.set_queue_depth("gc", 0);
    Ok(())
}

/// Whether the apiserver says this owner no longer exists (or is another object now).
async fn confirmed_gone(client: &Client, owner: &Key) -> Result<bool, Error> {
    let Some(api) = api_for(client, &owner.kind, owner.namespace.as_deref()) else {
        return Ok(true); // a kind this server does not serve cannot own anything
    };
    match api.get(&owner.name).await {
        Ok(o) => Ok(o.metadata.uid.as_deref() != Some(owner.uid.as_str())),
        Err(e) if is_not_found(&e) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

async fn all_gone(client: &Client, owners: &[(Key, String)]) -> Result<bool, Error> {
    for (owner, _) in owners {
        if !confirmed_gone(client, owner).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn cached(
    stores: &[(&'static str, Store<DynamicObject>)],
    key: &Key,
) -> Option<std::sync::Arc<DynamicObject>> {
    let (_, store) = stores.iter().find(|(k, _)| *k == key.kind)?;
    store.state().into_iter().find(|o| {
        o.metadata.uid.as_deref() == Some(key.uid.as_str())
            && o.metadata.name.as_deref() == Some(key.name.as_str())
    })
}

async fn act(
    client: &Client,
    stores: &[(&'static str, Store<DynamicObject>)],
    action: Action,
) -> Result<(), Error> {
    let ignore = |r: Result<(), kube::Error>| match r {
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        other => other.map_err(Error::from),
    };
    match action {
        Action::Delete { target, version, confirm_gone } => {
            if !all_gone(client, &confirm_gone).await? {
                return Ok(());
            }
            let Some(api) = api_for(client, &target.kind, target.namespace.as_deref()) else { return Ok(()) };
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(target.uid.clone()),
                    resource_version: Some(version).filter(|v| !v.is_empty()),
                }),
                ..DeleteParams::background()
            };
            tracing::info!(kind = target.kind, name = target.name, "collecting");
            ignore(api.delete(&target.name, &dp).await.map(drop))
        }
        Action::RemoveOwners { target, uids, confirm_gone } => {
            if !all_gone(client, &confirm_gone).await? {
                return Ok(());
            }
            let Some(obj) = cached(stores, &target) else { return Ok(()) };
            let Some(api) = api_for(client, &target.kind, target.namespace.as_deref()) else { return Ok(()) };
            let kept: Vec<_> =
                obj.metadata.owner_references.iter().flatten().filter(|r| !uids.contains(&r.uid)).collect();
            let patch = json!({ "metadata": {
                "resourceVersion": obj.metadata.resource_version, "ownerReferences": kept,
            }});
            ignore(api.patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop))
        }
        Action::RemoveFinalizer { target, finalizer } => {
            let Some(obj) = cached(stores, &target) else { return Ok(()) };
            let Some(api) = api_for(client, &target.kind, target.namespace.as_deref()) else { return Ok(()) };
            let kept: Vec<&String> =
                obj.metadata.finalizers.iter().flatten().filter(|f| *f != finalizer).collect();
            let patch = json!({ "metadata": {
                "resourceVersion": obj.metadata.resource_version, "finalizers": kept,
            }});
            ignore(api.patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(uid: &str, owned: bool) -> DynamicObject {
        let mut v = serde_json::json!({ "metadata": { "name": "r", "uid": uid } });
        if owned {
            v["metadata"]["ownerReferences"] = serde_json::json!([{ "apiVersion": "univrs.io/v1", "kind": "Workload", "name": "w", "uid": "w1" }]);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn removing_the_last_owner_reference_starts_a_pass() {
        // Caught by the orphan end-to-end test: the pass that releases the owner's `orphan`
        // finalizer must follow the change that removed the dependent's reference.
        let mut seen = Relevant::default();
        assert!(seen.matters(&Ok(watcher::Event::Apply(obj("r1", true)))));
        assert!(seen.matters(&Ok(watcher::Event::Apply(obj("r1", false)))));
        // An object with no owners that never had any (a Lease renewal, say) does not.
        assert!(!seen.matters(&Ok(watcher::Event::Apply(obj("r1", false)))));
        assert!(!seen.matters(&Ok(watcher::Event::Apply(obj("l1", false)))));
        assert!(seen.matters(&Ok(watcher::Event::Delete(obj("l1", false)))));
    }
}
