//! Watch: the changes to the objects of one kind, as Kubernetes watch events, from any
//! revision still in the state machine's history.
//!
//! A watch reads the history itself rather than a per-watcher queue: every watcher sees the
//! same changes in the same (revision) order, none is lost or repeated, and a slow watcher
//! costs no memory: it only falls behind in the history, and once the revision it has reached
//! is compacted it gets an in-stream `ERROR` 410 Expired (never an HTTP 410: kube-rs would
//! not relist) and must relist.

use std::time::Duration;

use futures_util::{Stream, StreamExt};

use api::KindInfo;
use api::selector::Selector;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::raft::Stored;
use crate::raft::history::Change;
use crate::registry::item::{Outline, Plan, Served};
use crate::registry::{ApiError, Item, ListOptions, ReadAt, Registry, at_revision, prefix};

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    pub kind: &'static str,
    /// The object (for `ERROR`, a `Status`): as stored when the watcher sees it so (see
    /// [`crate::registry::item`]), else built.
    pub object: Item,
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// From the latest committed state (an unset resourceVersion): as [`Start::Now`], after a
    /// read barrier, so that the watch starts after every write acknowledged before it began,
    /// on any member (Kubernetes' "start at most recent", a consistent read).
    Latest,
    /// From the state this member has applied (`resourceVersion=0`, "start at any"): one
    /// `ADDED` per object first when `initial_events`, then every change after it; without
    /// `initial_events`, every change after what this member has applied when the watch
    /// starts.
    Now,
    /// After revision N: every change after it; with `initial_events`, the state at (at
    /// least) N first, as `ADDED` events.
    After(u64),
}

/// What to watch and how.
#[derive(Clone, Debug)]
pub struct Watch {
    /// Who is watching (what they may see of each object).
    pub who: crate::access::Caller,
    /// The kind.
    pub kind: &'static KindInfo,
    /// One namespace, or all.
    pub namespace: Option<String>,
    /// Which objects.
    pub selector: Selector,
    /// Where to start.
    pub start: Start,
    /// Send the current state as `ADDED` events first.
    pub initial_events: bool,
    /// After the initial events, a `BOOKMARK` annotated `k8s.io/initial-events-end`
    /// (`sendInitialEvents=true`).
    pub initial_events_end: bool,
    /// `allowWatchBookmarks`: periodic bookmarks and one just before the server closes.
    pub bookmarks: bool,
    /// How long the watch runs before the server closes it.
    pub timeout: Duration,
}

/// What woke a caught-up watch.
enum Wake {
    Changed,
    Bookmark,
    Deadline,
    Stop,
}

/// How often an idle watch with bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);
/// Revisions read from the history at a time.
const BATCH: usize = 512;

/// Starts a watch: its events, in order, as a stream that ends when the watch does (at its
/// deadline, when the server stops, or after the `ERROR` event of a failure). The watch does
/// its work as the stream is polled, in the task that serves its request, with no task or
/// queue of its own: the history is read only as far as the client's connection takes
/// events (`http/objects.rs` takes up to a frame's worth at a time), and dropping the stream
/// ends the watch.
///
/// A [`Start::Latest`] waits for its read barrier here, before this returns (so before the
/// response's headers), and a [`Start::Now`] without initial events takes its revision here:
/// a client that has the headers and then writes sees its write in the watch. The rest is
/// settled when the stream is first polled: the list of initial events and, for a
/// [`Start::After`] with initial events, the wait for that revision on this member (one it
/// does not reach in time ends the stream with an `ERROR` event after the headers, where
/// Kubernetes answers 504 before them).
pub async fn start(
    registry: &Registry,
    mut watch: Watch,
) -> Result<impl Stream<Item = Event> + Send + 'static, ApiError> {
    if watch.start == Start::Latest {
        registry.ready_for(ReadAt::Latest).await?;
        watch.start = Start::Now;
    }
    if watch.start == Start::Now && !watch.initial_events {
        // From now, without the state: after what this member has applied when it starts.
        watch.start = Start::After(*registry.store().subscribe().borrow());
    }
    Ok(run(registry.clone(), watch).map(|event| event.unwrap_or_else(|e| error_event(&e))))
}

