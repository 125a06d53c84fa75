//! The one event recorder of the controllers and the node agent: [`Recorder::record`] writes
//! an `events.k8s.io/v1` Event about an object, and the same event again (same object by uid,
//! reason, controller and instance) counts in that Event's `series` rather than making
//! another object.
//!
//! Bounds: an Event's name is derived from what makes it the same event
//! (`api::kinds::event::name_for`), so repeats are one object even across restarts and
//! several copies of a controller; a repeat is written at most once per [`MIN_INTERVAL`] per
//! event (the ones between are counted and carried by the next write); at most [`REMEMBERED`]
//! events are remembered (the oldest forgotten); each write has [`TIMEOUT`]. Recording never
//! fails its caller: a refused or failed write is logged at debug and forgotten, since an
//! event is a note on what happened, not part of making it happen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::kinds::event::{
    EVENT_KIND, EVENTS_API_VERSION, EVENTS_GROUP, EventType, MAX_NOTE, MAX_WORD, MicroTime, ObjectReference,
    name_for,
};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::{Client, Resource};
use serde_json::json;

/// The shortest time between two writes of one event.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// How many events a recorder remembers.
pub const REMEMBERED: usize = 4096;
/// How long one write may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// What a recorder remembers of an event it wrote.
#[derive(Clone, Debug)]
struct Seen {
    /// Times it happened, as far as this recorder knows.
    count: i32,
    /// Of those, how many the stored Event counts already (written by this recorder).
    synced: i32,
    /// When it was last written (`None`: never yet).
    written: Option<Instant>,
}

/// Writes Events as one controller (`univrs.io/scheduler`) of one instance (its member or
/// node). Cheap to clone: clones share what they remember.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("controller", &self.controller)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// `s` as an Event's one-word field: no spaces, at most [`MAX_WORD`] bytes.
fn word(s: &str) -> String {
    let mut w: String =
        s.chars().map(|c| if c.is_whitespace() || c.is_control() { '-' } else { c }).collect();
    while w.len() > MAX_WORD {
        w.pop();
    }
    w
}

/// `note` within [`MAX_NOTE`] bytes, cut at a character boundary.
fn bounded_note(note: &str) -> String {
    let mut n = note.to_owned();
    while n.len() > MAX_NOTE {
        n.pop();
    }
    n
}

/// A reference to the object `obj` (any `kube::Resource` with static type information).
pub fn reference_to<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let meta = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..ObjectReference::default()
    }
}

/// One more occurrence of the event `name` at `now`: how many times it happened so far, how
/// many of those the stored Event counts already, and whether to write it now (its first time,
/// or [`MIN_INTERVAL`] after its last write). At most [`REMEMBERED`] events are kept: a new one
/// forgets the one written longest ago.
fn occurred(seen: &mut HashMap<String, Seen>, name: &str, now: Instant) -> (i32, i32, bool) {
    if seen.len() >= REMEMBERED && !seen.contains_key(name) {
        // Forget the event written longest ago (never-written ones first).
        if let Some(oldest) = seen.iter().min_by_key(|(_, s)| s.written).map(|(k, _)| k.clone()) {
            seen.remove(&oldest);
        }
    }
    let entry = seen.entry(name.to_owned()).or_insert(Seen { count: 0, synced: 0, written: None });
    entry.count = entry.count.saturating_add(1);
    let due = entry.written.is_none_or(|at| now.saturating_duration_since(at) >= MIN_INTERVAL);
    if due {
        entry.written = Some(now);
    }
    (entry.count, entry.synced, due)
}

/// The count to write over a stored one of `prior` (0: none stored), when this recorder saw
/// `count` occurrences of which the stored one has `synced`: what it has plus what it missed.
fn series_total(prior: i32, count: i32, synced: i32) -> i32 {
    prior.saturating_add(count - synced).clamp(1, api::kinds::event::MAX_COUNT)
}

