//! The label index: which keys carry which label values, so that a list by label reads only
//! the objects that may match rather than every object of the kind (as kube-apiserver's watch
//! cache serves lists by label from memory instead of etcd).
//!
//! It is a local, in-memory index of the current state, rebuilt from the stored objects when
//! a member opens its state machine or installs a snapshot, and brought to the revision of
//! every apply after its commit (the keys whose labels the apply changed), tagged with the
//! revision it describes (a read at another revision does not use it). It only narrows: the
//! registry still checks every selector on every object it returns, so an index that named
//! too many keys would cost time, never correctness; one that named too few would hide
//! objects, and the tests of the stores compare lists by label with and without it.

use std::collections::{BTreeSet, HashMap};

use api::selector::{LabelSelector, Requirement};
use serde::Deserialize;

/// What a list needs of an object's labels to have any chance of selecting it: each label,
/// with the values it may have (empty: any value). Only the requirements that an absent
/// label fails count (`=`, `in`, exists); the others (`!=`, `notin`, `!key`) do not narrow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelNeeds(Vec<(String, Vec<String>)>);

impl LabelNeeds {
    /// The needs of `selector`.
    pub fn of(selector: &LabelSelector) -> Self {
        let needs = selector
            .requirements()
            .iter()
            .filter_map(|r| match r {
                Requirement::Equals(k, v) => Some((k.clone(), vec![v.clone()])),
                Requirement::In(k, vs) => Some((k.clone(), vs.clone())),
                Requirement::Exists(k) => Some((k.clone(), Vec::new())),
                Requirement::NotEquals(..) | Requirement::NotIn(..) | Requirement::DoesNotExist(_) => None,
            })
            .collect();
        Self(needs)
    }

    /// Whether every object may match (nothing to narrow by).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// label → value → the keys that carry it, for the state at one revision.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LabelIndex {
    keys: HashMap<String, HashMap<String, BTreeSet<String>>>,
    /// Objects with more labels than one object may have indexed: every narrowed read visits
    /// them, so the index's size per object stays bounded.
    unindexed: BTreeSet<String>,
    /// The revision of the state it describes: a read whose transaction is at another one
    /// does not use it.
    pub revision: u64,
}

/// At most this many labels of one object are indexed (more: see [`LabelIndex::unindexed`]).
pub const MAX_INDEXED_LABELS: usize = 64;

/// Keys under a prefix that may match, in key order, a batch at a time.
#[derive(Debug, PartialEq, Eq)]
pub struct Candidates {
    /// The next keys.
    pub keys: Vec<String>,
    /// Whether there are none after them.
    pub exhausted: bool,
}

/// The labels of a stored object (its JSON), as `(label, value)` pairs in order (so that two
/// objects' labels compare equal when they are the same). An object that does not parse, or
/// labels that are not strings, index as nothing: admission never stores them. (Stored
/// objects are the apiserver's own valid JSON; in a document invalid after its `metadata`,
/// the labels found before count.)
pub fn labels_of(value: &str) -> Vec<(String, String)> {
    #[derive(Deserialize)]
    struct Meta {
        #[serde(default)]
        labels: Option<HashMap<String, serde_json::Value>>,
    }
    /// Reads the top-level object up to its `metadata` and stops there: the rest (the spec,
    /// the status — most of an object) is not scanned. Stopping leaves the document
    /// unfinished, which the deserializer then calls an error: what was found is kept aside.
    struct UpToMetadata<'a>(&'a mut Option<Meta>);
    impl<'de> serde::de::Visitor<'de> for UpToMetadata<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(IsMetadata(is)) = map.next_key()? {
                if is {
                    *self.0 = map.next_value::<Option<Meta>>()?;
                    return Ok(());
                }
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            Ok(())
        }
    }
    /// A key, without making a String of it: whether it is `metadata`.
    struct IsMetadata(bool);
    impl<'de> Deserialize<'de> for IsMetadata {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Key;
            impl serde::de::Visitor<'_> for Key {
                type Value = IsMetadata;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a key")
                }
                fn visit_str<E>(self, v: &str) -> Result<IsMetadata, E> {
                    Ok(IsMetadata(v == "metadata"))
                }
            }
            d.deserialize_str(Key)
        }
    }
    let mut meta = None;
    let mut de = serde_json::Deserializer::from_str(value);
    let _ = serde::Deserializer::deserialize_map(&mut de, UpToMetadata(&mut meta));
    let Some(Meta { labels: Some(labels) }) = meta else {
        return Vec::new();
    };
    let mut labels: Vec<_> =
        labels.into_iter().filter_map(|(k, v)| Some((k, v.as_str()?.to_owned()))).collect();
    labels.sort_unstable();
    labels
}

