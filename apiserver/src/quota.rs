//! Quotas per signer and per caller: what one identity may cost the control plane.
//!
//! Any key is a user, so every quota here is a bound on what an anonymous adversary can make
//! the cluster store, replicate and serve with one key. Members are exempt (they are trusted
//! with the log). The defaults are far above what a person or a GitOps repository uses and far
//! below what would hurt a member.
//!
//! - **Stored objects** ([`Usage`]): per signer, the objects of signed kinds it owns (and the
//!   tombstones of those it deleted, which anti-rollback keeps for a while), their bytes, the
//!   replicas its Workloads ask for, and those replicas' bytes (a Workload's size × its
//!   replicas: what the workload controller will write on its behalf). Counted from the
//!   applied change history, so every member counts the same whichever member took the write.
//!   The check and the commit are not one step: concurrent writes of one signer can pass the
//!   limit by as many requests as it has in flight.
//! - **Open watches** per identity ([`Watches`]).
//! - **Request rate** per identity ([`Rates`]): a token bucket.
//!
//! - **Unsigned objects** a non-member writes (a node's Lease, the status of a Replica bound to
//!   its node) count for nobody's quota; their number is bounded by the access rules (one
//!   Lease per node, Replicas only the controllers create) and their size by
//!   [`unsigned_breach`]: the status, and what is not the status, each at most
//!   [`UNSIGNED_OBJECT_BYTES`] unless the control plane wrote it that large (413 above it).
//!
//! Every refusal is a 429 with `Retry-After` and a message that names the quota.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Deserialize;

use crate::registry::ApiError;

/// The largest object of an unsigned kind a non-member may write, in stored bytes.
pub const UNSIGNED_OBJECT_BYTES: u64 = 64 << 10;

/// The limits; members are exempt from all of them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Objects (of signed kinds, tombstones included) per signer.
    pub objects: u64,
    /// Stored bytes of those objects per signer.
    pub bytes: u64,
    /// Replicas the Workloads of one signer may ask for in all.
    pub replicas: u64,
    /// Bytes of those replicas (each about its Workload's size) per signer.
    pub replica_bytes: u64,
    /// Watches one identity may hold open at once.
    pub watches: u64,
    /// Requests per second one identity may make, sustained.
    pub rate: f64,
    /// Requests one identity may make in a burst.
    pub burst: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            objects: 5_000,
            bytes: 64 << 20,
            replicas: 1_000,
            replica_bytes: 64 << 20,
            watches: 100,
            rate: 100.0,
            burst: 1_000.0,
        }
    }
}

/// What one signer's objects cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Objects (and tombstones).
    pub objects: u64,
    /// Their stored bytes.
    pub bytes: u64,
    /// Replicas their Workloads ask for.
    pub replicas: u64,
    /// Replicas × the size of their Workload.
    pub replica_bytes: u64,
}

impl Usage {
    /// Adds what `other` costs.
    pub fn add(&mut self, other: Usage) {
        self.objects = self.objects.saturating_add(other.objects);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.replicas = self.replicas.saturating_add(other.replicas);
        self.replica_bytes = self.replica_bytes.saturating_add(other.replica_bytes);
    }

    /// Takes away what `other` costs.
    pub fn sub(&mut self, other: Usage) {
        self.objects = self.objects.saturating_sub(other.objects);
        self.bytes = self.bytes.saturating_sub(other.bytes);
        self.replicas = self.replicas.saturating_sub(other.replicas);
        self.replica_bytes = self.replica_bytes.saturating_sub(other.replica_bytes);
    }
}

/// The fields of a stored object the quotas read (everything else is skipped unparsed).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Peek {
    #[serde(default)]
    metadata: PeekMeta,
    #[serde(default)]
    spec: Option<PeekSpec>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    reporting_instance: Option<String>,
}

