//! `schemas/` is generated from the Rust types, committed, and checked here; every example in
//! `manifests/` must satisfy both its schema and the typed validation.
//!
//! To regenerate after changing a type: `cargo test -p api --test schemas`. Outside CI a
//! stale file is rewritten and the test fails once, telling you to commit the new file
//! (rust-analyzer's `ensure_file_contents`); in CI (`CI` set) it only fails.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use api::kinds::KINDS;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The file name of a kind's schema.
fn schema_file(kind: &str) -> String {
    format!("{}.json", kind.to_lowercase())
}

fn schema_text(kind: &api::KindInfo) -> String {
    let mut text = serde_json::to_string_pretty(&(kind.schema)()).unwrap();
    text.push('\n');
    text
}

#[test]
fn schemas_are_fresh() {
    let dir = workspace().join("schemas");
    let mut stale = Vec::new();
    for kind in &KINDS {
        let path = dir.join(schema_file(kind.kind));
        let want = schema_text(kind);
        if fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            if std::env::var_os("CI").is_none() {
                fs::create_dir_all(&dir).unwrap();
                fs::write(&path, &want).unwrap();
            }
            stale.push(format!("schemas/{}", schema_file(kind.kind)));
        }
    }
    let expected: BTreeSet<String> = KINDS.iter().map(|k| schema_file(k.kind)).collect();
    let extra: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json") && !expected.contains(name))
        .collect();
    assert!(extra.is_empty(), "schemas/ has files for no kind: {extra:?}; delete them");
    assert!(stale.is_empty(), "stale schemas (rewritten now unless CI is set; commit them): {stale:?}");
}

#[test]
fn schemas_are_valid_json_schema() {
    for kind in &KINDS {
        let schema = serde_json::to_value((kind.schema)()).unwrap();
        jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{}: {e}", kind.kind));
    }
}

fn manifest_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            manifest_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
            out.push(path);
        }
    }
}

#[test]
fn every_example_manifest_matches_its_schema_and_validates() {
    let mut files = Vec::new();
    manifest_files(&workspace().join("manifests"), &mut files);
    let mut kinds_seen = BTreeSet::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        let docs = api::manifest::parse_documents(&text)
            .unwrap_or_else(|e| panic!("{}: {}", file.display(), e.located()));
        for (i, doc) in docs.iter().enumerate() {
            let at = format!("{} document {}", file.display(), i + 1);
            let kind = api::manifest::check(doc).unwrap_or_else(|errs| panic!("{at}: {errs:?}"));
            let schema = serde_json::to_value((kind.schema)()).unwrap();
            let validator = jsonschema::validator_for(&schema).unwrap();
            let errors: Vec<String> =
                validator.iter_errors(doc).map(|e| format!("{}: {e}", e.instance_path())).collect();
            assert!(errors.is_empty(), "{at}: {errors:?}");
            kinds_seen.insert(kind.kind);
        }
    }
    for kind in
        ["Workload", "TrustPolicy", "NodeOffer", "CreditGrant", "Attestation", "Transfer", "AgentGrant"]
    {
        assert!(kinds_seen.contains(kind), "manifests/ has no example of {kind}");
    }
}

#[test]
fn schema_and_typed_validation_agree_on_bad_input() {
    // A wrong type and an unknown field are refused by both layers.
    let bad = [
        serde_json::json!({"apiVersion": "univrs.io/v1", "kind": "Workload", "metadata": {"name": "w"},
                           "spec": {"image": "x", "replicas": "three"}}),
        serde_json::json!({"apiVersion": "univrs.io/v1", "kind": "Workload", "metadata": {"name": "w"},
                           "spec": {"image": "x", "replicaz": 1}}),
        serde_json::json!({"apiVersion": "univrs.io/v1", "kind": "Workload", "metadata": {"name": "w"},
                           "spec": {"image": "x", "resources": {"cpu": "lots"}}}),
    ];
    let kind = api::kinds::by_kind("Workload").unwrap();
    let validator = jsonschema::validator_for(&serde_json::to_value((kind.schema)()).unwrap()).unwrap();
    for doc in &bad {
        assert!(!validator.is_valid(doc), "schema accepted {doc}");
        assert!(api::manifest::check(doc).is_err(), "typed check accepted {doc}");
    }
}

