//! Apply sets (kubectl's ApplySet, KEP-3659) for `ui apply --applyset NAME --prune` and
//! `ui diff --applyset NAME`: the parent object (an `ApplySet` in the namespace, signed by
//! its owner), the `applyset.kubernetes.io/…` labels and annotations exactly as kubectl writes
//! them, so that `KUBECTL_APPLYSET=true kubectl apply --applyset=applysets.univrs.io/NAME`
//! manages the same set; and which members a prune deletes.
//!
//! Pure decisions here ([`plan_prune`], [`Parent::check`], annotations); the commands read
//! and write through the one client.

use std::collections::BTreeSet;

use api::kinds::applyset;
use serde_json::{Value, json};

/// The tooling written on a parent. kubectl refuses to touch a set whose tooling is not
/// `kubectl/…` (the spec: "tools refuse to mutate sets owned by another tool"), so `ui` keeps
/// its sets in kubectl's name: both then manage the same set. `ui` accepts `kubectl/…` and
/// `ui/…` parents.
pub const TOOLING: &str = "kubectl/v1.33.0";

/// An object of the set: kind, namespace, name.
pub type Key = (String, Option<String>, String);

/// The parent `name` in `namespace`: its id, as kubectl computes it.
pub fn id(name: &str, namespace: &str) -> String {
    applyset::id(name, namespace, "ApplySet", api::GROUP)
}

/// `Kind.univrs.io`, as the parent's contains-group-kinds lists kinds.
pub fn group_kind(kind: &str) -> String {
    format!("{kind}.{}", api::GROUP)
}

/// The kinds a contains-group-kinds annotation lists (ours only; others are kept as text).
pub fn parse_list(annotation: Option<&str>) -> BTreeSet<String> {
    annotation
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What a parent found on the server says, checked as kubectl checks it.
#[derive(Debug)]
pub struct Parent {
    /// The kinds it lists.
    pub kinds: BTreeSet<String>,
    /// The namespaces it lists besides its own.
    pub namespaces: BTreeSet<String>,
}

impl Parent {
    /// Checks a parent read from the server: its id label must be the one its name gives (no
    /// borrowing another set's id), its tooling `kubectl/…` or `ui/…`, its owner `me`.
    pub fn check(obj: &Value, name: &str, namespace: &str, me: &str) -> Result<Parent, String> {
        let label = |k: &str| obj.pointer("/metadata/labels").and_then(|l| l.get(k)).and_then(Value::as_str);
        let annotation =
            |k: &str| obj.pointer("/metadata/annotations").and_then(|a| a.get(k)).and_then(Value::as_str);
        let want = id(name, namespace);
        match label(applyset::ID) {
            Some(got) if got == want => {}
            Some(got) => {
                return Err(format!(
                    "ApplySet {namespace}/{name} has the id {got}, not {want}: it is not this set's parent"
                ));
            }
            None => return Err(format!("ApplySet {namespace}/{name} has no {} label", applyset::ID)),
        }
        let tooling = annotation(applyset::TOOLING).unwrap_or_default();
        let base = tooling.rsplit_once('/').map_or(tooling, |(b, _)| b);
        if base != "kubectl" && base != "ui" {
            return Err(format!(
                "ApplySet {namespace}/{name} is managed by {tooling:?}, not by ui or kubectl"
            ));
        }
        let owner = obj
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(api::signing::SIGNER))
            .and_then(Value::as_str);
        if owner != Some(me) {
            return Err(format!(
                "ApplySet {namespace}/{name} belongs to {}, not to you: choose another name for your set",
                owner.unwrap_or("nobody")
            ));
        }
        Ok(Parent {
            kinds: parse_list(annotation(applyset::CONTAINS_GROUP_KINDS)),
            namespaces: parse_list(annotation(applyset::ADDITIONAL_NAMESPACES)),
        })
    }
}

