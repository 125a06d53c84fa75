//! The patch formats of the Kubernetes API, as pure functions on JSON: JSON merge patch
//! (RFC 7386), JSON patch (RFC 6902) and the merge of server-side apply.

use serde_json::{Map, Value};

/// Most operations in one JSON patch (as Kubernetes).
pub const MAX_JSON_PATCH_OPS: usize = 10_000;
/// Largest document a JSON patch may build along the way, in (roughly) serialized bytes: a
/// few whole-document `copy`s would otherwise double memory each.
pub const MAX_DOCUMENT_BYTES: usize = 8 * 1024 * 1024;
/// Deepest nesting any document may reach: below the 128 levels of serde_json, so every
/// recursive walk (validation, serialization, drop) stays far from the stack's end.
pub const MAX_DEPTH: usize = 100;

/// The size of `v` in roughly serialized bytes, and its depth, walked without recursion (so a
/// hostile document cannot overflow the stack while being measured).
pub fn measure(v: &Value) -> (usize, usize) {
    let mut bytes = 0usize;
    let mut deepest = 0usize;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        bytes = bytes.saturating_add(match v {
            Value::Null | Value::Bool(_) | Value::Number(_) => 8,
            Value::String(s) => s.len() + 2,
            Value::Array(a) => {
                stack.extend(a.iter().map(|x| (x, depth + 1)));
                2 + a.len()
            }
            Value::Object(m) => {
                stack.extend(m.values().map(|x| (x, depth + 1)));
                2 + m.keys().map(|k| k.len() + 4).sum::<usize>()
            }
        });
    }
    (bytes, deepest)
}

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch document is not of its format.
    #[error("the patch is malformed: {0}")]
    Malformed(String),
    /// The patch or what it builds is over a bound.
    #[error("the patch is too large: {0}")]
    TooLarge(String),
    /// A JSON patch operation failed (a `test` that did not hold, a path that is not there).
    #[error("operation {index} ({op} {path}) failed: {reason}")]
    Failed {
        /// Position of the operation in the patch.
        index: usize,
        /// Its `op`.
        op: String,
        /// Its `path`.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Applies a JSON merge patch (RFC 7386) to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let map = target.as_object_mut().expect("made an object above");
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Unescapes one JSON pointer token (RFC 6901).
fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("{path:?} is not a JSON pointer (it must start with /)"))?;
    Ok(rest.split('/').map(unescape).collect())
}

fn get<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(doc, |v, t| match v {
        Value::Object(m) => m.get(t),
        Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn get_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens.iter().try_fold(doc, |v, t| match v {
        Value::Object(m) => m.get_mut(t),
        Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

fn add(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent) {
        Some(Value::Object(m)) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>().map_err(|_| format!("{last:?} is not an array index"))?
            };
            if i > a.len() {
                return Err(format!("index {i} is past the end of the array ({} items)", a.len()));
            }
            a.insert(i, value);
            Ok(())
        }
        Some(_) => Err("the parent is neither an object nor an array".into()),
        None => Err("the parent does not exist".into()),
    }
}

fn remove(doc: &mut Value, tokens: &[String]) -> Result<Value, String> {
    let Some((last, parent)) = tokens.split_last() else {
        return Err("cannot remove the whole document".into());
    };
    match get_mut(doc, parent) {
        Some(Value::Object(m)) => m.remove(last).ok_or_else(|| "the path does not exist".into()),
        Some(Value::Array(a)) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err("the path does not exist".into()),
        },
        _ => Err("the path does not exist".into()),
    }
}