/// An `ERROR` event carrying `e` as a `Status`, with the same `details` as a response's
/// (client-go recognises a too-large `resourceVersion` by its cause there).
pub fn error_event(e: &ApiError) -> Event {
    Event {
        kind: "ERROR",
        object: Item::Built(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": e.to_string(), "reason": e.reason(), "code": e.code(), "details": e.details(),
        })),
    }
}

fn bookmark(kind: &KindInfo, revision: u64, initial_events_end: bool) -> Event {
    let mut metadata = json!({ "resourceVersion": revision.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    Event {
        kind: "BOOKMARK",
        object: Item::Built(
            json!({ "apiVersion": api::API_VERSION, "kind": kind.kind, "metadata": metadata }),
        ),
    }
}

/// The event a change is to a watcher with `selector`, if any. An object that stops matching
/// is `DELETED` for it, one that starts matching `ADDED`. Served as stored when `plan` can
/// tell (see [`crate::registry::item`]); else built, `seen` being what the watcher may see of
/// an object ([`Registry::redactor`]).
fn event_for(
    plan: Option<&Plan<'_>>,
    seen: impl Fn(Value) -> Option<Value>,
    watch: &Watch,
    revision: u64,
    change: &Change,
) -> Result<Option<Event>, ApiError> {
    if let Some(plan) = plan
        && let Some(event) = served_event(plan, revision, change)
    {
        return Ok(event);
    }
    let selector = &watch.selector;
    // Parsed once for every watcher of the change (see `Window`).
    let (prev, new) = change.parsed(|value| at_revision(value, revision))?;
    // Redacted first: a selector must not probe what the watcher may not see.
    let prev = prev.clone().and_then(&seen).filter(|o| selector.matches(o));
    let new = new.clone().and_then(&seen);
    let new_matches = new.as_ref().is_some_and(|o| selector.matches(o));
    let event = |kind, object| Some(Event { kind, object: Item::Built(object) });
    Ok(match (prev, new) {
        (None, Some(n)) if new_matches => event("ADDED", n),
        (Some(_), Some(n)) if new_matches => event("MODIFIED", n),
        (Some(_), Some(n)) => event("DELETED", n),
        (Some(p), None) => event("DELETED", p),
        _ => None,
    })
}

/// [`event_for`] from the stored JSON: `None` when only the built objects can tell (an object
/// redaction would change, or one leaving the selector, whose event carries it unselected).
fn served_event(plan: &Plan<'_>, revision: u64, change: &Change) -> Option<Option<Event>> {
    // Outlined once for every watcher of the change (the outline is the kind's, not the plan's).
    let outline = |s: &Option<Stored>| s.as_ref().map(|s| plan.outline(&s.value, revision));
    let (prev, new) = change.memo(|c| (outline(&c.prev), outline(&c.new)))?;
    let serve = |s: &Option<Stored>, outline: &Option<Option<Outline>>| {
        let (s, outline) = (s.as_ref()?, outline.as_ref()?);
        Some(outline.as_ref().map_or(Served::Build, |o| plan.serve_outlined(o, &s.value)))
    };
    // The previous object is served only when the watcher's selection of it matters.
    let (served_prev, new) = (|| serve(&change.prev, prev), serve(&change.new, new));
    // Whether the watcher saw the object before; without a selector it saw whatever existed.
    let before = match &change.prev {
        None => false,
        Some(_) if plan.selects_all() && new.is_some() => true,
        Some(_) => match served_prev()? {
            Served::Build => return None,
            Served::Skip => false,
            Served::Item(prev) if new.is_none() => {
                return Some(Some(Event { kind: "DELETED", object: prev }));
            }
            Served::Item(_) => true,
        },
    };
    let event = |kind, object| Some(Some(Event { kind, object }));
    match (before, new) {
        (_, Some(Served::Build)) | (true, Some(Served::Skip)) => None,
        (false, Some(Served::Item(n))) => event("ADDED", n),
        (true, Some(Served::Item(n))) => event("MODIFIED", n),
        _ => Some(None),
    }
}

/// The watch's events; an error ends it.
fn run(registry: Registry, watch: Watch) -> impl Stream<Item = Result<Event, ApiError>> + Send {
    async_stream::try_stream! {
        let state = registry.store();
        let mut applied = state.subscribe();
        let prefix = prefix(watch.kind, watch.namespace.as_deref());
        // What a caught-up watch waits for besides changes, made once: each wake-up polls
        // them, never makes them again.
        let deadline = tokio::time::sleep(watch.timeout);
        let next_bookmark = tokio::time::sleep(BOOKMARK_EVERY);
        let mut stopping = registry.stopping();
        let stop = async move {
            // The server stopping, or gone.
            let _ = stopping.wait_for(|&s| s).await;
        };
        tokio::pin!(deadline, next_bookmark, stop);

        let mut cursor = match watch.start {
            Start::After(n) if !watch.initial_events => n,
            start => {
                if let Start::After(n) = start {
                    registry.wait_for_revision(n).await?;
                }
                // The objects it selects, collected first: the stream waits on the client.
                let opts = ListOptions { selector: watch.selector.clone(), ..ListOptions::default() };
                let mut selected = Vec::new();
                let grants = registry.follow_grants(&watch.who).await;
                let revision = registry.list_each(
                    &watch.who,
                    grants,
                    watch.kind,
                    watch.namespace.as_deref(),
                    &opts,
                    &mut |item| {
                        selected.push(item);
                        true
                    },
                )?;
                for object in selected {
                    yield Event { kind: "ADDED", object };
                }
                if watch.initial_events_end {
                    yield bookmark(watch.kind, revision, true);
                }
                revision
            }
        };

        let plan = Plan::new(&watch.who, watch.kind, &watch.selector);
        loop {
            applied.borrow_and_update();
            let batch = state.changes_after(cursor, BATCH).map_err(|e| ApiError::Unavailable(e.to_string()))?;
            let batch = batch.map_err(|c| {
                ApiError::Expired(format!("too old resource version: {} ({})", c.asked, c.compacted))
            })?;
            let caught_up = batch.upto >= *applied.borrow();
            // The grants (which the redaction reads) followed only for a batch with events.
            if batch.changes.iter().any(|(_, change)| change.key.starts_with(&prefix)) {
                let redact = registry.redactor(&watch.who, watch.kind).await;
                for (revision, change) in &batch.changes {
                    if !change.key.starts_with(&prefix) {
                        continue;
                    }
                    if let Some(event) = event_for(plan.as_ref(), &redact, &watch, *revision, change)? {
                        yield event;
                    }
                }
            }
            cursor = batch.upto;
            if !caught_up {
                continue;
            }
            let wake = tokio::select! {
                changed = applied.changed() => if changed.is_ok() { Wake::Changed } else { Wake::Stop },
                () = &mut next_bookmark, if watch.bookmarks => Wake::Bookmark,
                () = &mut deadline => Wake::Deadline,
                () = &mut stop => Wake::Stop,
            };
            match wake {
                Wake::Changed => {}
                Wake::Bookmark => {
                    yield bookmark(watch.kind, cursor, false);
                    next_bookmark.as_mut().reset(Instant::now() + BOOKMARK_EVERY);
                }
                Wake::Deadline => {
                    if watch.bookmarks {
                        yield bookmark(watch.kind, cursor, false);
                    }
                    break;
                }
                Wake::Stop => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::access;
    use crate::registry::item::tests::{Empty, caller, kind, label_value, replica, selector, stored};

    fn watching(member: bool, sel: Selector) -> Watch {
        Watch {
            who: caller(member),
            kind: kind("Replica"),
            namespace: None,
            selector: sel,
            start: Start::Now,
            initial_events: false,
            initial_events_end: false,
            bookmarks: false,
            timeout: Duration::from_secs(1),
        }
    }

    fn shown(e: Option<Event>) -> Option<(&'static str, Value)> {
        e.map(|e| (e.kind, e.object.into_value().unwrap()))
    }

    fn object() -> impl Strategy<Value = Option<Value>> {
        let env = prop::sample::select(vec![json!(null), json!([]), json!([{ "name": "K", "value": "v" }])]);
        proptest::option::of(
            (proptest::option::of(label_value()), label_value(), env, any::<bool>()).prop_map(
                |(app, node, env, applied)| {
                    let labels = app.map_or(json!({}), |a| json!({ "app": a }));
                    let mut obj = replica(
                        labels,
                        Some(env),
                        applied.then(|| json!({ api::signing::LAST_APPLIED: "{}" })),
                    );
                    obj["spec"]["nodeName"] = node.into();
                    obj
                },
            ),
        )
    }

    #[test]
    fn changes_are_served_as_stored_unless_redaction_or_a_leaving_object_needs_them_built() {
        let watch = watching(false, selector("app=a", ""));
        let plan = Plan::new(&watch.who, watch.kind, &watch.selector).unwrap();
        let (a, b) = (replica(json!({ "app": "a" }), None, None), replica(json!({ "app": "b" }), None, None));
        let change = |p: Option<&Value>, n: Option<&Value>| {
            Change::new("k".into(), p.map(|o| stored(o, 1)), n.map(|o| stored(o, 2)))
        };
        let kind_of = |c: &Change| served_event(&plan, 2, c).map(|e| e.map(|e| e.kind));
        assert_eq!(kind_of(&change(None, Some(&a))), Some(Some("ADDED")));
        assert_eq!(kind_of(&change(Some(&a), Some(&a))), Some(Some("MODIFIED")));
        assert_eq!(kind_of(&change(Some(&a), None)), Some(Some("DELETED")));
        assert_eq!(kind_of(&change(Some(&b), Some(&b))), Some(None), "never selected: nothing");
        assert_eq!(kind_of(&change(Some(&a), Some(&b))), None, "leaving: built");
        let secret = replica(json!({ "app": "a" }), Some(json!([{ "name": "K", "value": "v" }])), None);
        assert_eq!(kind_of(&change(None, Some(&secret))), None, "a secret: built");
        // One change, outlined once, for watchers who see it differently.
        let shared = change(None, Some(&secret));
        let member = watching(true, Selector::default());
        let member_plan = Plan::new(&member.who, member.kind, &member.selector).unwrap();
        let Some(Some(e)) = served_event(&member_plan, 2, &shared) else {
            panic!("a member sees it as stored")
        };
        assert_eq!(e.object.into_value().unwrap()["spec"]["container"]["env"][0]["value"], "v");
        assert_eq!(served_event(&plan, 2, &shared).map(|e| e.map(|e| e.kind)), None, "a stranger: built");
        assert!(matches!(served_event(&member_plan, 2, &shared), Some(Some(_))), "again, from the memo");
    }

    proptest! {
        /// Served as stored or built, a watcher gets the same event for every change.
        #[test]
        fn a_served_event_is_the_built_event(
            prev in object(),
            new in object(),
            member: bool,
            labels in prop::sample::select(vec!["", "app=a", "app!=a", "!app"]),
            fields in prop::sample::select(vec!["", "spec.nodeName=a"]),
        ) {
            let watch = watching(member, selector(labels, fields));
            let change = Change::new("k".into(), prev.as_ref().map(|o| stored(o, 3)), new.as_ref().map(|o| stored(o, 5)));
            let redact = |v| access::redact(&watch.who, watch.kind, v, &Empty);
            let plan = Plan::new(&watch.who, watch.kind, &watch.selector);
            prop_assert!(plan.is_some());
            let built = event_for(None, redact, &watch, 9, &change).unwrap();
            let served = event_for(plan.as_ref(), redact, &watch, 9, &change).unwrap();
            prop_assert_eq!(shown(served), shown(built));
        }
    }
}
