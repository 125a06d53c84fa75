//! `ui apply`: create or update every object of the given manifests.

use std::collections::BTreeSet;
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
    /// Then follow each applied object until it is current (kstatus: its controller has seen
    /// it, a Workload's replicas all run the current template), or has failed (a Workload
    /// that cannot be placed), or --timeout passes. Exit 0: all current; 1: something failed
    /// (or was not applied); 2: timed out. With -o json, one JSON line per object
    #[arg(long, conflicts_with = "dry_run")]
    wait: bool,
    /// Apply the documents as the apply set NAME (kubectl's ApplySet: its parent is the
    /// ApplySet NAME in the namespace, which `ui` creates and signs; every object is labelled
    /// applyset.kubernetes.io/part-of). `KUBECTL_APPLYSET=true kubectl apply -n NS --prune
    /// --applyset=applysets.univrs.io/NAME` manages the same set
    #[arg(long, value_name = "NAME")]
    applyset: Option<String>,
    /// With --applyset: delete the objects of the set that are no longer in the input (yours
    /// only, and never one annotated univrs.io/prune: disabled); with --dry-run server, only
    /// say which
    #[arg(long, requires = "applyset")]
    prune: bool,
    /// How long --wait waits in all (90s, 5m, 1h)
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = crate::unlock::parse_duration, requires = "wait")]
    timeout: std::time::Duration,
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
    #[serde(skip_serializing_if = "String::is_empty")]
    file: String,
    #[serde(skip_serializing_if = "is_zero")]
    document: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// `created`, `configured`, `unchanged`, or `held` (an agent's write waiting for its
    /// user's approval); for a member of the set no longer in the input, `pruned` or `kept`
    /// (with `reason`); absent on error.
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'static str>,
    /// The Approval a held write waits in.
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Why a member no longer in the input was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
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
    // The set, if any: its parent written first listing every kind it has had and will have
    // (an interrupted apply leaks nothing from the next prune).
    let set = match &args.applyset {
        Some(name) => Some(ApplySetRun::begin(ctx, &client, name, &all, dry_run, &sign)?),
        None => None,
    };
    for doc in all.iter().flat_map(|s| &s.docs) {
        let mut labelled;
        let doc = match &set {
            Some(set) => {
                labelled = doc.clone();
                if let Err(e) = crate::applyset::label(&mut labelled.value, &set.id) {
                    eprintln!("error: {}: {e}", doc.place());
                    reports.push(Report {
                        file: doc.source.to_string(),
                        document: doc.index,
                        kind: None,
                        namespace: None,
                        name: None,
                        result: None,
                        approval: None,
                        error: Some(e),
                        reason: None,
                    });
                    continue;
                }
                &labelled
            }
            None => doc,
        };
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
            reason: None,
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
    if let Some(set) = set {
        let applied_all = reports.iter().all(|r| r.error.is_none());
        let pruned = set.finish(&client, &reports, args.prune && applied_all, dry_run)?;
        for r in pruned {
            if args.output.format == crate::output::Format::Text {
                match (&r.result, &r.reason) {
                    (Some(what), Some(why)) => println!("{} {what}{suffix}: {why}", reference(&r)),
                    (Some(what), None) => println!("{} {what}{suffix}", reference(&r)),
                    _ => eprintln!("error: {}: {}", reference(&r), r.error.as_deref().unwrap_or_default()),
                }
            }
            reports.push(r);
        }
        if args.prune && !applied_all {
            eprintln!("warning: nothing pruned: not every document was applied");
        }
    }
    if args.wait {
        return Ok(wait(&client, &reports, args));
    }
    args.output.print_structured(&reports)?;
    Ok(if reports.iter().all(|r| r.error.is_none()) { Outcome::Success } else { Outcome::Failure })
}

/// `--applyset NAME` under way: its id, its parent, what it listed before.
struct ApplySetRun {
    name: String,
    namespace: String,
    id: String,
    me: String,
    /// Kinds and namespaces listed before this apply, and those of the input.
    before: crate::applyset::Parent,
    now: crate::applyset::Parent,
}

