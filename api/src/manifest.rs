//! Reading manifests: multi-document YAML (or JSON) into objects, and checking each against
//! its kind.
//!
//! YAML is read with `serde-saphyr` under strict settings: YAML 1.2 booleans only (`no` stays
//! the string "no", not false), duplicate keys rejected, numbers with leading zeros or
//! underscores kept as strings, and budgets that stop alias bombs and deep nesting.

use serde_json::Value;

use crate::API_VERSION;
use crate::kinds;
use crate::object::KindInfo;
use crate::validation::{FieldError, FieldPath};

/// Largest manifest file accepted (bytes).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Most documents in one file.
pub const MAX_DOCUMENTS: usize = 1024;

/// A YAML document that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    /// Line (1-based) where the problem is, when known.
    pub line: Option<usize>,
    /// Column (1-based), when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl YamlError {
    /// `line 3 column 7: …`, or just the message.
    pub fn located(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("line {l} column {c}: {}", self.message),
            (Some(l), None) => format!("line {l}: {}", self.message),
            _ => self.message.clone(),
        }
    }
}

fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_documents: MAX_DOCUMENTS,
            max_depth: 64,
            max_nodes: 200_000,
            max_aliases: 1_000,
            max_total_scalar_bytes: MAX_MANIFEST_BYTES,
        },
    }
}

/// Parses every non-empty document of a YAML (or JSON) text.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, YamlError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(YamlError {
            line: None,
            column: None,
            message: format!("{} bytes is more than the limit of {MAX_MANIFEST_BYTES}", text.len()),
        });
    }
    serde_saphyr::from_multiple_with_options::<Value>(text, yaml_options()).map_err(|e| {
        let loc = e.location();
        let message = plain_message(&e.without_snippet().to_string());
        YamlError {
            line: loc.as_ref().map(|l| l.line() as usize).filter(|&l| l > 0),
            column: loc.as_ref().map(|l| l.column() as usize).filter(|&c| c > 0),
            message,
        }
    })
}

/// Where each field of a document is: field path (as [`FieldError::path`] writes it) → the
/// 1-based line of its value, for errors that say file, document, line and field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lines(std::collections::BTreeMap<String, usize>);

