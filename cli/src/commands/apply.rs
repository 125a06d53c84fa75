//! `ui apply`: create or update every object of the given manifests.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use super::{Context, Outcome};
use crate::connection::{Client, ClientError, ClusterArgs};
use crate::manifest_files::{self, Document};
use crate::objects::{self, Target};
use crate::output::OutputArgs;

/// Create or update objects from manifests, idempotently
///
/// For each document: an object that does not exist is created; one that differs from the
/// document (server-owned metadata and status aside) is replaced by it, keeping its
/// finalizers and owner references; one that already says the same is left alone. Prints a
/// line per object: created, configured or unchanged. Errors are reported per object, with
/// the file and document; the others are still applied, and the exit code is 1.
///
/// Documents of signed kinds (Workload, TrustPolicy, NodeOffer, …) that carry no signature are
/// signed with your key (`ui init`) as they are sent, and only when they change something;
/// signed documents (`ui sign`, e.g. from Git) are sent exactly as they are.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest file, directory (recursive: *.yaml, *.yml, *.json) or - for standard input
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR", required = true)]
    files: Vec<PathBuf>,
    /// `server`: ask the server to check every change without storing it
    #[arg(long, value_name = "MODE", value_parser = ["server"])]
    dry_run: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    passphrase: crate::passphrase::PassphraseArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// The field manager `ui apply` writes as (`kubectl get --show-managed-fields` shows it).
pub const FIELD_MANAGER: &str = "ui";

/// What happened to one document.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    file: String,
    document: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// `created`, `configured`, `unchanged`, or `held` (an agent's write waiting for its
    /// user's approval); absent on error.
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'static str>,
    /// The Approval a held write waits in.
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let sources = manifest_files::expand(&args.files)?;
    let all = manifest_files::read_all(&sources)?;
    // `ui` is the field manager of what it applies (`managedFields`), as kubectl is of its.
    let client = crate::connection::connect(ctx, &args.cluster)?.with_field_manager(FIELD_MANAGER);
    let dry_run = args.dry_run.is_some();
    let suffix = if dry_run { " (server dry run)" } else { "" };
    // The key is loaded once, and only if some document needs signing.
    let key = std::cell::OnceCell::new();
    let signer = Signer { ctx, args, key: &key };
    let sign = |obj: &mut Value| signer.sign(obj);
    let mut reports = Vec::new();
    for doc in all.iter().flat_map(|s| &s.docs) {
        // Every problem of the manifest, found here, in the words `ui sign` and the server
        // use: nothing is sent for a document that has any.
        let problems = doc.problems();
        let mut approval = None;
        let (target, result) = match Target::of(&client, doc) {
            _ if !problems.is_empty() => (None, Err(problems.join("\n"))),
            Err(e) => (None, Err(format!("{e:#}"))),
            Ok(t) => match apply_one(&client, &t, doc, dry_run, &sign) {
                Ok(r) => (Some(t), Ok(r)),
                // An agent's write its user's grant holds: not done, not failed.
                Err(ClientError::Pending { approval: name, message }) => {
                    if args.output.format == crate::output::Format::Text {
                        println!("{} held for approval: {message}", t.reference());
                    }
                    approval = Some(name);
                    (Some(t), Ok("held"))
                }
                // An unreachable server fails every document alike: say it once.
                Err(e @ ClientError::Unreachable { .. }) => return Err(e.into()),
                Err(e) => (Some(t), Err(e.to_string())),
            },
        };
        let t = target;
        let report = Report {
            file: doc.source.to_string(),
            document: doc.index,
            kind: t.as_ref().map(|t| t.kind.kind.to_owned()),
            namespace: t.as_ref().and_then(|t| t.namespace.clone()),
            name: t.as_ref().map(|t| t.name.clone()),
            result: result.as_ref().ok().copied(),
            approval,
            error: result.err(),
        };
        if args.output.format == crate::output::Format::Text && report.approval.is_none() {
            match (&t, &report.result, &report.error) {
                (Some(t), Some(r), _) => println!("{} {r}{suffix}", t.reference()),
                (_, _, Some(e)) if !problems.is_empty() => {
                    eprintln!("error: {}", e.replace('\n', "\nerror: "))
                }
                (_, _, Some(e)) => eprintln!("error: {}: {e}", doc.place()),
                _ => {}
            }
        }
        reports.push(report);
    }
    if reports.is_empty() {
        anyhow::bail!(
            "no objects to apply in {}",
            sources.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        );
    }
    args.output.print_structured(&reports)?;
    Ok(if reports.iter().all(|r| r.error.is_none()) { Outcome::Success } else { Outcome::Failure })
}

