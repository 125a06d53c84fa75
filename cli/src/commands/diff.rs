//! `ui diff`: what `ui apply` would change, as a unified diff.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;
use similar::TextDiff;

use super::{Context, Outcome};
use crate::connection::ClusterArgs;
use crate::manifest_files;
use crate::objects::{self, Target};
use crate::output::OutputArgs;

/// Show what applying manifests would change
///
/// A unified diff per object, of the object on the server (without server-owned metadata and
/// status) against the document; an object that does not exist yet diffs against nothing.
/// Exit code: 0 when nothing would change, 1 when something would, 2 on an error.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest file, directory (recursive: *.yaml, *.yml, *.json) or - for standard input
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR", required = true)]
    files: Vec<PathBuf>,
    /// Diff against the apply set NAME (`ui apply --applyset`): also report drift (an object
    /// signed again, or by someone else, since the signed document in the source) and the
    /// set's objects that are not in the source
    #[arg(long, value_name = "NAME")]
    applyset: Option<String>,
    /// With --applyset: say which of those `ui apply --prune` would delete, and which it keeps
    #[arg(long, requires = "applyset")]
    prune: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// What applying one document would change.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The file it came from.
    pub file: String,
    /// Its position in the file, from 1.
    pub document: usize,
    /// Its kind.
    pub kind: String,
    /// Its namespace (namespaced kinds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Whether the object exists on the server.
    pub exists: bool,
    /// The unified diff; empty when nothing would change.
    pub diff: String,
    /// With --applyset: how the object departs from its source beyond the diff (drift), or
    /// that it is in the set but not in the source (and what a prune would do with it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
}

pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    match diff(ctx, args) {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            // Exit 2, not 1: 1 means "there are differences".
            super::print_error(&e);
            Ok(Outcome::Exit(2))
        }
    }
}

fn diff(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let all = manifest_files::read_all(&manifest_files::expand(&args.files)?)?;
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let mut reports = Vec::new();
    let set = match &args.applyset {
        Some(name) => {
            let namespace = client.namespace().to_owned();
            Some((name.clone(), namespace.clone(), crate::applyset::id(name, &namespace)))
        }
        None => None,
    };
    for doc in all.iter().flat_map(|s| &s.docs) {
        let Some((_, _, id)) = &set else {
            reports.push(diff_one(&client, doc)?);
            continue;
        };
        // What `ui apply --applyset` would send: the document with the set's label.
        let mut labelled = doc.clone();
        crate::applyset::label(&mut labelled.value, id)
            .map_err(|e| anyhow::anyhow!("{}: {e}", doc.place()))?;
        let mut r = diff_one(&client, &labelled)?;
        if r.exists
            && let Some(kind) = api::kinds::by_kind(&r.kind)
            && let Ok(live) = client.get(kind, r.namespace.as_deref(), &r.name)
        {
            r.drift = crate::applyset::drift(&doc.value, &live);
        }
        reports.push(r);
    }
    if let Some((name, namespace, id)) = &set {
        reports.extend(not_in_source(ctx, &client, name, namespace, id, &reports, args.prune)?);
    }
    if !args.output.print_structured(&reports)? {
        for r in &reports {
            print!("{}", r.diff);
            if let Some(d) = &r.drift {
                println!("{}: {d}", crate::applyset::display(&r.kind, r.namespace.as_deref(), &r.name));
            }
        }
    }
    let same = reports.iter().all(|r| r.diff.is_empty() && r.drift.is_none());
    Ok(if same { Outcome::Success } else { Outcome::Exit(1) })
}

/// The set's objects on the server that the source no longer has, and what a prune would do
/// with each (when `prune`).
fn not_in_source(
    ctx: &Context,
    client: &crate::connection::Client,
    name: &str,
    namespace: &str,
    id: &str,
    reports: &[Report],
    prune: bool,
) -> anyhow::Result<Vec<Report>> {
    use crate::applyset::{Parent, Verdict, group_kind, members, plan_prune};
    let me = ctx.acting_for()?.to_string();
    let kind = api::kinds::by_kind("ApplySet").expect("the ApplySet kind");
    let mut kinds: std::collections::BTreeSet<String> = reports.iter().map(|r| group_kind(&r.kind)).collect();
    let mut namespaces: std::collections::BTreeSet<String> =
        reports.iter().filter_map(|r| r.namespace.clone()).collect();
    namespaces.insert(namespace.to_owned());
    match client.get(kind, Some(namespace), name) {
        Ok(parent) => {
            let p = Parent::check(&parent, name, namespace, &me).map_err(|e| anyhow::anyhow!(e))?;
            kinds.extend(p.kinds);
            namespaces.extend(p.namespaces);
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(anyhow::anyhow!("the ApplySet {namespace}/{name}: {e}")),
    }
    let applied = reports.iter().map(|r| (r.kind.clone(), r.namespace.clone(), r.name.clone())).collect();
    let found = members(client, id, &kinds, &namespaces)?;
    Ok(plan_prune(&found, &applied, &me)
        .into_iter()
        .map(|((kind, namespace, name), verdict)| {
            let what = match (prune, verdict) {
                (false, _) => "in the set, not in the source".to_owned(),
                (true, Verdict::Prune) => "in the set, not in the source: would be pruned".to_owned(),
                (true, Verdict::Keep(why)) => format!("in the set, not in the source: kept ({why})"),
            };
            Report {
                file: String::new(),
                document: 0,
                kind,
                namespace,
                name,
                exists: true,
                diff: String::new(),
                drift: Some(what),
            }
        })
        .collect())
}

/// The unified diff of the object `doc` names on the server (without server-owned metadata
/// and status) against `doc`: what `ui diff` and the MCP `diff` tool show.
pub fn diff_one(
    client: &crate::connection::Client,
    doc: &manifest_files::Document,
) -> anyhow::Result<Report> {
    let place = || doc.place();
    let t = Target::of(client, doc).map_err(|e| anyhow::anyhow!("{}: {e:#}", place()))?;
    let mut desired = doc.value.clone();
    if let (Some(ns), Some(meta)) = (&t.namespace, desired.get_mut("metadata").and_then(Value::as_object_mut))
    {
        meta.insert("namespace".into(), ns.clone().into());
    }
    // An unsigned document is signed by `ui apply` only when it changes something: compare
    // it without the signature annotations.
    let view = if t.kind.signed && !objects::is_signed(&desired) {
        objects::authored_unsigned
    } else {
        objects::authored
    };
    let (exists, live) = match client.get(t.kind, t.namespace.as_deref(), &t.name) {
        Ok(current) => (true, objects::to_yaml(&view(&current))?),
        Err(e) if e.is_not_found() => (false, String::new()),
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", place())),
    };
    let wanted = objects::to_yaml(&view(&desired))?;
    let ns = t.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
    let old = format!("live/{}.{}/{ns}{}", t.kind.singular, t.kind.group, t.name);
    let new = format!("{}#{}", doc.source, doc.index);
    let text = TextDiff::from_lines(&live, &wanted);
    let unified = if live == wanted {
        String::new()
    } else {
        text.unified_diff().context_radius(3).header(&old, &new).to_string()
    };
    Ok(Report {
        file: doc.source.to_string(),
        document: doc.index,
        kind: t.kind.kind.to_owned(),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        exists,
        diff: unified,
        drift: None,
    })
}