#[derive(Default, Deserialize)]
struct PeekMeta {
    #[serde(default)]
    annotations: Option<HashMap<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct PeekSpec {
    #[serde(default)]
    replicas: Option<serde_json::Value>,
}

/// The signer's annotation (`api::signing::SIGNER`) as a JSON key (see [`cost`]).
const SIGNER_KEY: &str = "\"univrs.io/signer\"";

/// Where Events are stored.
const EVENTS_PREFIX: &str = "/registry/events/";
/// The account an Event's reporter pays from: this and its `reportingInstance`.
pub const EVENT_REPORTER: &str = "event-reporter:";

/// What a stored object (its key and JSON) costs, and whom: `None` when it counts for nobody
/// (control-plane kinds, unsigned objects). Tombstones (`{"signer": …}` under
/// `/tombstones/`) count as one small object of their signer; an Event, one of its reporter
/// ([`EVENT_REPORTER`]).
pub fn cost(key: &str, value: &str) -> Option<(String, Usage)> {
    let tombstone = key.starts_with(crate::registry::TOMBSTONES);
    if !tombstone && !key.starts_with("/registry/") {
        return None;
    }
    if tombstone {
        #[derive(Deserialize)]
        struct Tomb {
            signer: Option<String>,
        }
        let t: Tomb = serde_json::from_str(value).ok()?;
        let usage = Usage { objects: 1, bytes: value.len() as u64, ..Usage::default() };
        return t.signer.map(|s| (s, usage));
    }
    let event = key.starts_with(EVENTS_PREFIX);
    // Most stored objects are unsigned (members' Replicas, Leases, Nodes' status): outside
    // Events, the signer's annotation is the only thing that makes an object cost anything,
    // and stored objects are JSON as serde_json writes it (the apiserver parses what it is
    // sent and writes it again; an ASCII key is never escaped), so one whose text lacks the
    // annotation's quoted name costs nothing — found without a parse, as the ledger reads
    // every stored object when it is built and every change it follows.
    if !event && !value.contains(SIGNER_KEY) {
        return None;
    }
    let peek: Peek = serde_json::from_str(value).ok()?;
    if event {
        // An Event is paid for by whoever reports it (a node reports as itself: the access
        // rules check that), never by a signer it could name: a node that emits in a loop
        // fills its own quota and no more.
        let instance = peek.reporting_instance?;
        let usage = Usage { objects: 1, bytes: value.len() as u64, ..Usage::default() };
        return Some((format!("{EVENT_REPORTER}{instance}"), usage));
    }
    let signer = peek.metadata.annotations.as_ref()?.get(api::signing::SIGNER)?.as_str()?.to_owned();
    let bytes = value.len() as u64;
    let mut usage = Usage { objects: 1, bytes, ..Usage::default() };
    if peek.kind.as_deref() == Some(<api::kinds::WorkloadSpec as api::object::KindSpec>::KIND) {
        let replicas =
            peek.spec.and_then(|s| s.replicas).and_then(|r| r.as_u64()).unwrap_or(1).min(u64::from(u32::MAX));
        usage.replicas = replicas;
        usage.replica_bytes = replicas.saturating_mul(bytes);
    }
    Some((signer, usage))
}

/// Why writing `new` (of an unsigned kind, by a non-member) in place of `old` makes an object
/// too large, if it does: its `status` and the rest are each bounded by
/// [`UNSIGNED_OBJECT_BYTES`], except that the rest may stay as large as it was (a Replica the
/// workload controller copied a large Workload into).
pub fn unsigned_breach(old: Option<&str>, new: &str) -> Option<String> {
    fn sizes(json: &str) -> (u64, u64) {
        let Ok(serde_json::Value::Object(mut map)) = serde_json::from_str(json) else {
            return (0, json.len() as u64);
        };
        let status = map.remove("status").map_or(0, |s| s.to_string().len() as u64);
        (status, serde_json::Value::Object(map).to_string().len() as u64)
    }
    let limit = UNSIGNED_OBJECT_BYTES;
    if new.len() as u64 <= limit {
        return None;
    }
    let (status, rest) = sizes(new);
    let rest_before = old.map_or(0, |o| sizes(o).1);
    if status > limit {
        Some(format!("its status would be {status} bytes; a status may be at most {limit} bytes"))
    } else if rest > limit && rest > rest_before {
        Some(format!(
            "this object would be {rest} bytes; objects that are not signed may be at most {limit} bytes"
        ))
    } else {
        None
    }
}

/// Which limit `after` breaks, if any (only limits `before` did not break already: a signer
/// over a limit that was lowered may still shrink).
pub fn breach(limits: &Limits, before: Usage, after: Usage) -> Option<String> {
    let checks = [
        ("objects", before.objects, after.objects, limits.objects, "delete some of your objects"),
        ("bytes", before.bytes, after.bytes, limits.bytes, "make your objects smaller or delete some"),
        ("replicas", before.replicas, after.replicas, limits.replicas, "scale some workloads down"),
        (
            "replica bytes",
            before.replica_bytes,
            after.replica_bytes,
            limits.replica_bytes,
            "scale some workloads down or make them smaller",
        ),
    ];
    checks.into_iter().find(|&(_, b, a, limit, _)| a > limit && a > b).map(|(name, _, a, limit, what)| {
        format!("quota exceeded: {name} per signer ({a} of {limit} with this request): {what}")
    })
}

/// Per-signer usage, followed from the state machine's change history.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The revision the usage is at (`None`: not counted yet).
    at: Option<u64>,
    usage: HashMap<String, Usage>,
}