/// A new parent (to be signed by its owner): the id label, kubectl's annotations.
pub fn new_parent(name: &str, namespace: &str) -> Value {
    json!({
        "apiVersion": format!("{}/{}", api::GROUP, api::VERSION), "kind": "ApplySet",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": { applyset::ID: id(name, namespace) },
            "annotations": { applyset::TOOLING: TOOLING, applyset::CONTAINS_GROUP_KINDS: "" },
        },
        "spec": {},
    })
}

/// `parent` listing `kinds` and `namespaces` (the parent's own left out), as kubectl writes
/// them: sorted, comma-separated. The annotations are outside the signature: no re-signing.
pub fn with_contents(
    parent: &Value,
    kinds: &BTreeSet<String>,
    namespaces: &BTreeSet<String>,
    own: &str,
) -> Value {
    let mut p = parent.clone();
    let others: Vec<&str> = namespaces.iter().map(String::as_str).filter(|n| *n != own).collect();
    let ann = p["metadata"]["annotations"].as_object_mut().map(std::mem::take).unwrap_or_default();
    let mut ann = ann;
    ann.insert(
        applyset::CONTAINS_GROUP_KINDS.into(),
        kinds.iter().cloned().collect::<Vec<_>>().join(",").into(),
    );
    if others.is_empty() {
        ann.remove(applyset::ADDITIONAL_NAMESPACES);
    } else {
        ann.insert(applyset::ADDITIONAL_NAMESPACES.into(), others.join(",").into());
    }
    ann.remove(applyset::CONTAINS_GROUP_RESOURCES);
    p["metadata"]["annotations"] = Value::Object(ann);
    p
}

/// Gives `doc` the label of set `id`; an input that already names a set is an error (as kubectl).
/// A document annotated `univrs.io/prune: disabled` is left out of the set (unlabelled: the
/// apiserver refuses the label on it, so that no tool's prune ever lists it).
pub fn label(doc: &mut Value, set: &str) -> Result<(), String> {
    let protected =
        doc.pointer("/metadata/annotations").and_then(|a| a.get(applyset::PRUNE)).and_then(Value::as_str)
            == Some("disabled");
    if protected {
        return Ok(());
    }
    let meta = doc.get_mut("metadata").and_then(Value::as_object_mut).ok_or("no metadata")?;
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    let labels = labels.as_object_mut().ok_or("metadata.labels is not a map")?;
    match labels.get(applyset::PART_OF).and_then(Value::as_str) {
        Some(other) if other != set => Err(format!(
            "metadata.labels[{}] is already set (to {other}): the set's tools write it",
            applyset::PART_OF
        )),
        _ => {
            labels.insert(applyset::PART_OF.into(), set.into());
            Ok(())
        }
    }
}

/// What a prune does with one member found on the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Delete it: in the set, no longer in the source.
    Prune,
    /// Keep it, and why: protected (`univrs.io/prune: disabled`) or not the user's.
    Keep(String),
}

/// What to do with each member of the set found on the server (`(kind, object)`), when the
/// source now holds `applied`: prune what left the source, if it is `me`'s and not protected.
/// A stranger may label their own objects as part of anyone's set: those are never touched.
pub fn plan_prune(members: &[(String, Value)], applied: &BTreeSet<Key>, me: &str) -> Vec<(Key, Verdict)> {
    let mut plan = Vec::new();
    for (kind, obj) in members {
        let meta = &obj["metadata"];
        let key: Key = (
            kind.clone(),
            meta["namespace"].as_str().map(str::to_owned),
            meta["name"].as_str().unwrap_or_default().to_owned(),
        );
        if applied.contains(&key) {
            continue;
        }
        let annotation = |k: &str| meta.get("annotations").and_then(|a| a.get(k)).and_then(Value::as_str);
        let verdict = if meta.get("deletionTimestamp").is_some_and(|d| !d.is_null()) {
            continue;
        } else if annotation(api::signing::SIGNER) != Some(me) {
            Verdict::Keep(format!(
                "not yours (signed by {})",
                annotation(api::signing::SIGNER).unwrap_or("nobody")
            ))
        } else if annotation(applyset::PRUNE) == Some("disabled") {
            Verdict::Keep(format!("{}: disabled", applyset::PRUNE))
        } else {
            Verdict::Prune
        };
        plan.push((key, verdict));
    }
    plan
}

