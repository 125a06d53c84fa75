//! `explain`: the kinds, and a kind's fields from its JSON Schema, as `kubectl explain` shows
//! them.

use api::{KindInfo, Scope};
use serde_json::Value;

/// The kinds: name, plural, short names, scope, whether signed, what each is.
pub fn kinds() -> String {
    let rows = api::kinds::KINDS
        .iter()
        .map(|k| {
            vec![
                k.kind.to_owned(),
                k.plural.to_owned(),
                k.short_names.join(","),
                scope(k).to_owned(),
                if k.signed { "yes" } else { "no" }.to_owned(),
                k.description.to_owned(),
            ]
        })
        .collect();
    let t = crate::table::Table {
        headers: ["KIND", "PLURAL", "SHORT", "SCOPE", "SIGNED", "DESCRIPTION"].map(str::to_owned).to_vec(),
        rows,
    };
    format!(
        "{}`explain` a kind for its fields; `field` (e.g. spec.containers) for one field's.\n",
        t.render()
    )
}

fn scope(k: &KindInfo) -> &'static str {
    match k.scope {
        Scope::Namespaced => "Namespaced",
        Scope::Cluster => "Cluster",
    }
}

/// The documentation of `kind`'s field at `path` (`spec.replicas`; empty for the kind):
/// its type and description, and each of its fields with theirs.
pub fn field(kind: &KindInfo, path: &str) -> Result<String, String> {
    let schema =
        serde_json::to_value((kind.schema)()).map_err(|e| format!("the schema of {}: {e}", kind.kind))?;
    let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
    let mut node = &schema;
    let mut walked = Vec::new();
    for part in path.split('.').map(str::trim).filter(|p| !p.is_empty()) {
        let here = resolve(node, &defs);
        let props = properties(here, &defs);
        let Some(next) = props.and_then(|p| p.get(part)) else {
            let known: Vec<&str> = props.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
            let at = if walked.is_empty() { kind.kind.to_owned() } else { walked.join(".") };
            return Err(if known.is_empty() {
                format!("field {part:?} does not exist: {at} has no fields")
            } else {
                format!("field {part:?} does not exist in {at}: its fields are {}", known.join(", "))
            });
        };
        walked.push(part.to_owned());
        node = next;
    }
    let here = resolve(node, &defs);
    let mut out = format!(
        "KIND:     {}\nVERSION:  {}\nSCOPE:    {}{}\n\n",
        kind.kind,
        api::API_VERSION,
        scope(kind),
        if kind.signed { " (signed by its owner)" } else { "" }
    );
    if !walked.is_empty() {
        out.push_str(&format!("FIELD:    {} <{}>\n\n", walked.join("."), type_of(node, &defs)));
    }
    let about = description(node).or_else(|| description(here)).unwrap_or("");
    out.push_str(&format!("DESCRIPTION:\n{}\n", indent(about, "  ")));
    if let Some(props) = properties(here, &defs) {
        let required: Vec<&str> = required_of(here, &defs);
        out.push_str("\nFIELDS:\n");
        for (name, field) in props {
            let req = if required.contains(&name.as_str()) { " -required-" } else { "" };
            out.push_str(&format!("  {name}\t<{}>{req}\n", type_of(field, &defs)));
            let about = description(field).or_else(|| description(resolve(field, &defs)));
            if let Some(d) = about.map(first_sentence) {
                out.push_str(&format!("    {d}\n"));
            }
        }
    }
    Ok(super::bounded::cut(out, super::bounded::MAX_TEXT, "explain a deeper `field`"))
}

fn description(v: &Value) -> Option<&str> {
    v.get("description").and_then(Value::as_str)
}

/// The first sentence of a description written over several lines.
fn first_sentence(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match joined.find(". ") {
        Some(end) => joined[..=end].to_owned(),
        None => joined,
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}")).collect::<Vec<_>>().join("\n")
}

/// Follows `$ref`, the non-null branch of `anyOf`/`oneOf` (optional fields), and array items
/// (a field's fields are its elements').
fn resolve<'a>(mut v: &'a Value, defs: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if let Some(r) = v.get("$ref").and_then(Value::as_str) {
            match r.strip_prefix("#/$defs/").and_then(|n| defs.get(n)) {
                Some(d) => v = d,
                None => return v,
            }
        } else if let Some(branch) = v
            .get("anyOf")
            .or_else(|| v.get("oneOf"))
            .and_then(Value::as_array)
            .and_then(|bs| bs.iter().find(|b| b.get("type").and_then(Value::as_str) != Some("null")))
        {
            v = branch;
        } else if let Some(items) = v.get("items").filter(|_| v.get("properties").is_none()) {
            v = items;
        } else if let Some(all) = v.get("allOf").and_then(Value::as_array).filter(|a| a.len() == 1) {
            v = &all[0];
        } else {
            return v;
        }
    }
    v
}

fn properties<'a>(v: &'a Value, defs: &'a Value) -> Option<&'a serde_json::Map<String, Value>> {
    resolve(v, defs).get("properties").and_then(Value::as_object)
}

fn required_of<'a>(v: &'a Value, defs: &'a Value) -> Vec<&'a str> {
    resolve(v, defs)
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `string`, `integer`, `[]Container`, `map[string]string`, `Object`, as kubectl names types.
fn type_of(v: &Value, defs: &Value) -> String {
    let named = |v: &Value| {
        v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")).map(str::to_owned)
    };
    if let Some(n) = named(v) {
        let target = resolve(v, defs);
        return match target.get("type").and_then(Value::as_str) {
            Some("object") | None => n,
            Some(t) => t.to_owned(),
        };
    }
    if let Some(branch) = v
        .get("anyOf")
        .or_else(|| v.get("oneOf"))
        .and_then(Value::as_array)
        .and_then(|bs| bs.iter().find(|b| b.get("type").and_then(Value::as_str) != Some("null")))
    {
        return type_of(branch, defs);
    }
    let ty = match v.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => {
            ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("any").to_owned()
        }
        _ if v.get("enum").is_some() => "string".to_owned(),
        _ => "any".to_owned(),
    };
    match ty.as_str() {
        "array" => format!("[]{}", v.get("items").map_or("any".into(), |i| type_of(i, defs))),
        "object" => match v.get("additionalProperties") {
            Some(a) if a.is_object() => format!("map[string]{}", type_of(a, defs)),
            _ => "Object".to_owned(),
        },
        _ => ty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_walks_a_field_path_and_names_the_fields_of_a_wrong_one() {
        let wl = api::kinds::lookup("workload").unwrap();
        let top = field(wl, "").unwrap();
        assert!(top.contains("FIELDS:") && top.contains("spec\t<WorkloadSpec>"), "{top}");
        let replicas = field(wl, "spec.replicas").unwrap();
        assert!(replicas.contains("FIELD:    spec.replicas <integer>"), "{replicas}");
        let e = field(wl, "spec.nope").unwrap_err();
        assert!(e.contains("its fields are") && e.contains("replicas"), "{e}");
        assert!(kinds().contains("Workload"));
    }
}
