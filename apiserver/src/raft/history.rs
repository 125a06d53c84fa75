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
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Change {
    /// The key.
    pub key: String,
    /// What the key held before (`None`: it did not exist).
    pub prev: Option<Stored>,
    /// What it holds after (`None`: deleted).
    pub new: Option<Stored>,
    /// `prev` and `new` parsed, made by the first reader that asks ([`Change::parsed`]) and
    /// kept for the others: the watchers of a change in the [`Window`] share one parse.
    #[serde(skip)]
    parsed: std::sync::OnceLock<Parsed>,
    /// Another form of them that readers share, made by the first that asks
    /// ([`Change::memo`]).
    #[serde(skip)]
    memo: std::sync::OnceLock<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

/// A change's `prev` and `new` as JSON objects (as [`Change::parsed`] makes them).
pub type Parsed = (Option<serde_json::Value>, Option<serde_json::Value>);

impl PartialEq for Change {
    fn eq(&self, other: &Self) -> bool {
        (&self.key, &self.prev, &self.new) == (&other.key, &other.prev, &other.new)
    }
}

impl Eq for Change {}

impl Change {
    /// `key` changed from `prev` to `new`.
    pub fn new(key: String, prev: Option<Stored>, new: Option<Stored>) -> Self {
        Self { key, prev, new, parsed: std::sync::OnceLock::new(), memo: std::sync::OnceLock::new() }
    }

    /// `prev` and `new` parsed by `parse`, once: later calls get the first result (a change
    /// lives at one revision, so every reader parses it the same way).
    pub fn parsed<E>(&self, parse: impl Fn(&str) -> Result<serde_json::Value, E>) -> Result<&Parsed, E> {
        if let Some(done) = self.parsed.get() {
            return Ok(done);
        }
        let prev = self.prev.as_ref().map(|p| parse(&p.value)).transpose()?;
        let new = self.new.as_ref().map(|n| parse(&n.value)).transpose()?;
        Ok(self.parsed.get_or_init(|| (prev, new)))
    }

    /// What `make` makes of the change, made once by the first reader that asks and shared
    /// with the others (as [`Change::parsed`]; the watchers of a change share one outline of
    /// it). Every reader asks for the same type: `None` for another.
    pub fn memo<T: std::any::Any + Send + Sync>(&self, make: impl FnOnce(&Self) -> T) -> Option<&T> {
        self.memo.get_or_init(|| std::sync::Arc::new(make(self))).downcast_ref()
    }

    /// Roughly what it holds in memory, parsed or not (for the window's bound).
    fn weight(&self) -> usize {
        let bytes = |s: &Option<Stored>| s.as_ref().map_or(0, |s| s.value.len());
        // A parsed JSON object takes several times its text (more for many small values), and
        // a memo about its text again.
        128 + self.key.len() + 9 * (bytes(&self.prev) + bytes(&self.new))
    }
}

/// The most recent changes, in memory: watchers read them here rather than each decoding
/// the history from disk. It covers every revision after [`Window::after`]'s lower bound up
/// to the last applied one, and drops its oldest revisions whole beyond its bounds; a reader
/// further behind reads the history on disk.
#[derive(Debug, Default)]
pub struct Window {
    inner: std::sync::RwLock<WindowInner>,
}

#[derive(Debug, Default)]
struct WindowInner {
    /// Every change after this revision, up to `upto`, is here.
    from: u64,
    upto: u64,
    changes: std::collections::VecDeque<(u64, std::sync::Arc<Change>)>,
    /// The sum of the changes' weights.
    weight: usize,
}

/// At most this many changes in the window…
const WINDOW_CHANGES: usize = 16_384;
/// …weighing at most this much.
const WINDOW_WEIGHT: usize = 64 << 20;

impl Window {
    /// Empties the window: it covers nothing up to `revision`.
    pub fn reset(&self, revision: u64) {
        *self.inner.write().expect("window lock") =
            WindowInner { from: revision, upto: revision, ..WindowInner::default() };
    }

    /// Adds the changes of the revisions up to `upto` (every one after the last `upto`).
    pub fn push(&self, upto: u64, changes: Vec<(u64, Change)>) {
        let mut w = self.inner.write().expect("window lock");
        for (revision, change) in changes {
            w.weight += change.weight();
            w.changes.push_back((revision, std::sync::Arc::new(change)));
        }
        w.upto = upto;
        while w.changes.len() > WINDOW_CHANGES || w.weight > WINDOW_WEIGHT {
            // Whole revisions go: the window never holds part of one.
            let Some(&(oldest, _)) = w.changes.front() else { break };
            while w.changes.front().is_some_and(|(r, _)| *r == oldest) {
                let (_, c) = w.changes.pop_front().expect("a front");
                w.weight -= c.weight();
            }
            w.from = oldest;
        }
    }

    /// Drops every revision up to `upto`, as the history on disk just did: the window never
    /// serves what a reader of the disk would be told is compacted.
    pub fn compact(&self, upto: u64) {
        let mut w = self.inner.write().expect("window lock");
        while w.changes.front().is_some_and(|(r, _)| *r <= upto) {
            let (_, c) = w.changes.pop_front().expect("a front");
            w.weight -= c.weight();
        }
        w.from = w.from.max(upto.min(w.upto));
    }

    /// The keys changed in the revisions after `lo` up to `hi` that start with `prefix` and
    /// sort after `after`, if the window holds every one of those revisions.
    pub fn keys_changed(&self, lo: u64, hi: u64, prefix: &str, after: Option<&str>) -> Option<Vec<String>> {
        let w = self.inner.read().expect("window lock");
        if lo < w.from || hi > w.upto {
            return None;
        }
        let first = w.changes.partition_point(|(r, _)| *r <= lo);
        let keys = w
            .changes
            .range(first..)
            .take_while(|(r, _)| *r <= hi)
            .map(|(_, c)| &c.key)
            .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
            .cloned()
            .collect();
        Some(keys)
    }

    /// The changes after revision `after`, at most `max` revisions of them, if the window
    /// still holds every one (`None`: read the history on disk).
    pub fn after(&self, after: u64, max: usize) -> Option<Changes> {
        let w = self.inner.read().expect("window lock");
        if after < w.from {
            return None;
        }
        let first = w.changes.partition_point(|(r, _)| *r <= after);
        let mut upto = w.upto.max(after);
        let mut changes = Vec::new();
        let mut revisions = 0;
        for (revision, change) in w.changes.range(first..) {
            if changes.last().is_none_or(|(r, _): &(u64, _)| r != revision) {
                if revisions == max {
                    upto = revision - 1;
                    break;
                }
                revisions += 1;
            }
            changes.push((*revision, change.clone()));
        }
        Some(Changes { changes, upto })
    }
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
    pub changes: Vec<(u64, std::sync::Arc<Change>)>,
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
            Change::new("a".into(), Some(s(5, "a5")), Some(s(6, "a6"))),
            Change::new("b".into(), Some(s(3, "b3")), None),
            Change::new("d".into(), None, Some(s(8, "d8"))),
            Change::new("a".into(), Some(s(6, "a6")), Some(s(9, "a9"))),
        ];
        let then = state_at(current, since, |_| true);
        assert_eq!(then, vec![("a".into(), s(5, "a5")), ("b".into(), s(3, "b3")), ("c".into(), s(4, "c4"))]);
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    fn change(key: &str, bytes: usize) -> Change {
        Change::new(
            key.into(),
            None,
            Some(Stored { create_revision: 1, mod_revision: 1, value: "x".repeat(bytes) }),
        )
    }

    fn revisions(c: &Changes) -> Vec<u64> {
        c.changes.iter().map(|(r, _)| *r).collect()
    }

    #[test]
    fn the_window_serves_what_it_covers_in_order_and_sends_the_rest_to_disk() {
        let w = Window::default();
        w.reset(10);
        assert_eq!(revisions(&w.after(10, 100).unwrap()), Vec::<u64>::new());
        assert!(w.after(9, 100).is_none(), "before the window");
        // 11: two changes, 12: none (a blank entry), 13: one.
        w.push(13, vec![(11, change("a", 1)), (11, change("b", 1)), (13, change("c", 1))]);
        let all = w.after(10, 100).unwrap();
        assert_eq!(revisions(&all), [11, 11, 13]);
        assert_eq!(all.upto, 13);
        let one = w.after(10, 1).unwrap();
        assert_eq!((revisions(&one), one.upto), (vec![11, 11], 12), "stops short of a revision, whole");
        let rest = w.after(one.upto, 1).unwrap();
        assert_eq!((revisions(&rest), rest.upto), (vec![13], 13));
        assert_eq!(w.after(20, 5).unwrap().upto, 20, "a reader ahead stays where it is");
    }

    #[test]
    fn the_window_drops_whole_revisions_beyond_its_bounds() {
        let w = Window::default();
        w.reset(0);
        // Each change weighs about 5 MiB: the window keeps about a dozen.
        for r in 1..=40u64 {
            w.push(r, vec![(r, change("a", 1 << 20)), (r, change("b", 1))]);
        }
        let inner = w.inner.read().unwrap();
        assert!(inner.weight <= WINDOW_WEIGHT, "{}", inner.weight);
        let from = inner.from;
        drop(inner);
        assert!(from > 20 && from < 40, "{from}");
        assert!(w.after(from - 1, 100).is_none());
        let kept = w.after(from, 100).unwrap();
        assert_eq!(kept.changes.len() as u64, 2 * (40 - from), "both changes of every revision kept");
        assert_eq!(kept.changes[0].0, from + 1);
    }

    #[test]
    fn compacting_the_history_drops_the_window_s_revisions_too() {
        let w = Window::default();
        w.reset(0);
        w.push(3, vec![(1, change("a", 1)), (2, change("b", 1)), (3, change("c", 1))]);
        w.compact(2);
        assert!(w.after(1, 10).is_none(), "compacted");
        assert_eq!(revisions(&w.after(2, 10).unwrap()), [3]);
        assert_eq!(w.keys_changed(2, 3, "", None).unwrap(), ["c"]);
        assert!(w.keys_changed(1, 3, "", None).is_none());
        assert!(w.keys_changed(2, 4, "", None).is_none(), "not yet in the window");
    }

    #[test]
    fn a_change_is_parsed_once_for_every_reader() {
        let c = Change::new(
            "k".into(),
            None,
            Some(Stored { create_revision: 1, mod_revision: 1, value: "{}".into() }),
        );
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let parse = |v: &str| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            serde_json::from_str::<serde_json::Value>(v)
        };
        let first = c.parsed(parse).unwrap().clone();
        let second = c.parsed(parse).unwrap().clone();
        assert_eq!(first, second);
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(c, c.clone(), "the parse does not change what the change is");
    }
}