impl ApplySetRun {
    /// Reads (or makes) the parent, checks it is this set's and the user's, and writes it
    /// listing what it had and what the input has.
    fn begin(
        ctx: &Context,
        client: &Client,
        name: &str,
        all: &[manifest_files::SourceDocs],
        dry_run: bool,
        sign: &dyn Fn(&mut Value) -> Result<(), ClientError>,
    ) -> anyhow::Result<Self> {
        use crate::applyset::{Parent, group_kind, id, new_parent, with_contents};
        api::validation::check_dns1123_subdomain(name)
            .map_err(|e| anyhow::anyhow!("--applyset {name:?}: {e}"))?;
        let namespace = client.namespace().to_owned();
        let me = ctx.acting_for()?.to_string();
        let kind = api::kinds::by_kind("ApplySet").expect("the ApplySet kind");
        let mut now = Parent { kinds: Default::default(), namespaces: BTreeSet::from([namespace.clone()]) };
        for doc in all.iter().flat_map(|s| &s.docs) {
            if let Ok(t) = Target::of(client, doc) {
                now.kinds.insert(group_kind(t.kind.kind));
                now.namespaces.extend(t.namespace);
            }
        }
        let before = match client.get(kind, Some(&namespace), name) {
            Ok(parent) => Parent::check(&parent, name, &namespace, &me).map_err(|e| anyhow::anyhow!(e))?,
            Err(e) if e.is_not_found() => {
                Parent { kinds: Default::default(), namespaces: Default::default() }
            }
            Err(e) => return Err(anyhow::anyhow!("the ApplySet {namespace}/{name}: {e}")),
        };
        let kinds: BTreeSet<String> = before.kinds.union(&now.kinds).cloned().collect();
        let namespaces: BTreeSet<String> = before.namespaces.union(&now.namespaces).cloned().collect();
        client
            .modify_dry(
                kind,
                Some(&namespace),
                name,
                dry_run,
                |current| -> Result<Option<Value>, ClientError> {
                    match current {
                        Some(c) => {
                            let next = with_contents(c, &kinds, &namespaces, &namespace);
                            Ok((next != *c).then_some(next))
                        }
                        None => {
                            let mut p =
                                with_contents(&new_parent(name, &namespace), &kinds, &namespaces, &namespace);
                            sign(&mut p)?;
                            Ok(Some(p))
                        }
                    }
                },
            )
            .map_err(|e| anyhow::anyhow!("cannot write the ApplySet {namespace}/{name}: {e}"))?;
        Ok(Self { name: name.to_owned(), id: id(name, &namespace), namespace, me, before, now })
    }

    /// Prunes (when `prune`) the members no longer in the input, reporting each, then writes
    /// the parent listing only what the set now holds (when everything went through).
    fn finish(
        self,
        client: &Client,
        reports: &[Report],
        prune: bool,
        dry_run: bool,
    ) -> anyhow::Result<Vec<Report>> {
        use crate::applyset::{Verdict, plan_prune, with_contents};
        let mut out = Vec::new();
        if !prune {
            return Ok(out);
        }
        let applied: BTreeSet<crate::applyset::Key> = reports
            .iter()
            .filter(|r| r.error.is_none())
            .filter_map(|r| Some((r.kind.clone()?, r.namespace.clone(), r.name.clone()?)))
            .collect();
        let members = self.members(client)?;
        let mut failed = false;
        for ((kind, namespace, name), verdict) in plan_prune(&members, &applied, &self.me) {
            let info = api::kinds::by_kind(&kind).expect("members are of known kinds");
            let (result, reason, error) = match verdict {
                Verdict::Keep(why) => (Some("kept"), Some(why), None),
                Verdict::Prune => match client.delete(info, namespace.as_deref(), &name, dry_run) {
                    Ok(_) => (Some("pruned"), None, None),
                    Err(e) if e.is_not_found() => (Some("pruned"), None, None),
                    Err(e) => {
                        failed = true;
                        (None, None, Some(e.to_string()))
                    }
                },
            };
            out.push(Report {
                file: String::new(),
                document: 0,
                kind: Some(kind),
                namespace,
                name: Some(name),
                result,
                approval: None,
                error,
                reason,
            });
        }
        if failed || dry_run {
            return Ok(out);
        }
        // Now the set is what the input was.
        let kind = api::kinds::by_kind("ApplySet").expect("the ApplySet kind");
        let (kinds, namespaces, own) = (&self.now.kinds, &self.now.namespaces, self.namespace.as_str());
        client
            .modify(kind, Some(own), &self.name, |current| -> Result<Option<Value>, ClientError> {
                Ok(current.map(|c| with_contents(c, kinds, namespaces, own)).filter(|n| Some(n) != current))
            })
            .map_err(|e| {
                anyhow::anyhow!("applied and pruned, but cannot update the ApplySet {own}/{}: {e}", self.name)
            })?;
        Ok(out)
    }

    /// Every object labelled as part of the set, of the kinds and in the namespaces the
    /// parent listed before this apply or the input has.
    fn members(&self, client: &Client) -> anyhow::Result<Vec<(String, Value)>> {
        let kinds = self.before.kinds.union(&self.now.kinds).cloned().collect();
        let namespaces = self.before.namespaces.union(&self.now.namespaces).cloned().collect();
        crate::applyset::members(client, &self.id, &kinds, &namespaces)
    }
}

/// One object `--wait` follows, and where it stands.
struct Followed<'a> {
    report: &'a Report,
    kind: &'static api::object::KindInfo,
    status: Option<crate::kstatus::Status>,
    /// Since when it has been current (a Workload or Replica settles after [`SETTLE`]).
    current_since: Option<std::time::Instant>,
}