/// What in `node` and below could make the schema accept a key the unknown-field walk
/// (`api::unknown_fields`) reports: the walk reads `properties`, `additionalProperties`,
/// `items`, `anyOf`/`oneOf`/`allOf` and `$ref`s into `$defs`, and takes a key as unknown where
/// every object schema that may apply closes its properties. So: no keyword that admits keys
/// otherwise, no object schema left open, no alternative that accepts anything (`true`, `{}`,
/// or one with nothing that constrains a value), and every `$ref` one the walk resolves.
fn open_to_unknown_keys(root: &serde_json::Value, node: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    const UNREAD: [&str; 9] = [
        "patternProperties",
        "unevaluatedProperties",
        "dependentSchemas",
        "$dynamicRef",
        "propertyNames",
        "if",
        "then",
        "else",
        "not",
    ];
    const CONSTRAINING: [&str; 9] =
        ["type", "$ref", "const", "enum", "properties", "anyOf", "oneOf", "allOf", "additionalProperties"];
    let Value::Object(map) = node else { return };
    for k in UNREAD {
        if map.contains_key(k) {
            out.push(format!("{at}: uses {k}"));
        }
    }
    if let Some(r) = map.get("$ref").and_then(Value::as_str)
        && !r.starts_with("#/$defs/")
    {
        out.push(format!("{at}: a $ref the walk does not resolve: {r}"));
    }
    let object_typed = map
        .get("type")
        .is_some_and(|t| t == "object" || t.as_array().is_some_and(|a| a.contains(&Value::from("object"))));
    if (map.contains_key("properties") || object_typed)
        && !matches!(map.get("additionalProperties"), Some(Value::Bool(false) | Value::Object(_)))
    {
        out.push(format!("{at}: an object schema without additionalProperties false or a schema"));
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        for (i, alt) in map.get(combinator).and_then(Value::as_array).into_iter().flatten().enumerate() {
            // What a `$ref` names, as the walk resolves it.
            let alt = match alt.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
                Some(name) => root.get("$defs").and_then(|d| d.get(name)).unwrap_or(alt),
                None => alt,
            };
            let open = match alt {
                Value::Bool(_) => true,
                Value::Object(a) => !CONSTRAINING.iter().any(|k| a.contains_key(*k)),
                _ => false,
            };
            if open {
                out.push(format!("{at}/{combinator}/{i}: an alternative that accepts anything"));
            }
        }
    }
    for (k, v) in map {
        let at = format!("{at}/{k}");
        // Under `properties` and `$defs` the keys are names; each value is a schema.
        // Values, not schemas.
        if matches!(k.as_str(), "const" | "enum" | "default" | "examples" | "required") {
            continue;
        }
        if k == "properties" || k == "$defs" {
            for (name, sub) in v.as_object().into_iter().flatten() {
                open_to_unknown_keys(root, sub, &format!("{at}/{name}"), out);
            }
        } else if let Value::Array(items) = v {
            for (i, sub) in items.iter().enumerate() {
                open_to_unknown_keys(root, sub, &format!("{at}/{i}"), out);
            }
        } else {
            open_to_unknown_keys(root, v, &at, out);
        }
    }
}

#[test]
fn the_schemas_admit_no_key_the_unknown_field_walk_would_report() {
    // `manifest::is_valid` skips the unknown-field walk for an object its schema accepts:
    // sound only while no schema admits a key the walk reports as unknown.
    for kind in &KINDS {
        let schema = serde_json::to_value((kind.schema)()).unwrap();
        let mut found = Vec::new();
        open_to_unknown_keys(&schema, &schema, "", &mut found);
        assert!(found.is_empty(), "{}'s schema: {found:#?}", kind.kind);
    }
    // And the check finds each way a schema can be open.
    let open = [
        serde_json::json!({"type": "object", "properties": {"a": {"type": "string"}}}),
        serde_json::json!({"anyOf": [{"type": "object", "properties": {}, "additionalProperties": false}, {}]}),
        serde_json::json!({"oneOf": [true]}),
        serde_json::json!({"type": "object", "additionalProperties": false, "patternProperties": {"^x": {}}}),
        serde_json::json!({"$ref": "other.json#/x"}),
        serde_json::json!({"$defs": {"A": {"type": "object"}}}),
        serde_json::json!({"$defs": {"A": {"description": "anything"}}, "anyOf": [{"$ref": "#/$defs/A"}]}),
    ];
    for schema in open {
        let mut found = Vec::new();
        open_to_unknown_keys(&schema, &schema, "", &mut found);
        assert!(!found.is_empty(), "not found open: {schema}");
    }
}

/// Every object of `doc` (by JSON pointer), the root included.
fn object_pointers(doc: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match doc {
        serde_json::Value::Object(map) => {
            out.push(at.clone());
            for (k, v) in map {
                object_pointers(v, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                object_pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_quick_validity_check_agrees_with_the_full_one_on_every_example_and_unknown_field() {
    // Every example, and every example with an unknown field added to one of its objects:
    // `is_valid` accepts exactly what `check` accepts (no unknown field gets past it).
    let mut files = Vec::new();
    manifest_files(&workspace().join("manifests"), &mut files);
    let (mut valid, mut refused) = (0, 0);
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        for doc in api::manifest::parse_documents(&text).unwrap() {
            let kind = api::manifest::kind_of(&doc).unwrap();
            assert!(api::manifest::is_valid(kind, &doc), "{}: {doc}", file.display());
            valid += 1;
            let mut pointers = Vec::new();
            object_pointers(&doc, String::new(), &mut pointers);
            for pointer in pointers {
                let mut changed = doc.clone();
                let object = changed.pointer_mut(&pointer).unwrap().as_object_mut().unwrap();
                object.insert("zzUnknownField".into(), serde_json::json!(1));
                let quick = api::manifest::is_valid(kind, &changed);
                // The path `is_valid` saves: the unknown-field walk, every schema error, the
                // typed check.
                let walk = api::unknown_fields::unknown_fields(api::schema::of(kind), &changed);
                let full = walk.is_empty()
                    && api::schema::validator(kind).iter_errors(&changed).next().is_none()
                    && (kind.check)(&changed).is_ok();
                assert_eq!(
                    quick,
                    full,
                    "{} at {pointer:?}: is_valid {quick}, unknown {walk:?}",
                    file.display()
                );
                if quick {
                    assert!(
                        walk.is_empty(),
                        "{} at {pointer:?}: valid, yet unknown {walk:?}",
                        file.display()
                    );
                } else {
                    refused += 1;
                }
            }
        }
    }
    assert!(valid >= 7 && refused >= 30, "{valid} examples, {refused} refused with an unknown field");
}