/// Applies a JSON patch (RFC 6902) to `target`, all or nothing, within
/// [`MAX_JSON_PATCH_OPS`], [`MAX_DOCUMENT_BYTES`] and [`MAX_DEPTH`].
///
/// One leniency, which Kubernetes has too and kube-rs's finalizer helper relies on: a `test`
/// that the value is `null` holds when the path is absent. A failed `test` does not show the
/// value it found (errors never repeat stored values).
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| PatchError::Malformed("a JSON patch is an array of operations".into()))?;
    if ops.len() > MAX_JSON_PATCH_OPS {
        return Err(PatchError::TooLarge(format!(
            "{} operations, more than the limit of {MAX_JSON_PATCH_OPS}",
            ops.len()
        )));
    }
    // What the document may grow to: every value added counts in full, nothing removed is
    // taken back, so the bound holds whatever the order of operations.
    let mut size = measure(target).0;
    let mut doc = target.clone();
    for (index, op) in ops.iter().enumerate() {
        let field = |name: &str| op.get(name).and_then(Value::as_str).map(str::to_owned);
        let name =
            field("op").ok_or_else(|| PatchError::Malformed(format!("operation {index} has no \"op\"")))?;
        let path = field("path")
            .ok_or_else(|| PatchError::Malformed(format!("operation {index} has no \"path\"")))?;
        let fail =
            |reason: String| PatchError::Failed { index, op: name.clone(), path: path.clone(), reason };
        let tokens = split_pointer(&path).map_err(fail)?;
        let mut grow = |v: &Value| -> Result<(), PatchError> {
            let (bytes, depth) = measure(v);
            size = size.saturating_add(bytes);
            if size > MAX_DOCUMENT_BYTES {
                return Err(PatchError::TooLarge(format!(
                    "operation {index} grows the document past {MAX_DOCUMENT_BYTES} bytes"
                )));
            }
            if tokens.len() + depth > MAX_DEPTH {
                return Err(PatchError::TooLarge(format!(
                    "operation {index} nests the document deeper than {MAX_DEPTH} levels"
                )));
            }
            Ok(())
        };
        let value = || op.get("value").cloned().ok_or_else(|| fail("it has no \"value\"".into()));
        let from = || -> Result<Vec<String>, PatchError> {
            let from = field("from").ok_or_else(|| fail("it has no \"from\"".into()))?;
            split_pointer(&from).map_err(fail)
        };
        match name.as_str() {
            "add" => {
                let v = value()?;
                grow(&v)?;
                add(&mut doc, &tokens, v).map_err(fail)?;
            }
            "remove" => drop(remove(&mut doc, &tokens).map_err(fail)?),
            "replace" => {
                let v = value()?;
                grow(&v)?;
                let slot =
                    get_mut(&mut doc, &tokens).ok_or_else(|| fail("the path does not exist".into()))?;
                *slot = v;
            }
            "move" => {
                let from = from()?;
                if tokens.len() > from.len() && tokens.starts_with(&from) {
                    return Err(fail(
                        "\"from\" is a parent of \"path\": a value cannot move into itself".into(),
                    ));
                }
                let v = remove(&mut doc, &from).map_err(fail)?;
                // Moved, not copied: only its new depth can break a bound.
                if tokens.len() + measure(&v).1 > MAX_DEPTH {
                    return Err(PatchError::TooLarge(format!(
                        "operation {index} nests the document deeper than {MAX_DEPTH} levels"
                    )));
                }
                add(&mut doc, &tokens, v).map_err(fail)?;
            }
            "copy" => {
                let v = get(&doc, &from()?).ok_or_else(|| fail("\"from\" does not exist".into()))?;
                grow(v)?;
                let v = v.clone();
                add(&mut doc, &tokens, v).map_err(fail)?;
            }
            "test" => {
                let want = value()?;
                let holds = match get(&doc, &tokens) {
                    Some(v) => *v == want,
                    None => want.is_null(),
                };
                if !holds {
                    return Err(fail("test failed: the value there is not the one given".into()));
                }
            }
            other => return Err(PatchError::Malformed(format!("operation {index}: unknown op {other:?}"))),
        }
    }
    *target = doc;
    Ok(())
}

/// The field set of an applied configuration, in Kubernetes' `FieldsV1` form
/// (`{"f:spec": {"f:replicas": {}}}`). Lists and scalars are leaves (atomic).
pub fn fields_of(config: &Value) -> Value {
    let Value::Object(map) = config else { return Value::Object(Map::new()) };
    let mut out = Map::new();
    for (k, v) in map {
        out.insert(format!("f:{k}"), if v.is_object() { fields_of(v) } else { Value::Object(Map::new()) });
    }
    Value::Object(out)
}