/// `kind/name (namespace)`, as `ui apply` names objects in its lines.
pub fn display(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{}/{name} ({ns})", kind.to_lowercase()),
        None => format!("{}/{name}", kind.to_lowercase()),
    }
}

/// Every object labelled as part of set `id`, of univrs' kinds among `kinds`
/// (`Kind.univrs.io`) and, for namespaced kinds, in `namespaces`: `(kind, object)`.
pub fn members(
    client: &crate::connection::Client,
    id: &str,
    kinds: &BTreeSet<String>,
    namespaces: &BTreeSet<String>,
) -> anyhow::Result<Vec<(String, Value)>> {
    let selector = format!("{}={id}", applyset::PART_OF);
    let mut found = Vec::new();
    for gk in kinds {
        let Some(info) = gk.strip_suffix(&format!(".{}", api::GROUP)).and_then(api::kinds::by_kind) else {
            continue; // another group's kind (kubectl's sets may list them): not univrs'
        };
        let scopes: Vec<Option<&str>> = if info.scope == api::Scope::Namespaced {
            namespaces.iter().map(|n| Some(n.as_str())).collect()
        } else {
            vec![None]
        };
        for ns in scopes {
            let list = client
                .list(info, ns, Some(&selector), false)
                .map_err(|e| anyhow::anyhow!("cannot list the set's {}: {e}", info.plural))?;
            for item in list.get("items").and_then(Value::as_array).into_iter().flatten() {
                found.push((info.kind.to_owned(), item.clone()));
            }
        }
    }
    Ok(found)
}

