//! The label index: which keys carry which label values, so that a list by label reads only
//! the objects that may match rather than every object of the kind (as kube-apiserver's watch
//! cache serves lists by label from memory instead of etcd).
//!
//! It is a local, in-memory index of the current state, rebuilt from the stored objects when
//! a member opens its state machine or installs a snapshot, and changed with every applied
//! write. It only narrows: the registry still checks every selector on every object it
//! returns, so an index that held too many keys would cost time, never correctness; one that
//! held too few would hide objects, and the tests of the stores compare lists by label with
//! and without it.

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

/// label → value → the keys that carry it.
#[derive(Debug, Default)]
pub struct LabelIndex {
    keys: HashMap<String, HashMap<String, BTreeSet<String>>>,
}

/// The labels of a stored object (its JSON), as `(label, value)` pairs. An object that does
/// not parse, or labels that are not strings, index as nothing: admission never stores them.
pub fn labels_of(value: &str) -> Vec<(String, String)> {
    #[derive(Deserialize)]
    struct Object {
        #[serde(default)]
        metadata: Option<Meta>,
    }
    #[derive(Deserialize)]
    struct Meta {
        #[serde(default)]
        labels: Option<HashMap<String, serde_json::Value>>,
    }
    let Ok(Object { metadata: Some(Meta { labels: Some(labels) }) }) = serde_json::from_str::<Object>(value)
    else {
        return Vec::new();
    };
    labels.into_iter().filter_map(|(k, v)| Some((k, v.as_str()?.to_owned()))).collect()
}

impl LabelIndex {
    /// Records that `key` now carries `added` instead of `removed`.
    pub fn change(&mut self, key: &str, removed: &[(String, String)], added: &[(String, String)]) {
        for (label, value) in removed {
            if added.contains(&(label.clone(), value.clone())) {
                continue;
            }
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
        for (label, value) in added {
            if removed.contains(&(label.clone(), value.clone())) {
                continue;
            }
            let values = self.keys.entry(label.clone()).or_default();
            values.entry(value.clone()).or_default().insert(key.to_owned());
        }
    }

    /// Forgets every key.
    pub fn clear(&mut self) {
        self.keys.clear();
    }

    /// The keys under `prefix` and after `after` whose labels meet `needs`, in key order;
    /// `None` when `needs` is empty (every key may match).
    pub fn candidates(&self, prefix: &str, after: Option<&str>, needs: &LabelNeeds) -> Option<Vec<String>> {
        if needs.is_empty() {
            return None;
        }
        // The keys of one need: a label with one of its values (any value when none is given).
        let sets = |(label, values): &(String, Vec<String>)| -> Vec<&BTreeSet<String>> {
            let Some(by_value) = self.keys.get(label) else { return Vec::new() };
            if values.is_empty() {
                by_value.values().collect()
            } else {
                values.iter().filter_map(|v| by_value.get(v)).collect()
            }
        };
        let mut needs: Vec<Vec<&BTreeSet<String>>> = needs.0.iter().map(sets).collect();
        // The smallest need first: the others are only asked about its keys.
        needs.sort_by_key(|sets| sets.iter().map(|s| s.len()).sum::<usize>());
        let (first, rest) = needs.split_first().expect("needs is not empty");
        let mut out = Vec::new();
        for set in first {
            let from = match after {
                Some(a) if a >= prefix => std::ops::Bound::Excluded(a),
                _ => std::ops::Bound::Included(prefix),
            };
            let keys = set
                .range::<str, _>((from, std::ops::Bound::Unbounded))
                .take_while(|k| k.starts_with(prefix))
                .filter(|k| rest.iter().all(|sets| sets.iter().any(|s| s.contains(k.as_str()))));
            out.extend(keys.cloned());
        }
        // A key has one value per label, so the sets of one need never share a key.
        out.sort_unstable();
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn candidates_are_the_keys_whose_labels_meet_every_need_in_key_order() {
        let index = index(&[
            ("/a/ns/x3", r#"{"metadata":{"labels":{"app":"web","tier":"front"}}}"#),
            ("/a/ns/x1", r#"{"metadata":{"labels":{"app":"web","tier":"back"}}}"#),
            ("/a/ns/x2", r#"{"metadata":{"labels":{"app":"db"}}}"#),
            ("/a/other/x4", r#"{"metadata":{"labels":{"app":"web"}}}"#),
            ("/b/ns/x5", r#"{"metadata":{"labels":{"app":"web"}}}"#),
            ("/a/ns/x6", r#"{"metadata":{"labels":{"app":7}}}"#),
            ("/a/ns/x7", "not json"),
        ]);
        let got = |prefix: &str, after: Option<&str>, s: &str| index.candidates(prefix, after, &needs(s));
        assert_eq!(got("/a/ns/", None, "app=web").unwrap(), ["/a/ns/x1", "/a/ns/x3"]);
        assert_eq!(got("/a/", None, "app=web").unwrap(), ["/a/ns/x1", "/a/ns/x3", "/a/other/x4"]);
        assert_eq!(got("/a/", Some("/a/ns/x1"), "app=web").unwrap(), ["/a/ns/x3", "/a/other/x4"]);
        assert_eq!(got("/a/ns/", None, "app in (web,db)").unwrap(), ["/a/ns/x1", "/a/ns/x2", "/a/ns/x3"]);
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
    fn a_changed_or_deleted_object_moves_out_of_its_old_values() {
        let mut index = index(&[("/k/1", r#"{"metadata":{"labels":{"app":"web","v":"1"}}}"#)]);
        let old = labels_of(r#"{"metadata":{"labels":{"app":"web","v":"1"}}}"#);
        let new = labels_of(r#"{"metadata":{"labels":{"app":"web","v":"2"}}}"#);
        index.change("/k/1", &old, &new);
        assert_eq!(index.candidates("/k/", None, &needs("v=1")).unwrap(), Vec::<String>::new());
        assert_eq!(index.candidates("/k/", None, &needs("v=2,app=web")).unwrap(), ["/k/1"]);
        index.change("/k/1", &new, &[]);
        assert_eq!(index.candidates("/k/", None, &needs("app")).unwrap(), Vec::<String>::new());
        assert!(index.keys.is_empty(), "nothing is left behind: {:?}", index.keys);
    }
}
