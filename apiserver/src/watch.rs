//! Watch: the changes to the objects of one kind, as Kubernetes watch events, from any
//! revision still in the state machine's history.
//!
//! A watch reads the history itself rather than a per-watcher queue: every watcher sees the
//! same changes in the same (revision) order, none is lost or repeated, and a slow watcher
//! costs no memory: it only falls behind in the history, and once the revision it has reached
//! is compacted it gets an in-stream `ERROR` 410 Expired (never an HTTP 410: kube-rs would
//! not relist) and must relist.

use std::time::Duration;

use api::KindInfo;
use api::selector::Selector;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::raft::history::Change;
use crate::registry::{ApiError, Registry, at_revision, prefix};

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    pub kind: &'static str,
    /// The object (for `ERROR`, a `Status`).
    pub object: Value,
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// From the current state: one `ADDED` per object first when `initial_events` (an unset
    /// or `"0"` resourceVersion), then every change after it.
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
/// Events buffered per watch before the producer waits for the client.
const BUFFER: usize = 256;
/// Revisions read from the history at a time.
const BATCH: usize = 512;

/// Starts a watch; its events arrive on the receiver, which closes when the watch ends.
/// Dropping the receiver ends the watch.
pub fn start(registry: &Registry, watch: Watch) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(BUFFER);
    let registry = registry.clone();
    tokio::spawn(async move {
        if let Err(e) = run(&registry, &watch, &tx).await {
            let _ = tx.send(error_event(&e)).await;
        }
    });
    rx
}

/// An `ERROR` event carrying `e` as a `Status`.
pub fn error_event(e: &ApiError) -> Event {
    Event {
        kind: "ERROR",
        object: json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": e.to_string(), "reason": e.reason(), "code": e.code(),
        }),
    }
}

fn bookmark(kind: &KindInfo, revision: u64, initial_events_end: bool) -> Event {
    let mut metadata = json!({ "resourceVersion": revision.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    Event {
        kind: "BOOKMARK",
        object: json!({ "apiVersion": api::API_VERSION, "kind": kind.kind, "metadata": metadata }),
    }
}

/// The event a change is to a watcher with `selector`, if any. An object that stops matching
/// is `DELETED` for it, one that starts matching `ADDED`.
/// `seen` is what the watcher may see of an object ([`Registry::redactor`]).
fn event_for(
    seen: impl Fn(Value) -> Option<Value>,
    watch: &Watch,
    revision: u64,
    change: &Change,
) -> Result<Option<Event>, ApiError> {
    let selector = &watch.selector;
    // Parsed once for every watcher of the change (see `Window`).
    let (prev, new) = change.parsed(|value| at_revision(value, revision))?;
    // Redacted first: a selector must not probe what the watcher may not see.
    let prev = prev.clone().and_then(&seen).filter(|o| selector.matches(o));
    let new = new.clone().and_then(&seen);
    let new_matches = new.as_ref().is_some_and(|o| selector.matches(o));
    Ok(match (prev, new) {
        (None, Some(n)) if new_matches => Some(Event { kind: "ADDED", object: n }),
        (Some(_), Some(n)) if new_matches => Some(Event { kind: "MODIFIED", object: n }),
        (Some(_), Some(n)) => Some(Event { kind: "DELETED", object: n }),
        (Some(p), None) => Some(Event { kind: "DELETED", object: p }),
        _ => None,
    })
}

async fn run(registry: &Registry, watch: &Watch, tx: &mpsc::Sender<Event>) -> Result<(), ApiError> {
    let state = registry.store();
    let mut applied = state.subscribe();
    let mut stopping = registry.stopping();
    let prefix = prefix(watch.kind, watch.namespace.as_deref());
    let deadline = Instant::now() + watch.timeout;
    let send = |e: Event| async move { tx.send(e).await.is_ok() };

    let mut cursor = match watch.start {
        Start::After(n) if !watch.initial_events => n,
        start => {
            if let Start::After(n) = start {
                registry.wait_for_revision(n).await?;
            }
            // The objects it selects, collected first: the stream waits on the client.
            let redact = registry.redactor(&watch.who, watch.kind);
            let needs = crate::raft::labels::LabelNeeds::of(&watch.selector.labels);
            let scan = crate::raft::Scan { prefix: &prefix, after: None, at: None, labels: &needs };
            let (mut selected, mut failed) = (Vec::new(), None);
            let revision = state
                .scan(scan, &mut |_, stored| {
                    match at_revision(&stored.value, stored.mod_revision) {
                        Ok(obj) => selected.extend(redact(obj).filter(|o| watch.selector.matches(o))),
                        Err(e) => failed = Some(e),
                    }
                    failed.is_none()
                })
                .map_err(|e| ApiError::Unavailable(e.to_string()))?
                .map_err(|e| ApiError::Expired(e.to_string()))?;
            if let Some(e) = failed {
                return Err(e);
            }
            for obj in selected {
                if !send(Event { kind: "ADDED", object: obj }).await {
                    return Ok(());
                }
            }
            if watch.initial_events_end && !send(bookmark(watch.kind, revision, true)).await {
                return Ok(());
            }
            revision
        }
    };

    let mut next_bookmark = Instant::now() + BOOKMARK_EVERY;
    loop {
        applied.borrow_and_update();
        let batch = state.changes_after(cursor, BATCH).map_err(|e| ApiError::Unavailable(e.to_string()))?;
        let batch = batch.map_err(|c| {
            ApiError::Expired(format!("too old resource version: {} ({})", c.asked, c.compacted))
        })?;
        let caught_up = batch.upto >= *applied.borrow();
        let redact = registry.redactor(&watch.who, watch.kind);
        for (revision, change) in &batch.changes {
            if !change.key.starts_with(&prefix) {
                continue;
            }
            if let Some(event) = event_for(&redact, watch, *revision, change)?
                && !send(event).await
            {
                return Ok(());
            }
        }
        cursor = batch.upto;
        if !caught_up {
            continue;
        }
        let wake = tokio::select! {
            changed = applied.changed() => if changed.is_ok() { Wake::Changed } else { Wake::Stop },
            () = tokio::time::sleep_until(next_bookmark), if watch.bookmarks => Wake::Bookmark,
            () = tokio::time::sleep_until(deadline) => Wake::Deadline,
            stop = stopping.wait_for(|&s| s) => { drop(stop); Wake::Stop },
            () = tx.closed() => Wake::Stop,
        };
        match wake {
            Wake::Changed => {}
            Wake::Bookmark => {
                if !send(bookmark(watch.kind, cursor, false)).await {
                    return Ok(());
                }
                next_bookmark = Instant::now() + BOOKMARK_EVERY;
            }
            Wake::Deadline => {
                if watch.bookmarks {
                    send(bookmark(watch.kind, cursor, false)).await;
                }
                return Ok(());
            }
            Wake::Stop => return Ok(()),
        }
    }
}