impl Recorder {
    /// A recorder writing as `controller` (`univrs.io/scheduler`), instance `instance`.
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self { client, controller: word(controller), instance: word(instance), seen: Arc::default() }
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        let ar = ApiResource {
            group: EVENTS_GROUP.into(),
            version: "v1".into(),
            api_version: EVENTS_API_VERSION.into(),
            kind: EVENT_KIND.into(),
            plural: "events".into(),
        };
        Api::namespaced_with(self.client.clone(), namespace, &ar)
    }

    /// Records that `reason` happened to `regarding` (with `related`, say the Node of a
    /// placement): `action` is what was done, `note` what happened, for people.
    pub async fn record(
        &self,
        regarding: &ObjectReference,
        related: Option<&ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let reason = word(reason);
        let name = name_for(regarding, &reason, &self.controller, &self.instance);
        let now = chrono::Utc::now();
        // Counted here; written now, or carried by a later write.
        let (count, synced, due) =
            occurred(&mut self.seen.lock().expect("recorder lock"), &name, Instant::now());
        if !due {
            return;
        }
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let api = self.api(&namespace);
        let note = bounded_note(note);
        let observed = MicroTime::from_time(now);
        // A new Event, counting `total` occurrences.
        let new_event = |total: i32| {
            let mut event = json!({
                "apiVersion": EVENTS_API_VERSION, "kind": EVENT_KIND,
                "metadata": { "name": name, "namespace": namespace },
                "eventTime": observed,
                "reportingController": self.controller, "reportingInstance": self.instance,
                "action": word(action), "reason": reason, "regarding": regarding,
                "note": note, "type": type_,
            });
            if let Some(related) = related {
                event["related"] = json!(related);
            }
            if total > 1 {
                event["series"] = json!({ "count": total, "lastObservedTime": observed });
            }
            serde_json::from_value::<DynamicObject>(event).expect("an Event is an object")
        };
        let written = tokio::time::timeout(TIMEOUT, async {
            if synced == 0 {
                match api.create(&PostParams::default(), &new_event(count)).await {
                    Ok(_) => return Ok(()),
                    // Written before (before a restart of this recorder): counted in its series.
                    Err(e) if crate::is_conflict(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            let prior = match api.get(&name).await {
                Ok(o) => {
                    o.data.pointer("/series/count").and_then(serde_json::Value::as_i64).unwrap_or(1) as i32
                }
                Err(e) if crate::is_not_found(&e) => 0,
                Err(e) => return Err(e),
            };
            if prior == 0 {
                // Removed by retention meanwhile: what happened since is a new Event.
                api.create(&PostParams::default(), &new_event(count - synced)).await?;
                return Ok(());
            }
            let patch = json!({
                "series": { "count": series_total(prior, count, synced), "lastObservedTime": observed },
                "note": note,
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            Ok(())
        })
        .await;
        match written {
            Ok(Ok(())) => {
                if let Some(s) = self.seen.lock().expect("recorder lock").get_mut(&name) {
                    s.synced = s.synced.max(count);
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(event = %name, reason = %reason, error = %e, "event not recorded");
                // Try again with the next occurrence.
                if let Some(s) = self.seen.lock().expect("recorder lock").get_mut(&name) {
                    s.written = None;
                }
            }
            Err(_) => tracing::debug!(event = %name, reason = %reason, "event not recorded in time"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_counted_and_written_at_most_once_an_interval() {
        let mut seen = HashMap::new();
        let t0 = Instant::now();
        assert_eq!(occurred(&mut seen, "a", t0), (1, 0, true));
        seen.get_mut("a").unwrap().synced = 1; // written
        // Within the interval: counted, not written.
        assert_eq!(occurred(&mut seen, "a", t0 + Duration::from_secs(1)), (2, 1, false));
        assert_eq!(occurred(&mut seen, "a", t0 + Duration::from_secs(2)), (3, 1, false));
        // Another event is its own.
        assert_eq!(occurred(&mut seen, "b", t0 + Duration::from_secs(2)), (1, 0, true));
        // After the interval: written, carrying every repeat.
        assert_eq!(occurred(&mut seen, "a", t0 + MIN_INTERVAL), (4, 1, true));
        assert_eq!(series_total(1, 4, 1), 4);
        assert_eq!(occurred(&mut seen, "a", t0 + MIN_INTERVAL + Duration::from_secs(1)), (5, 1, false));
    }

    #[test]
    fn a_restarted_recorder_adds_to_the_stored_series() {
        // Stored: 7 times, by this controller before it restarted; seen once since.
        assert_eq!(series_total(7, 1, 0), 8);
        // Seen 3 times, the first 2 written already.
        assert_eq!(series_total(2, 3, 2), 3);
        assert_eq!(series_total(api::kinds::event::MAX_COUNT, 5, 0), api::kinds::event::MAX_COUNT);
    }

    #[test]
    fn a_recorder_remembers_a_bounded_number_of_events() {
        let mut seen = HashMap::new();
        let t0 = Instant::now();
        for i in 0..REMEMBERED + 10 {
            occurred(&mut seen, &format!("e{i}"), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(seen.len(), REMEMBERED);
        // The oldest went; the newest stayed.
        assert!(!seen.contains_key("e0") && seen.contains_key(&format!("e{}", REMEMBERED + 9)));
    }

    #[test]
    fn words_and_notes_are_bounded() {
        assert_eq!(word("Failed Scheduling"), "Failed-Scheduling");
        assert_eq!(word(&"x".repeat(300)).len(), MAX_WORD);
        let note = "é".repeat(MAX_NOTE);
        let cut = bounded_note(&note);
        assert!(cut.len() <= MAX_NOTE && note.starts_with(&cut));
    }
}
