//! Retention of Events: the leader removes every Event an hour after it was made
//! ([`EVENT_TTL`], from its server-set `creationTimestamp`, so no writer can keep one longer;
//! a repeat after that is made again by its recorder), all but the newest [`PER_OBJECT`]
//! about one object (by uid), and all but the newest [`TOTAL`] in all. Together with the
//! quota of each reporter (`quota::EVENT_REPORTER`: a node's Events count against its own
//! name, 5,000 objects) this bounds what a node that emits in a loop can make the store hold.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{ApiError, Registry, unavailable};

/// How long an Event is kept after it was made.
pub const EVENT_TTL: Duration = Duration::from_secs(3600);
/// The most Events kept about one object.
pub const PER_OBJECT: usize = 50;
/// The most Events kept in all.
pub const TOTAL: usize = 10_000;

/// One stored Event as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// Its key.
    pub key: String,
    /// Its revision (the delete's precondition).
    pub revision: u64,
    /// When it was made (`None`: unreadable, removed).
    pub created: Option<DateTime<Utc>>,
    /// The uid (else the kind/namespace/name) of the object it is about.
    pub about: String,
}

impl Kept {
    /// What retention reads of the stored `value` under `key`.
    pub fn read(key: String, revision: u64, value: &str) -> Self {
        let obj: Value = serde_json::from_str(value).unwrap_or_default();
        let created = obj
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.to_utc());
        let r = |k: &str| obj.pointer(&format!("/regarding/{k}")).and_then(Value::as_str).unwrap_or_default();
        let about = match r("uid") {
            "" => format!("{}/{}/{}", r("kind"), r("namespace"), r("name")),
            uid => uid.to_owned(),
        };
        Self { key, revision, created, about }
    }
}

/// The Events to remove at `now` (each key with its revision), of `all`: pure.
pub fn to_remove(mut all: Vec<Kept>, now: DateTime<Utc>) -> Vec<(String, u64)> {
    let ttl = chrono::Duration::from_std(EVENT_TTL).expect("an hour fits");
    let mut gone = Vec::new();
    // Newest first: what is kept under each cap is the newest.
    all.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.key.cmp(&b.key)));
    let mut per_object: HashMap<String, usize> = HashMap::new();
    let mut kept = 0;
    for e in all {
        let expired = e.created.is_none_or(|c| now - c > ttl);
        let n = per_object.entry(e.about.clone()).or_default();
        if expired || *n >= PER_OBJECT || kept >= TOTAL {
            gone.push((e.key, e.revision));
        } else {
            *n += 1;
            kept += 1;
        }
    }
    gone
}

impl Registry {
    /// Removes the Events retention says to (see the module). Returns how many. The leader
    /// runs it every minute.
    pub async fn sweep_events(&self, now: DateTime<Utc>) -> Result<usize, ApiError> {
        let (all, _) =
            self.store.list(&super::prefix(&api::kinds::event::INFO, None)).map_err(unavailable)?;
        let all = all.into_iter().map(|(k, s)| Kept::read(k, s.mod_revision, &s.value)).collect();
        self.delete_keys(to_remove(all, now)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes_ago: i64, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        Some(now - chrono::Duration::minutes(minutes_ago))
    }

    fn event(i: usize, about: &str, created: Option<DateTime<Utc>>) -> Kept {
        Kept {
            key: format!("/registry/events/default/e{i:06}"),
            revision: i as u64,
            created,
            about: about.into(),
        }
    }

    #[test]
    fn events_older_than_an_hour_or_unreadable_go() {
        let now = Utc::now();
        let all = vec![event(1, "a", at(59, now)), event(2, "a", at(61, now)), event(3, "b", None)];
        let gone = to_remove(all, now);
        let keys: Vec<&str> = gone.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["/registry/events/default/e000002", "/registry/events/default/e000003"]);
    }

    #[test]
    fn one_object_keeps_its_newest_events_and_others_keep_theirs() {
        let now = Utc::now();
        // A node emitting in a loop about one replica: only the newest PER_OBJECT stay, and
        // another object's events are untouched.
        let mut all: Vec<Kept> = (0..PER_OBJECT + 30)
            .map(|i| event(i, "loud", Some(now - chrono::Duration::seconds(i as i64))))
            .collect();
        all.push(event(999_999, "quiet", at(10, now)));
        let gone = to_remove(all, now);
        assert_eq!(gone.len(), 30);
        // The oldest went (the largest i: made longest ago).
        assert!(gone.iter().all(|(k, _)| k.as_str() >= "/registry/events/default/e000050"), "{gone:?}");
        assert!(!gone.iter().any(|(k, _)| k.ends_with("e999999")));
    }

    #[test]
    fn no_more_than_the_total_is_kept() {
        let now = Utc::now();
        let all: Vec<Kept> = (0..TOTAL + 5)
            .map(|i| event(i, &format!("o{i}"), Some(now - chrono::Duration::milliseconds(i as i64))))
            .collect();
        let gone = to_remove(all, now);
        assert_eq!(gone.len(), 5);
        assert!(gone.iter().all(|(_, rev)| *rev >= TOTAL as u64));
    }
}