impl Ledger {
    /// Counts the object stored at `key` (a count from scratch: the whole state at one
    /// revision, key by key, then [`Ledger::advance`] to that revision).
    pub fn insert(&mut self, key: &str, value: &str) {
        if let Some((signer, u)) = cost(key, value) {
            self.usage.entry(signer).or_default().add(u);
        }
    }

    /// The revision counted up to.
    pub fn at(&self) -> Option<u64> {
        self.at
    }

    /// Follows one change of `key` from `prev` to `new` at `revision`.
    pub fn change(&mut self, revision: u64, key: &str, prev: Option<&str>, new: Option<&str>) {
        if let Some((signer, u)) = prev.and_then(|p| cost(key, p)) {
            let entry = self.usage.entry(signer.clone()).or_default();
            entry.sub(u);
            if *entry == Usage::default() {
                self.usage.remove(&signer);
            }
        }
        if let Some((signer, u)) = new.and_then(|n| cost(key, n)) {
            self.usage.entry(signer).or_default().add(u);
        }
        self.at = Some(revision);
    }

    /// Everything up to `revision` is counted.
    pub fn advance(&mut self, revision: u64) {
        self.at = Some(self.at.map_or(revision, |at| at.max(revision)));
    }

    /// What `signer` uses now.
    pub fn usage(&self, signer: &str) -> Usage {
        self.usage.get(signer).copied().unwrap_or_default()
    }
}

/// Open watches per identity.
#[derive(Clone, Debug, Default)]
pub struct Watches(Arc<Mutex<HashMap<String, u64>>>);

/// Holds one open watch; dropping it closes the count.
#[derive(Debug)]
pub struct WatchSlot {
    watches: Watches,
    did: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.watches.0.lock().expect("watch count lock");
        if let Some(n) = open.get_mut(&self.did) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.did);
            }
        }
    }
}

impl Watches {
    /// Opens a watch for `did`, or says which quota it is over.
    pub fn open(&self, did: &str, limit: u64) -> Result<WatchSlot, ApiError> {
        let mut open = self.0.lock().expect("watch count lock");
        let n = open.entry(did.to_owned()).or_default();
        if *n >= limit {
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "quota exceeded: open watches per identity ({n} of {limit}): close some watches, or share one watch among your clients"
                ),
                retry_after: 5,
            });
        }
        *n += 1;
        Ok(WatchSlot { watches: self.clone(), did: did.to_owned() })
    }
}