/// Server-side apply: removes from `live` the fields `previous` (the manager's last applied
/// field set) had that `config` no longer has, then merges `config` into `live` (objects
/// merge key by key; lists and scalars are replaced).
pub fn apply(live: &mut Value, config: &Value, previous: Option<&Value>) {
    if let Some(previous) = previous {
        drop_released(live, previous, &fields_of(config));
    }
    merge_config(live, config);
}

fn drop_released(live: &mut Value, previous: &Value, now: &Value) {
    let (Some(live), Some(previous)) = (live.as_object_mut(), previous.as_object()) else { return };
    for (fk, sub) in previous {
        let Some(k) = fk.strip_prefix("f:") else { continue };
        match now.get(fk) {
            None => {
                live.remove(k);
            }
            Some(now_sub) => {
                if let Some(child) = live.get_mut(k) {
                    drop_released(child, sub, now_sub);
                }
            }
        }
    }
}

fn merge_config(live: &mut Value, config: &Value) {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            for (k, v) in c {
                match l.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge_config(existing, v),
                    _ => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (live, config) => *live = config.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null, "h": 1}, "l": [3]}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e", "h": 1}, "l": [3]}));
    }

    #[test]
    fn json_patch_applies_every_op_or_none() {
        let mut doc = json!({"metadata": {"name": "a"}, "spec": {"list": [1, 2]}});
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/spec/list/-", "value": 3},
                {"op": "replace", "path": "/metadata/name", "value": "b"},
                {"op": "copy", "from": "/metadata/name", "path": "/spec/copied"},
                {"op": "move", "from": "/spec/copied", "path": "/spec/moved"},
                {"op": "remove", "path": "/spec/list/0"},
                {"op": "test", "path": "/spec/moved", "value": "b"},
                {"op": "add", "path": "/metadata/a~1b", "value": true},
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"name": "b", "a/b": true}, "spec": {"list": [2, 3], "moved": "b"}})
        );
        let before = doc.clone();
        let err = json_patch(
            &mut doc,
            &json!([{"op": "add", "path": "/x", "value": 1}, {"op": "test", "path": "/x", "value": 2}]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("test failed"), "{err}");
        assert_eq!(doc, before, "a failed patch changes nothing");
    }

    #[test]
    fn test_for_null_on_an_absent_path_holds() {
        // kube-rs's finalizer helper adds the first finalizer this way.
        let mut doc = json!({"metadata": {"name": "a"}});
        json_patch(
            &mut doc,
            &json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
            ]),
        )
        .unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["f"]));
    }

    #[test]
    fn bad_json_patches_say_what_is_wrong() {
        let mut doc = json!({});
        for (patch, needle) in [
            (json!({"op": "add"}), "array of operations"),
            (json!([{"path": "/a"}]), "no \"op\""),
            (json!([{"op": "frobnicate", "path": "/a"}]), "unknown op"),
            (json!([{"op": "replace", "path": "/a", "value": 1}]), "does not exist"),
            (json!([{"op": "add", "path": "a", "value": 1}]), "JSON pointer"),
        ] {
            let err = json_patch(&mut doc, &patch).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} lacks {needle}");
        }
    }

    #[test]
    fn apply_merges_and_releases_fields_the_manager_dropped() {
        let mut live = json!({"spec": {"replicas": 1, "image": "a", "env": [1]}, "status": {"x": 1}});
        let first = json!({"spec": {"replicas": 2, "env": [2]}});
        apply(&mut live, &first, None);
        assert_eq!(live, json!({"spec": {"replicas": 2, "image": "a", "env": [2]}, "status": {"x": 1}}));
        // The manager stops setting env: it goes; image was never theirs and stays.
        apply(&mut live, &json!({"spec": {"replicas": 3}}), Some(&fields_of(&first)));
        assert_eq!(live, json!({"spec": {"replicas": 3, "image": "a"}, "status": {"x": 1}}));
    }
}