impl LabelIndex {
    /// Records that `key`, which carried the labels `removed`, now carries `added` (either
    /// empty when the object did not or does not exist).
    pub fn change(&mut self, key: &str, removed: &[(String, String)], added: &[(String, String)]) {
        if removed.len() > MAX_INDEXED_LABELS {
            self.unindexed.remove(key);
        } else {
            for (label, value) in removed {
                let Some(values) = self.keys.get_mut(label) else { continue };
                if let Some(keys) = values.get_mut(value) {
                    keys.remove(key);
                    if keys.is_empty() {
                        values.remove(value);
                    }
                }
                if values.is_empty() {
                    self.keys.remove(label);
                }
            }
        }
        if added.len() > MAX_INDEXED_LABELS {
            self.unindexed.insert(key.to_owned());
        } else {
            for (label, value) in added {
                let values = self.keys.entry(label.clone()).or_default();
                values.entry(value.clone()).or_default().insert(key.to_owned());
            }
        }
    }

    /// Forgets every key; describes the (empty) state at `revision`.
    pub fn clear(&mut self, revision: u64) {
        self.keys.clear();
        self.unindexed.clear();
        self.revision = revision;
    }

    /// At most `max` of the keys under `prefix` and after `after` that may meet `needs`, in
    /// key order; `None` when `needs` is empty (every key may). Only the most selective need
    /// narrows (the reader checks its whole selector on every key anyway), so the cost is the
    /// keys returned, times the values that need names.
    pub fn candidates(
        &self,
        prefix: &str,
        after: Option<&str>,
        needs: &LabelNeeds,
        max: usize,
    ) -> Option<Candidates> {
        // The keys of one need: a label with one of its values (any value when none is given).
        let sets = |(label, values): &(String, Vec<String>)| -> Vec<&BTreeSet<String>> {
            let Some(by_value) = self.keys.get(label) else { return Vec::new() };
            if values.is_empty() {
                by_value.values().collect()
            } else {
                values.iter().filter_map(|v| by_value.get(v)).collect()
            }
        };
        let mut narrowest =
            needs.0.iter().map(sets).min_by_key(|sets| sets.iter().map(|s| s.len()).sum::<usize>())?;
        narrowest.push(&self.unindexed);
        let from = match after {
            Some(a) if a >= prefix => std::ops::Bound::Excluded(a),
            _ => std::ops::Bound::Included(prefix),
        };
        let mut keys = Vec::new();
        let mut more = false;
        for set in narrowest {
            let mut range =
                set.range::<str, _>((from, std::ops::Bound::Unbounded)).take_while(|k| k.starts_with(prefix));
            keys.extend(range.by_ref().take(max).cloned());
            more |= range.next().is_some();
        }
        // The sets of one need never share a key (a key has one value per label), nor do
        // they share one with the unindexed.
        keys.sort_unstable();
        if keys.len() > max {
            keys.truncate(max);
            more = true;
        }
        Some(Candidates { keys, exhausted: !more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_from_the_top_level_metadata_wherever_it_is() {
        let ab = vec![("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())];
        let first = r#"{"metadata":{"name":"x","labels":{"b":"2","a":"1"}},"spec":{"big":[1,2,3]}}"#;
        assert_eq!(labels_of(first), ab);
        // After the spec, past a `metadata` inside it (not the object's).
        let last = r#"{"spec":{"metadata":{"labels":{"no":"pe"}}},"kind":"K","metadata":{"labels":{"a":"1","b":"2"}}}"#;
        assert_eq!(labels_of(last), ab);
        // An escaped key is the same key.
        assert_eq!(labels_of(r#"{"meta\u0064ata":{"labels":{"a":"1","b":"2"}}}"#), ab);
        // None, null, not strings, not an object: nothing.
        for none in [
            r#"{"spec":{}}"#,
            r#"{"metadata":null}"#,
            r#"{"metadata":{"labels":null}}"#,
            r#"[{"metadata":{"labels":{"a":"1"}}}]"#,
            "not json",
            "",
        ] {
            assert_eq!(labels_of(none), [], "{none}");
        }
        assert_eq!(labels_of(r#"{"metadata":{"labels":{"a":7,"b":"2"}}}"#), [("b".into(), "2".into())]);
        // Reading stops at the metadata: what follows is not looked at.
        assert_eq!(labels_of(r#"{"metadata":{"labels":{"a":"1","b":"2"}},"spec":"#), ab);
        // A broken metadata counts as none.
        assert_eq!(labels_of(r#"{"metadata":{"labels":{"a":"1","b":}}}"#), []);
    }

    fn needs(s: &str) -> LabelNeeds {
        LabelNeeds::of(&LabelSelector::parse(s).unwrap())
    }

    fn index(objects: &[(&str, &str)]) -> LabelIndex {
        let mut index = LabelIndex::default();
        for (key, json) in objects {
            index.change(key, &[], &labels_of(json));
        }
        index
    }

    fn all(index: &LabelIndex, prefix: &str, after: Option<&str>, s: &str) -> Option<Vec<String>> {
        index.candidates(prefix, after, &needs(s), usize::MAX).map(|c| {
            assert!(c.exhausted);
            c.keys
        })
    }

    #[test]
    fn candidates_are_the_keys_that_may_meet_the_narrowest_need_in_key_order() {
        let index = index(&[
            ("/a/ns/x3", r#"{"metadata":{"labels":{"app":"web","tier":"front"}}}"#),
            ("/a/ns/x1", r#"{"metadata":{"labels":{"app":"web","tier":"back"}}}"#),
            ("/a/ns/x2", r#"{"metadata":{"labels":{"app":"db"}}}"#),
            ("/a/other/x4", r#"{"metadata":{"labels":{"app":"web"}}}"#),
            ("/b/ns/x5", r#"{"metadata":{"labels":{"app":"web"}}}"#),
            ("/a/ns/x6", r#"{"metadata":{"labels":{"app":7}}}"#),
            ("/a/ns/x7", "not json"),
        ]);
        let got = |prefix: &str, after: Option<&str>, s: &str| all(&index, prefix, after, s);
        assert_eq!(got("/a/ns/", None, "app=web").unwrap(), ["/a/ns/x1", "/a/ns/x3"]);
        assert_eq!(got("/a/", None, "app=web").unwrap(), ["/a/ns/x1", "/a/ns/x3", "/a/other/x4"]);
        assert_eq!(got("/a/", Some("/a/ns/x1"), "app=web").unwrap(), ["/a/ns/x3", "/a/other/x4"]);
        assert_eq!(got("/a/ns/", None, "app in (web,db)").unwrap(), ["/a/ns/x1", "/a/ns/x2", "/a/ns/x3"]);
        // The narrowest need (tier=front: one key) decides; the reader checks the rest.
        assert_eq!(got("/a/ns/", None, "app=web,tier=front").unwrap(), ["/a/ns/x3"]);
        assert_eq!(got("/a/ns/", None, "tier").unwrap(), ["/a/ns/x1", "/a/ns/x3"]);
        assert_eq!(got("/a/ns/", None, "app=none").unwrap(), Vec::<String>::new());
        assert_eq!(got("/a/ns/", None, "nolabel=x").unwrap(), Vec::<String>::new());
        // Requirements an absent label meets do not narrow.
        assert_eq!(got("/a/ns/", None, "app!=web"), None);
        assert_eq!(got("/a/ns/", None, "!tier,app notin (db)"), None);
        assert_eq!(got("/a/ns/", None, "app!=db,tier=back").unwrap(), ["/a/ns/x1"]);
    }

    #[test]
    fn candidates_come_a_batch_at_a_time() {
        let objects: Vec<(String, String)> = (0..10)
            .map(|i| (format!("/k/{i}"), format!(r#"{{"metadata":{{"labels":{{"v":"{}"}}}}}}"#, i % 2)))
            .collect();
        let refs: Vec<(&str, &str)> = objects.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let index = index(&refs);
        let (mut after, mut seen) = (None, Vec::new());
        loop {
            let c = index.candidates("/k/", after.as_deref(), &needs("v in (0,1)"), 3).unwrap();
            assert!(c.keys.len() <= 3);
            seen.extend(c.keys.iter().cloned());
            after = c.keys.last().cloned();
            if c.exhausted {
                break;
            }
        }
        let expected: Vec<String> = (0..10).map(|i| format!("/k/{i}")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_changed_or_deleted_object_moves_out_of_its_old_values() {
        let mut index = index(&[("/k/1", r#"{"metadata":{"labels":{"app":"web","v":"1"}}}"#)]);
        let old = labels_of(r#"{"metadata":{"labels":{"app":"web","v":"1"}}}"#);
        let new = labels_of(r#"{"metadata":{"labels":{"app":"web","v":"2"}}}"#);
        index.change("/k/1", &old, &new);
        assert_eq!(all(&index, "/k/", None, "v=1").unwrap(), Vec::<String>::new());
        assert_eq!(all(&index, "/k/", None, "v=2,app=web").unwrap(), ["/k/1"]);
        index.change("/k/1", &new, &[]);
        assert_eq!(all(&index, "/k/", None, "app").unwrap(), Vec::<String>::new());
        assert!(index.keys.is_empty(), "nothing is left behind: {:?}", index.keys);
    }

    #[test]
    fn an_object_with_very_many_labels_is_visited_by_every_narrowed_read() {
        let many: serde_json::Map<String, serde_json::Value> =
            (0..=MAX_INDEXED_LABELS).map(|i| (format!("l{i}"), "x".into())).collect();
        let many = serde_json::json!({ "metadata": { "labels": many } }).to_string();
        let mut index = index(&[("/k/big", &many), ("/k/small", r#"{"metadata":{"labels":{"a":"1"}}}"#)]);
        assert!(!index.keys.contains_key("l0"), "not indexed label by label");
        assert_eq!(all(&index, "/k/", None, "a=1").unwrap(), ["/k/big", "/k/small"]);
        assert_eq!(all(&index, "/k/", None, "l3=x").unwrap(), ["/k/big"]);
        index.change("/k/big", &labels_of(&many), &[]);
        assert_eq!(all(&index, "/k/", None, "l3=x").unwrap(), Vec::<String>::new());
        assert!(index.unindexed.is_empty());
    }
}