/// Token buckets of request rates, per identity.
#[derive(Clone, Debug, Default)]
pub struct Rates(Arc<Mutex<HashMap<String, Bucket>>>);

/// Identities whose buckets are kept at most; beyond that, full buckets (idle identities) go.
const MAX_BUCKETS: usize = 100_000;

/// One identity's bucket.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes one token at `now` from a bucket of `burst` refilled at `rate`; `Err(seconds)`
    /// until one is there.
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

impl Rates {
    /// Counts one request of `did` at `now`, or says when to try again.
    pub fn request(&self, did: &str, limits: &Limits, now: Instant) -> Result<(), ApiError> {
        let mut buckets = self.0.lock().expect("rate buckets lock");
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(did) {
            let (rate, burst) = (limits.rate, limits.burst);
            buckets.retain(|_, b| {
                let refilled = b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate;
                refilled < burst
            });
        }
        let bucket = buckets.entry(did.to_owned()).or_insert(Bucket { tokens: limits.burst, at: now });
        bucket.take(now, limits.rate, limits.burst).map_err(|retry_after| ApiError::TooManyRequests {
            message: format!(
                "rate limit exceeded: {} requests per second per identity (bursts of {}): slow down and retry after {retry_after} s",
                limits.rate, limits.burst
            ),
            retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_what_names_a_signer_is_parsed_and_the_rest_costs_nothing() {
        assert_eq!(SIGNER_KEY, format!("\"{}\"", api::signing::SIGNER));
        let signed = serde_json::json!({ "kind": "Workload",
            "metadata": { "name": "w", "annotations": { api::signing::SIGNER: "did:key:zA", "pad": "x" } },
            "spec": { "replicas": 2 } })
        .to_string();
        let (signer, usage) = cost("/registry/univrs.io/workloads/default/w", &signed).unwrap();
        assert_eq!((signer.as_str(), usage.objects, usage.replicas), ("did:key:zA", 1, 2));
        // The same object without the annotation, or with its name elsewhere than among the
        // annotations: nobody's.
        let unsigned = serde_json::json!({ "kind": "Workload", "metadata": { "name": "w" } }).to_string();
        assert_eq!(cost("/registry/univrs.io/workloads/default/w", &unsigned), None);
        let elsewhere = serde_json::json!({ "kind": "Workload", "metadata": { "name": "w" },
            "spec": { api::signing::SIGNER: "did:key:zB" } })
        .to_string();
        assert_eq!(cost("/registry/univrs.io/workloads/default/w", &elsewhere), None);
        // An Event is its reporter's, signed or not.
        let event = serde_json::json!({ "kind": "Event", "reportingInstance": "n1" }).to_string();
        assert_eq!(cost("/registry/events/default/e", &event).unwrap().0, format!("{EVENT_REPORTER}n1"));
    }

    fn workload(signer: &str, replicas: u64) -> String {
        serde_json::json!({ "kind": "Workload", "metadata": { "name": "w", "annotations": { "univrs.io/signer": signer } },
                            "spec": { "replicas": replicas, "rootfs": "busybox" } })
        .to_string()
    }

    #[test]
    fn unsigned_objects_are_bounded_but_may_keep_what_the_control_plane_wrote() {
        let big = "x".repeat(UNSIGNED_OBJECT_BYTES as usize);
        let lease = |holder: &str| format!(r#"{{"kind":"Lease","spec":{{"holderIdentity":"{holder}"}}}}"#);
        assert_eq!(unsigned_breach(None, &lease("n1")), None);
        assert!(unsigned_breach(Some(&lease("n1")), &lease(&big)).unwrap().contains("may be at most"));
        let replica = |status: &str| {
            format!(r#"{{"kind":"Replica","spec":{{"env":"{big}"}},"status":{{"m":"{status}"}}}}"#)
        };
        assert_eq!(unsigned_breach(Some(&replica("")), &replica("Running")), None);
        assert!(unsigned_breach(Some(&replica("")), &replica(&big)).unwrap().contains("its status would be"));
    }

    #[test]
    fn an_event_costs_its_reporter_never_a_signer_it_names() {
        // A node naming someone's did as signer still pays itself.
        let e = serde_json::json!({ "kind": "Event", "reportingInstance": "n1",
            "metadata": { "name": "e", "annotations": { "univrs.io/signer": "did:key:victim" } } })
        .to_string();
        let (payer, u) = cost("/registry/events/default/e", &e).unwrap();
        assert_eq!(payer, format!("{EVENT_REPORTER}n1"));
        assert_eq!(u, Usage { objects: 1, bytes: e.len() as u64, ..Usage::default() });
        // So a node's loop of events meets the object quota of its own name.
        let limits = Limits::default();
        let full = Usage { objects: limits.objects, ..Usage::default() };
        let mut more = full;
        more.add(u);
        assert!(breach(&limits, full, more).is_some());
    }

    #[test]
    fn a_workload_costs_itself_and_its_replicas() {
        let w = workload("did:key:a", 10);
        let (signer, u) = cost("/registry/workloads/default/w", &w).unwrap();
        assert_eq!(signer, "did:key:a");
        assert_eq!(
            u,
            Usage { objects: 1, bytes: w.len() as u64, replicas: 10, replica_bytes: 10 * w.len() as u64 }
        );
        assert_eq!(cost("/registry/replicas/default/r", r#"{"kind":"Replica","metadata":{}}"#), None);
        assert_eq!(cost("/other/x", &w), None);
        let tomb = r#"{"signer":"did:key:a","signedAt":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(cost("/tombstones/workloads/default/w", tomb).unwrap().1.objects, 1);
    }

    #[test]
    fn the_ledger_follows_changes_and_breaches_name_the_quota() {
        let mut ledger = Ledger::default();
        let (small, big) = (workload("a", 1), workload("a", 500));
        ledger.insert("/registry/workloads/default/w", &small);
        ledger.advance(1);
        assert_eq!((ledger.at(), ledger.usage("a").replicas), (Some(1), 1));
        ledger.change(2, "/registry/workloads/default/w", Some(&small), Some(&big));
        assert_eq!(ledger.usage("a").replicas, 500);
        ledger.change(3, "/registry/workloads/default/w", Some(&big), None);
        assert_eq!(ledger.usage("a"), Usage::default());
        let limits = Limits { replicas: 100, ..Limits::default() };
        let before = Usage::default();
        let after = Usage { objects: 1, replicas: 500, ..Usage::default() };
        let msg = breach(&limits, before, after).unwrap();
        assert!(msg.contains("replicas per signer (500 of 100"), "{msg}");
        // Shrinking while over a limit is allowed.
        assert_eq!(
            breach(&limits, Usage { replicas: 900, ..before }, Usage { replicas: 800, ..before }),
            None
        );
    }

    #[test]
    fn watches_and_rates_are_bounded_per_identity() {
        let watches = Watches::default();
        let a = watches.open("a", 2).unwrap();
        let _b = watches.open("a", 2).unwrap();
        assert!(matches!(watches.open("a", 2), Err(ApiError::TooManyRequests { .. })));
        watches.open("b", 2).unwrap();
        drop(a);
        watches.open("a", 2).unwrap();

        let rates = Rates::default();
        let limits = Limits { rate: 10.0, burst: 3.0, ..Limits::default() };
        let t0 = Instant::now();
        for _ in 0..3 {
            rates.request("a", &limits, t0).unwrap();
        }
        let Err(ApiError::TooManyRequests { retry_after, message }) = rates.request("a", &limits, t0) else {
            panic!("the fourth request in a burst of 3 passed")
        };
        assert_eq!(retry_after, 1);
        assert!(message.contains("10 requests per second"), "{message}");
        rates.request("b", &limits, t0).unwrap();
        rates.request("a", &limits, t0 + Duration::from_millis(150)).unwrap();
    }
}