impl Lines {
    /// The line of the field at `path`, or of its nearest ancestor the document has (a
    /// missing field is reported where its parent is).
    pub fn of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(&line) = self.0.get(p) {
                return Some(line);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// A document as a tree of located nodes (read with the same options as
/// [`parse_documents`], so the documents line up).
#[derive(Default)]
struct Located(Vec<(Step, serde_saphyr::Spanned<Located>)>);

enum Step {
    Key(String),
    Index(usize),
}

impl<'de> serde::Deserialize<'de> for Located {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Located;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Located, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<serde_json::Value>()? {
                    let key = k.as_str().map_or_else(|| k.to_string(), str::to_owned);
                    out.push((Step::Key(key), map.next_value()?));
                }
                Ok(Located(out))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Located, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push((Step::Index(out.len()), v));
                }
                Ok(Located(out))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Located, E> {
                Ok(Located::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Located, E> {
                Ok(Located::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Located, E> {
                Ok(Located::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Located, E> {
                Ok(Located::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Located, E> {
                Ok(Located::default())
            }
            fn visit_unit<E>(self) -> Result<Located, E> {
                Ok(Located::default())
            }
            fn visit_none<E>(self) -> Result<Located, E> {
                Ok(Located::default())
            }
        }
        d.deserialize_any(V)
    }
}

impl Located {
    fn collect(&self, prefix: &FieldPath, out: &mut std::collections::BTreeMap<String, usize>) {
        for (step, child) in &self.0 {
            let path = match step {
                Step::Key(k) => prefix.child(k),
                Step::Index(i) => prefix.index(*i),
            };
            out.insert(path.to_string(), child.referenced.line() as usize);
            child.value.collect(&path, out);
        }
    }
}

/// The [`Lines`] of every non-empty document of `text`, in the order of
/// [`parse_documents`] (empty when the text does not parse).
pub fn document_lines(text: &str) -> Vec<Lines> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Vec::new();
    }
    let docs = serde_saphyr::from_multiple_with_options::<Located>(text, yaml_options()).unwrap_or_default();
    docs.iter()
        .map(|d| {
            let mut lines = std::collections::BTreeMap::new();
            d.collect(&FieldPath::root(), &mut lines);
            Lines(lines)
        })
        .collect()
}

/// The parser's message without what we say ourselves (the location, which we prefix) or
/// what is advice to the parser's programmer rather than to the user.
fn plain_message(raw: &str) -> String {
    let first = raw.lines().next().unwrap_or_default();
    let mut msg = match first.find(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    if let Some(i) = msg.find(", set DuplicateKeyPolicy") {
        msg = &msg[..i];
    }
    if msg.contains("budget breached") {
        format!("document too large, too deeply nested or too many aliases (an alias bomb?): {msg}")
    } else {
        msg.to_owned()
    }
}

/// The kind of `object` per its `apiVersion` and `kind`, or the errors that say why not.
pub fn kind_of(object: &Value) -> Result<&'static KindInfo, Vec<FieldError>> {
    let root = FieldPath::root();
    let Some(map) = object.as_object() else {
        return Err(vec![
            root.error("a manifest must be a mapping with apiVersion, kind, metadata and spec"),
        ]);
    };
    let mut errors = Vec::new();
    let kind = match map.get("kind") {
        None => {
            errors.push(root.child("kind").error(format!("required: one of {}", kind_names())));
            None
        }
        Some(Value::String(k)) => {
            let found = kinds::by_kind(k);
            if found.is_none() {
                let hint = kinds::lookup(k)
                    .map(|info| format!(" (did you mean {}?)", info.kind))
                    .unwrap_or_default();
                errors.push(
                    root.child("kind").error(format!("unknown kind {k:?}{hint}: one of {}", kind_names())),
                );
            }
            found
        }
        Some(v) => {
            errors.push(root.child("kind").error(format!("must be a string, not {}", short(v))));
            None
        }
    };
    // Each kind has its group version (the univrs kinds `univrs.io/v1`, Event
    // `events.k8s.io/v1`); without a known kind, the univrs one is what to write.
    let want = kind.map_or(API_VERSION, |k| k.api_version);
    match map.get("apiVersion") {
        None => errors.insert(0, root.child("apiVersion").error(format!("required: set apiVersion: {want}"))),
        Some(Value::String(v)) if v == want => {}
        Some(v) => errors.insert(
            0,
            root.child("apiVersion").error(format!(
                "unknown apiVersion {}: {} is {want}",
                short(v),
                kind.map_or("a univrs kind", |k| k.kind)
            )),
        ),
    }
    match kind {
        Some(k) if errors.is_empty() => Ok(k),
        _ => Err(errors),
    }
}

/// Checks `object` completely: known apiVersion and kind, every field typed and valid.
pub fn check(object: &Value) -> Result<&'static KindInfo, Vec<FieldError>> {
    let kind = kind_of(object)?;
    if is_valid(kind, object) {
        return Ok(kind);
    }
    let mut errors = crate::unknown_fields::unknown_field_errors(crate::schema::of(kind), object);
    errors.extend(problems(kind, object));
    if errors.is_empty() { Ok(kind) } else { Err(errors) }
}

/// Whether `object` is a valid object of `kind`, with no unknown field: one pass of the schema
/// that stops at the first problem, and the typed check. The common case costs only that; what
/// is wrong, and where, is for [`check`] and [`problems`] to say.
///
/// An object the schema accepts has no field the unknown-field walk (`unknown_fields`) would
/// report: the walk reports a key only where every schema that may apply closes its
/// properties (`additionalProperties: false`) without it, which the validator refuses too;
/// the kinds' schemas use no keyword that admits a key the walk does not read (such as
/// `patternProperties`), which `api/tests/schemas.rs` checks.
pub fn is_valid(kind: &KindInfo, object: &Value) -> bool {
    crate::schema::validator(kind).is_valid(object) && (kind.check)(object).is_ok()
}

/// Every problem of `object` as an object of `kind` beyond unknown fields: the JSON Schema's
/// (every one, hinted, without values), and the typed validation's of the rest (the object
/// without its unknown fields and the fields the schema refused, so that a wrong type in one
/// place hides no problem elsewhere). What `ui sign`, `ui apply` and the apiserver report, in
/// the same words.
pub fn problems(kind: &KindInfo, object: &Value) -> Vec<FieldError> {
    // The common case, valid, costs one schema pass and one typed check, no copy.
    if is_valid(kind, object) {
        return Vec::new();
    }
    let located = crate::schema::located_errors(kind, object);
    if located.is_empty() && (kind.check)(object).is_ok() {
        return Vec::new();
    }
    let mut rest = object.clone();
    crate::unknown_fields::prune_unknown_fields(crate::schema::of(kind), &mut rest);
    for (tokens, _) in &located {
        if let Some((last, parent)) = tokens.split_last() {
            let pointer: String =
                parent.iter().map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1"))).collect();
            match rest.pointer_mut(&pointer) {
                Some(Value::Object(m)) => drop(m.remove(last)),
                Some(Value::Array(a)) => {
                    if let Ok(i) = last.parse::<usize>()
                        && i < a.len()
                    {
                        a[i] = Value::Null;
                    }
                }
                _ => {}
            }
        }
    }
    let mut errors: Vec<FieldError> = located.into_iter().map(|(_, e)| e).collect();
    let covered = |path: &str| {
        errors.iter().any(|e| {
            path == e.path
                || path.strip_prefix(e.path.as_str()).is_some_and(|r| r.starts_with(['.', '[']))
                || e.path.strip_prefix(path).is_some_and(|r| r.starts_with(['.', '[']))
        })
    };
    let typed: Vec<FieldError> =
        (kind.check)(&rest).err().unwrap_or_default().into_iter().filter(|e| !covered(&e.path)).collect();
    errors.extend(typed);
    errors
}

fn kind_names() -> String {
    kinds::KINDS.iter().map(|k| k.kind).collect::<Vec<_>>().join(", ")
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 { format!("{}…", &s[..s.floor_char_boundary(40)]) } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_multiple_documents_and_skips_empty_ones() {
        let docs = parse_documents("a: 1\n---\n---\nb: [x, y]\n").unwrap();
        assert_eq!(docs, vec![serde_json::json!({"a": 1}), serde_json::json!({"b": ["x", "y"]})]);
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let docs =
            parse_documents("country: no\nflag: yes\non: off\nreal: true\nmode: 0755\nn: 1_000\n").unwrap();
        assert_eq!(
            docs[0],
            serde_json::json!({"country": "no", "flag": "yes", "on": "off", "real": true, "mode": "0755", "n": "1_000"})
        );
    }

    #[test]
    fn duplicate_keys_are_refused_with_a_line() {
        let err = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(err.message.to_lowercase().contains("duplicate"), "{err:?}");
        assert_eq!(err.line, Some(3));
    }

    #[test]
    fn alias_bombs_are_stopped() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = parse_documents(&bomb).unwrap_err();
        assert!(err.message.to_lowercase().contains("budget") || err.message.contains("alias"), "{err:?}");
    }

    #[test]
    fn deep_nesting_is_stopped() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_documents(&deep).is_err());
    }

    #[test]
    fn malformed_yaml_names_the_line() {
        let err = parse_documents("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(err.line.is_some(), "{err:?}");
    }

    #[test]
    fn unknown_kind_and_api_version_are_named() {
        let errs = kind_of(&serde_json::json!({"apiVersion": "v1", "kind": "Pod"})).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(text[0].starts_with("apiVersion: unknown apiVersion \"v1\""), "{text:?}");
        assert!(text[1].starts_with("kind: unknown kind \"Pod\""), "{text:?}");
        let errs =
            kind_of(&serde_json::json!({"apiVersion": "univrs.io/v1", "kind": "workloads"})).unwrap_err();
        assert!(errs[0].message.contains("did you mean Workload?"), "{errs:?}");
    }

    #[test]
    fn every_field_has_the_line_of_its_value() {
        let text =
            "a: 1\n---\napiVersion: univrs.io/v1\nspec:\n  env:\n  - name: A\n    value: x\n  replicas: 2\n";
        let lines = document_lines(text);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].of("spec.replicas"), Some(8));
        assert_eq!(lines[1].of("spec.env[0].value"), Some(7));
        // A missing field: where its parent is.
        assert_eq!(lines[1].of("spec.env[0].missing"), Some(6));
        assert_eq!(lines[0].of("a"), Some(1));
    }