/// Creates, updates or leaves one object; retries when another writer got in between.
/// Signs unsigned documents of signed kinds with the user's key, loaded on first use.
struct Signer<'a> {
    ctx: &'a Context,
    args: &'a Args,
    key: &'a std::cell::OnceCell<Box<dyn api::signing::Sign>>,
}

impl Signer<'_> {
    fn sign(&self, obj: &mut Value) -> Result<(), ClientError> {
        let key = match self.key.get() {
            Some(k) => k,
            None => {
                let signer = crate::unlock::signer(&self.ctx.dirs, || {
                    self.args.passphrase.get(crate::passphrase::Purpose::Existing, "your identity")
                })
                .map_err(|e| ClientError::Other(format!("cannot sign: {e:#}")))?;
                self.key.get_or_init(|| signer)
            }
        };
        self.ctx
            .sign(obj, &**key, chrono::Utc::now())
            .map(drop)
            .map_err(|e| ClientError::Other(format!("cannot sign: {e:#}")))
    }
}

/// Creates, updates or leaves the object `t` of `doc` (a server-side dry run when `dry_run`),
/// signing an unsigned document of a signed kind with `sign` when it changes something:
/// `created`, `configured` or `unchanged`. What `ui apply` and the MCP `apply` tool do.
pub fn apply_one(
    client: &Client,
    t: &Target,
    doc: &Document,
    dry_run: bool,
    sign_with: &dyn Fn(&mut Value) -> Result<(), ClientError>,
) -> Result<&'static str, ClientError> {
    let mut desired = doc.value.clone();
    if let (Some(ns), Some(meta)) = (&t.namespace, desired.get_mut("metadata").and_then(Value::as_object_mut))
    {
        meta.insert("namespace".into(), ns.clone().into());
    }
    let ns = t.namespace.as_deref();
    let sign = t.kind.signed && !objects::is_signed(&desired);
    // Read, compare, write (created, or put over the current one), read again on a conflict:
    // the client's one conflict retry.
    let mut verb = "unchanged";
    client.modify_dry(t.kind, ns, &t.name, dry_run, |current| -> Result<Option<Value>, ClientError> {
        let mut body = match current {
            None => {
                verb = "created";
                desired.clone()
            }
            Some(current) => {
                let same = if sign {
                    objects::authored_unsigned(current) == objects::authored_unsigned(&desired)
                } else {
                    objects::authored(current) == objects::authored(&desired)
                };
                if same {
                    verb = "unchanged";
                    return Ok(None);
                }
                verb = "configured";
                carry_over(&desired, current)
            }
        };
        if sign {
            sign_with(&mut body)?;
        }
        Ok(Some(body))
    })?;
    Ok(verb)
}

/// The document to PUT: what the user wrote, with the current `resourceVersion` as the
/// precondition and the current finalizers and owner references, which apply never drops.
fn carry_over(desired: &Value, current: &Value) -> Value {
    let mut body = desired.clone();
    if let (Some(meta), Some(cur)) = (
        body.get_mut("metadata").and_then(Value::as_object_mut),
        current.get("metadata").and_then(Value::as_object),
    ) {
        for field in ["resourceVersion", "finalizers", "ownerReferences"] {
            match cur.get(field) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_update_keeps_finalizers_and_owner_references_and_uses_the_current_version() {
        let desired =
            json!({"kind": "Workload", "metadata": {"name": "a", "finalizers": ["mine"]}, "spec": {}});
        let current = json!({"kind": "Workload", "metadata": {
            "name": "a", "resourceVersion": "7", "finalizers": ["gc"], "ownerReferences": [{"name": "o"}]
        }});
        let body = carry_over(&desired, &current);
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        assert_eq!(body["metadata"]["finalizers"], json!(["gc"]));
        assert_eq!(body["metadata"]["ownerReferences"], json!([{"name": "o"}]));
    }
}