/// How the object on the server departs from the signed document in Git, if it does: signed
/// by someone else, or signed again later by the same owner (changed outside Git). `None`
/// when the document is unsigned (then the diff says what differs) or they agree.
pub fn drift(document: &Value, live: &Value) -> Option<String> {
    let ann = |v: &Value, k: &str| {
        v.pointer("/metadata/annotations").and_then(|a| a.get(k)).and_then(Value::as_str).map(str::to_owned)
    };
    let (Some(file_signer), Some(file_at)) =
        (ann(document, api::signing::SIGNER), ann(document, api::signing::SIGNED_AT))
    else {
        return None;
    };
    let live_signer = ann(live, api::signing::SIGNER).unwrap_or_else(|| "nobody".to_owned());
    let live_at = ann(live, api::signing::SIGNED_AT).unwrap_or_default();
    if live_signer != file_signer {
        return Some(format!("signed by {live_signer} on the server, by {file_signer} in the source"));
    }
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    match (parse(&live_at), parse(&file_at)) {
        (Some(l), Some(f)) if l > f => {
            Some(format!("changed outside the source: signed again at {live_at}, the source's at {file_at}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "did:key:z6MkMe";

    fn obj(name: &str, signer: &str, extra: Value) -> Value {
        let mut o = json!({ "metadata": { "name": name, "namespace": "default",
            "annotations": { api::signing::SIGNER: signer } } });
        if let (Some(ann), Some(more)) = (o["metadata"]["annotations"].as_object_mut(), extra.as_object()) {
            ann.extend(more.clone());
        }
        o
    }

    #[test]
    fn a_prune_deletes_only_my_unprotected_members_that_left_the_source() {
        let members = vec![
            ("Workload".to_owned(), obj("kept", ME, json!({}))),
            ("Workload".to_owned(), obj("gone", ME, json!({}))),
            ("Workload".to_owned(), obj("theirs", "did:key:z6MkStranger", json!({}))),
            ("TrustPolicy".to_owned(), obj("protected", ME, json!({ applyset::PRUNE: "disabled" }))),
        ];
        let applied =
            BTreeSet::from([("Workload".to_owned(), Some("default".to_owned()), "kept".to_owned())]);
        let plan = plan_prune(&members, &applied, ME);
        let verdict = |n: &str| plan.iter().find(|(k, _)| k.2 == n).map(|(_, v)| v.clone());
        assert_eq!(verdict("kept"), None);
        assert_eq!(verdict("gone"), Some(Verdict::Prune));
        assert!(matches!(verdict("theirs"), Some(Verdict::Keep(w)) if w.contains("not yours")));
        assert!(matches!(verdict("protected"), Some(Verdict::Keep(w)) if w.contains("disabled")));
    }

    #[test]
    fn a_parent_is_checked_as_kubectl_checks_it() {
        let mut p = new_parent("web", "default");
        p["metadata"]["annotations"][api::signing::SIGNER] = ME.into();
        assert!(Parent::check(&p, "web", "default", ME).is_ok());
        // Another set's id (borrowing), another tool, another owner.
        assert!(Parent::check(&p, "api", "default", ME).unwrap_err().contains("not this set's parent"));
        let mut helm = p.clone();
        helm["metadata"]["annotations"][applyset::TOOLING] = "helm/v3".into();
        assert!(Parent::check(&helm, "web", "default", ME).unwrap_err().contains("helm"));
        assert!(Parent::check(&p, "web", "default", "did:key:z6MkOther").unwrap_err().contains("not to you"));
        // What it lists, written as kubectl writes it.
        let kinds = BTreeSet::from([group_kind("Workload"), group_kind("TrustPolicy")]);
        let nss = BTreeSet::from(["default".to_owned(), "prod".to_owned()]);
        let p = with_contents(&p, &kinds, &nss, "default");
        assert_eq!(
            p["metadata"]["annotations"][applyset::CONTAINS_GROUP_KINDS],
            "TrustPolicy.univrs.io,Workload.univrs.io"
        );
        assert_eq!(p["metadata"]["annotations"][applyset::ADDITIONAL_NAMESPACES], "prod");
        let read = Parent::check(&p, "web", "default", ME).unwrap();
        assert_eq!(read.kinds, kinds);
    }

    #[test]
    fn drift_is_another_signer_or_a_later_signature() {
        let at = |signer: &str, t: &str| {
            json!({ "metadata": { "annotations": {
            api::signing::SIGNER: signer, api::signing::SIGNED_AT: t } } })
        };
        let file = at(ME, "2026-11-30T10:00:00.000Z");
        assert_eq!(drift(&file, &at(ME, "2026-11-30T10:00:00.000Z")), None);
        assert!(
            drift(&file, &at(ME, "2026-11-30T11:00:00.000Z")).unwrap().contains("changed outside the source")
        );
        assert!(
            drift(&file, &at("did:key:z6MkOther", "2026-11-30T10:00:00.000Z"))
                .unwrap()
                .contains("signed by did:key:z6MkOther")
        );
        // An unsigned document: the diff says what differs.
        assert_eq!(drift(&json!({ "metadata": {} }), &at(ME, "2026-11-30T11:00:00.000Z")), None);
    }

    #[test]
    fn members_are_labelled_once() {
        let mut doc = json!({ "metadata": { "name": "a" } });
        label(&mut doc, "applyset-x-v1").unwrap();
        assert_eq!(doc["metadata"]["labels"][applyset::PART_OF], "applyset-x-v1");
        label(&mut doc, "applyset-x-v1").unwrap();
        assert!(label(&mut doc, "applyset-y-v1").unwrap_err().contains("already set"));
        // Kept out of every prune: not labelled at all.
        let mut kept = json!({ "metadata": { "name": "k", "annotations": { applyset::PRUNE: "disabled" } } });
        label(&mut kept, "applyset-x-v1").unwrap();
        assert!(kept["metadata"].get("labels").is_none());
    }
}