/// How long a Workload or Replica must stay current before `--wait` believes it: a replica
/// that starts and dies at once looks running for a moment (there are no readiness probes).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// `--wait`: follows every applied object until each is current or failed, or the time is up;
/// says so as each settles (a line of text, or a JSON line with `-o json`). Reads each one
/// still in progress every half second (a GET each: the objects of one apply are few).
fn wait(client: &Client, reports: &[Report], args: &Args) -> Outcome {
    use crate::kstatus::Status;
    let json = args.output.format != crate::output::Format::Text;
    let started = std::time::Instant::now();
    let deadline = started + args.timeout;
    let mut failed = false;
    let mut followed = Vec::new();
    for r in reports {
        let kind = r.kind.as_deref().and_then(|k| api::kinds::KINDS.iter().find(|i| i.kind == k));
        match (kind, &r.name, r.result) {
            // A member a prune deleted, or kept (protected, a stranger's): nothing to wait for.
            (_, _, Some("pruned" | "kept")) => {}
            (Some(kind), Some(_), Some("created" | "configured" | "unchanged")) => {
                followed.push(Followed { report: r, kind, status: None, current_since: None })
            }
            _ => {
                // Not applied (an error, or held for approval): nothing to wait for, and not a success.
                failed = true;
                let why = r
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("not applied ({})", r.result.unwrap_or("error")));
                say(json, r, "Failed", &why, started);
            }
        }
    }
    let replica_kind = api::kinds::KINDS.iter().find(|k| k.kind == "Replica").expect("the Replica kind");
    loop {
        // The replicas of the namespaces of the workloads still followed, once a round.
        let mut replicas: std::collections::BTreeMap<Option<String>, Vec<Value>> = Default::default();
        for f in followed.iter().filter(|f| f.kind.kind == "Workload" && !settled(f)) {
            let ns = f.report.namespace.clone();
            if let std::collections::btree_map::Entry::Vacant(e) = replicas.entry(ns) {
                let list = client.list(replica_kind, e.key().as_deref(), None, false).ok();
                let items =
                    list.and_then(|l| l.get("items").and_then(Value::as_array).cloned()).unwrap_or_default();
                e.insert(items);
            }
        }
        for f in followed.iter_mut().filter(|f| !settled(f)) {
            let r = f.report;
            let read = client.get(f.kind, r.namespace.as_deref(), r.name.as_deref().unwrap_or_default());
            let mut now = match read {
                Ok(obj) if f.kind.kind == "Workload" => crate::kstatus::workload_with_replicas(
                    &obj,
                    replicas.get(&r.namespace).map_or(&[][..], Vec::as_slice),
                ),
                Ok(obj) => crate::kstatus::status(f.kind.kind, &obj),
                Err(e) if e.is_not_found() => Status::Failed("deleted while waiting".to_owned()),
                Err(e) => Status::InProgress(format!("cannot read it: {e}")),
            };
            // Current only once it has stayed so (workloads and replicas: things that run).
            if now == Status::Current && matches!(f.kind.kind, "Workload" | "Replica") {
                let since = *f.current_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() < SETTLE {
                    now = Status::InProgress("running; making sure it stays so".to_owned());
                }
            } else {
                f.current_since = None;
            }
            if f.status.as_ref() != Some(&now) {
                match &now {
                    Status::Current | Status::Failed(_) => say(json, r, now.name(), now.message(), started),
                    Status::InProgress(m) if !json => println!("{}: {m}", reference(r)),
                    Status::InProgress(_) => {}
                }
                f.status = Some(now);
            }
        }
        let pending: Vec<&Followed<'_>> = followed.iter().filter(|f| !settled(f)).collect();
        if pending.is_empty() {
            break;
        }
        if std::time::Instant::now() >= deadline {
            for f in pending {
                let m = f.status.as_ref().map_or("", Status::message);
                say(
                    json,
                    f.report,
                    "Timeout",
                    &format!("not current after {}s: {m}", args.timeout.as_secs()),
                    started,
                );
            }
            return Outcome::Exit(2);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    failed |= followed.iter().any(|f| matches!(f.status, Some(Status::Failed(_))));
    if failed { Outcome::Failure } else { Outcome::Success }
}

/// Whether `--wait` is done with `f`: current or failed.
fn settled(f: &Followed<'_>) -> bool {
    matches!(f.status, Some(crate::kstatus::Status::Current | crate::kstatus::Status::Failed(_)))
}

fn reference(r: &Report) -> String {
    match &r.name {
        Some(name) => {
            crate::applyset::display(r.kind.as_deref().unwrap_or("object"), r.namespace.as_deref(), name)
        }
        None => format!("{} document {}", r.file, r.document),
    }
}

/// One object settled: a line for people, or a JSON line for machines.
fn say(json: bool, r: &Report, status: &str, message: &str, started: std::time::Instant) {
    if json {
        let line = serde_json::json!({
            "file": r.file, "document": r.document, "kind": r.kind, "namespace": r.namespace, "name": r.name,
            "result": r.result, "status": status, "message": message,
            "seconds": (started.elapsed().as_millis() as f64 / 1000.0),
        });
        println!("{line}");
    } else if message.is_empty() {
        println!("{}: {}", reference(r), status.to_lowercase());
    } else {
        println!("{}: {} ({message})", reference(r), status.to_lowercase());
    }
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
