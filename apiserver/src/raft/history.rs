//! The change history of the state machine: for every applied revision, what each key changed
//! from and to. Watch streams read it from any revision still kept; paginated and `Exact`
//! lists read the state as it was at a past revision through it.
//!
//! It is a local index, not replicated state: each member records the changes as it applies
//! them, stamped with its own clock, and drops them after a while (time-based, so a client
//! that reconnects after a restart of the server still finds its revision). Everything at or
//! below the `compacted` revision is gone; a reader asking for it gets [`Compacted`].

use serde::{Deserialize, Serialize};

use super::Stored;

/// One key's change in one revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The key.
    pub key: String,
    /// What the key held before (`None`: it did not exist).
    pub prev: Option<Stored>,
    /// What it holds after (`None`: deleted).
    pub new: Option<Stored>,
}

/// Every change of one revision, in the order of the request's operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When this member applied it (milliseconds since the Unix epoch).
    pub applied_at_ms: u64,
    /// The changes.
    pub changes: Vec<Change>,
}

/// A reader asked for revisions that are no longer kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("revision {asked} is compacted (history starts after {compacted})")]
pub struct Compacted {
    /// The revision asked for.
    pub asked: u64,
    /// Everything at or below this revision is gone.
    pub compacted: u64,
}

/// Changes read from the history.
#[derive(Debug)]
pub struct Changes {
    /// `(revision, change)` in revision order, then operation order.
    pub changes: Vec<(u64, Change)>,
    /// The revision the reader has now seen everything up to (whether or not a change of
    /// interest happened at it): the next read starts after it.
    pub upto: u64,
}

/// How long and how much history a member keeps.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Changes older than this are dropped.
    pub max_age: std::time::Duration,
    /// At most this many revisions are kept, however young.
    pub max_revisions: u64,
}

impl Default for Retention {
    fn default() -> Self {
        // Kubernetes keeps about five minutes of watch history in etcd; a little more lets
        // every client of a restarted server resume rather than relist.
        Self { max_age: std::time::Duration::from_secs(15 * 60), max_revisions: 200_000 }
    }
}

/// The value of each key at a past revision, from the current state and the changes since.
///
/// `current` is every key of interest as it is now (at `now`); `since` is every change after
/// `at` up to `now`, in order. A key changed since `at` had, at `at`, the `prev` of its first
/// change after `at`.
pub fn state_at(
    current: Vec<(String, Stored)>,
    since: impl IntoIterator<Item = Change>,
    wanted: impl Fn(&str) -> bool,
) -> Vec<(String, Stored)> {
    let mut then = std::collections::BTreeMap::new();
    for change in since {
        if wanted(&change.key) && !then.contains_key(&change.key) {
            then.insert(change.key, change.prev);
        }
    }
    let mut out: std::collections::BTreeMap<String, Stored> =
        current.into_iter().filter(|(k, _)| !then.contains_key(k)).collect();
    out.extend(then.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rev: u64, v: &str) -> Stored {
        Stored { create_revision: rev, mod_revision: rev, value: v.into() }
    }

    #[test]
    fn state_at_a_past_revision_undoes_later_changes() {
        // At revision 5: a=a5, b=b3, c=c4. Then 6: a→a6, 7: b deleted, 8: d created, 9: a→a9.
        let current = vec![("a".into(), s(9, "a9")), ("c".into(), s(4, "c4")), ("d".into(), s(8, "d8"))];
        let since = vec![
            Change { key: "a".into(), prev: Some(s(5, "a5")), new: Some(s(6, "a6")) },
            Change { key: "b".into(), prev: Some(s(3, "b3")), new: None },
            Change { key: "d".into(), prev: None, new: Some(s(8, "d8")) },
            Change { key: "a".into(), prev: Some(s(6, "a6")), new: Some(s(9, "a9")) },
        ];
        let then = state_at(current, since, |_| true);
        assert_eq!(then, vec![("a".into(), s(5, "a5")), ("b".into(), s(3, "b3")), ("c".into(), s(4, "c4"))]);
    }
}