    #[test]
    fn typed_errors_name_the_field_path() {
        let obj = serde_json::json!({
            "apiVersion": "univrs.io/v1", "kind": "Workload", "metadata": {"name": "w"},
            "spec": {"image": "busybox", "env": [{"name": "A", "value": 5}]}
        });
        let errs = check(&obj).unwrap_err();
        assert_eq!(errs[0].path, "spec.env[0].value", "{errs:?}");
        let obj = serde_json::json!({
            "apiVersion": "univrs.io/v1", "kind": "Workload", "metadata": {"name": "w"},
            "spec": {"image": "busybox", "replica": 3}
        });
        let errs = check(&obj).unwrap_err();
        assert_eq!(errs[0].path, "spec.replica", "{errs:?}");
        assert!(errs[0].message.starts_with("unknown field (known here: replicas, image"), "{errs:?}");
    }

    #[test]
    fn validation_reports_every_problem() {
        let obj = serde_json::json!({
            "apiVersion": "univrs.io/v1", "kind": "Workload", "metadata": {"name": "Bad"},
            "spec": {"replicas": -1}
        });
        let errs: Vec<String> = check(&obj).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(
            errs,
            [
                "metadata.name: \"Bad\" is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
                "spec.replicas: must be >= 0",
                "spec.image: required: set image or rootfs",
            ]
        );
    }

    #[test]
    fn cluster_scoped_kinds_refuse_a_namespace() {
        let obj = serde_json::json!({
            "apiVersion": "univrs.io/v1", "kind": "Attestation", "metadata": {"name": "a", "namespace": "default"},
            "spec": {"subjectKind": "Node", "subject": "node-1"}
        });
        let errs = check(&obj).unwrap_err();
        assert_eq!(errs[0].path, "metadata.namespace");
    }
}
