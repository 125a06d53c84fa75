//! `ui seal`: encrypt env values of a Workload with age to the nodes that may run it and to the
//! user's own recovery recipient, in the manifest's text (`-f`), or one value (`--workload`);
//! `--refresh` seals every sealed value again when the set of those nodes changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use api::kinds::{
    AttestationSpec, NodeOfferSpec, NodeSpec, ReputationSpec, TrustPolicySpec, WorkloadSpec, info,
};
use api::sealed::Binding;
use client::resource::Kube;
use controllers::scheduler::core::Constraints;
use controllers::scheduler::snapshot::{Objects, Topology};
use serde_json::Value;

use super::{Context, Outcome};
use crate::connection::{Client, ClusterArgs};
use crate::manifest_files::{self, Source};
use crate::passphrase::{PassphraseArgs, Purpose};
use crate::seal_text::{Replace, rewrite};

/// Seal secret env values of Workloads to the nodes that may run them
///
/// Each value is encrypted with age, on this machine, to the age recipients of the nodes the
/// workload's TrustPolicy (and its placement) admits — as the scheduler decides it, whatever
/// the nodes' state now — and to your own age recipient (your recovery key: `ui seal
/// --refresh` opens values with it). The plaintext is bound to the workload's namespace, name
/// and owner (you): a node opens it only for that workload, and the control plane stores the
/// ciphertext only.
///
/// With -f, every env variable marked `secret: true` that has a `value` (and those named by
/// --env) is sealed in place: its `value:` line becomes a `sealed: |` block, nothing else in
/// the file changes. With --refresh, every `sealed` value in the files is sealed again if the
/// nodes that may run its workload changed; only files that change are written, and each is
/// named. With --workload, one value (--value, or standard input) is sealed and printed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest files or directories whose Workloads' values are sealed in place
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR")]
    files: Vec<PathBuf>,
    /// Seal this env variable's value too (with -f), as if it were marked `secret: true`
    #[arg(long = "env", value_name = "NAME", requires = "files")]
    env: Vec<String>,
    /// Seal again every sealed value of the files whose nodes changed (with -f)
    #[arg(long, requires = "files", conflicts_with_all = ["env", "workload"])]
    refresh: bool,
    /// Seal one value for this workload (read from the cluster: its policy and placement) and
    /// print it
    #[arg(long, value_name = "NAME", conflicts_with = "files")]
    workload: Option<String>,
    /// The value to seal with --workload [default: standard input]
    #[arg(long, value_name = "VALUE", requires = "workload")]
    value: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    if args.files.is_empty() && args.workload.is_none() {
        bail!("nothing to seal: give -f FILE|DIR (values marked secret: true), or --workload NAME");
    }
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let me = crate::keystore::load_public(&ctx.dirs)?;
    let recovery: age::x25519::Recipient =
        me.age_recipient.as_str().parse().map_err(|e| anyhow::anyhow!("your age recipient: {e}"))?;
    let owner = ctx.acting_for()?.as_str().to_owned();
    let mut nodes = Nodes::read(&client)?;
    if let Some(name) = &args.workload {
        let ns = client.namespace().to_owned();
        let workload = client.get(info::<WorkloadSpec>(), Some(&ns), name).with_context(|| {
            format!("cannot read workload {ns}/{name} (its policy says who may open the value)")
        })?;
        let spec: WorkloadSpec = serde_json::from_value(workload["spec"].clone())?;
        let to = nodes.qualifying(&client, &ns, &spec, &owner)?;
        let value = match &args.value {
            Some(v) => zeroize::Zeroizing::new(v.clone()),
            None => {
                use std::io::Read as _;
                let mut s = String::new();
                std::io::stdin().take(api::sealed::MAX_SEALED as u64).read_to_string(&mut s)?;
                zeroize::Zeroizing::new(s.strip_suffix('\n').unwrap_or(&s).to_owned())
            }
        };
        let binding = Binding { namespace: ns, workload: name.clone(), owner };
        let sealed = api::sealed::seal(&value, &binding, &to.recipients(&recovery))
            .map_err(|e| anyhow::anyhow!("cannot seal: {e}"))?;
        eprintln!("sealed for {binding} to {}", to.describe());
        print!("{sealed}");
        return Ok(Outcome::Success);
    }
    // The recovery key opens what --refresh seals again (loaded once, only then).
    let identity = if args.refresh {
        let id =
            crate::keystore::load(&ctx.dirs, || args.passphrase.get(Purpose::Existing, "your identity"))?;
        Some(id.age_identity().clone())
    } else {
        None
    };
    let sources = manifest_files::expand(&args.files)?;
    let mut failed = false;
    let mut changed_files = 0;
    for source in &sources {
        let Source::File(path) = source else {
            bail!("{source}: ui seal rewrites files; give a file or directory")
        };
        match seal_file(&client, &mut nodes, path, args, &owner, &recovery, identity.as_ref()) {
            Ok(Some(report)) => {
                changed_files += 1;
                println!("{}: {report}", path.display());
            }
            Ok(None) => {}
            Err(e) => {
                failed = true;
                eprintln!("error: {}: {e:#}", path.display());
            }
        }
    }
    if changed_files == 0 && !failed {
        println!(
            "{}",
            if args.refresh {
                "every sealed value is sealed to the nodes that may run its workload: nothing changed"
            } else {
                "no value to seal (mark env variables with secret: true, or name them with --env)"
            }
        );
    }
    Ok(if failed { Outcome::Failure } else { Outcome::Success })
}

/// Seals (or refreshes) the values of one file; what changed, or `None` when nothing did.
fn seal_file(
    client: &Client,
    nodes: &mut Nodes,
    path: &std::path::Path,
    args: &Args,
    owner: &str,
    recovery: &age::x25519::Recipient,
    identity: Option<&age::x25519::Identity>,
) -> anyhow::Result<Option<String>> {
    let text =
        String::from_utf8(crate::fsutil::read_limited(path, api::manifest::MAX_MANIFEST_BYTES as u64)?)
            .context("not UTF-8")?;
    let docs = manifest_files::parse(&Source::File(path.to_owned()), &text)?;
    let mut replacements = Vec::new();
    let mut said = Vec::new();
    for (d, doc) in docs.docs.iter().enumerate() {
        if doc.value.get("kind").and_then(Value::as_str) != Some("Workload") {
            continue;
        }
        let t = crate::objects::Target::of(client, doc)?;
        let ns = t.namespace.clone().unwrap_or_else(|| "default".into());
        let spec: WorkloadSpec =
            serde_json::from_value(doc.value.get("spec").cloned().unwrap_or_default())
                .with_context(|| format!("document {} is not a valid Workload", doc.index))?;
        let binding = Binding { namespace: ns.clone(), workload: t.name.clone(), owner: owner.to_owned() };
        let mut to: Option<Qualifying> = None;
        let mut count = 0;
        for (i, var) in spec.env.iter().enumerate() {
            let value = match (&var.value, &var.sealed, identity) {
                // Sealing: plain values marked secret or named.
                (Some(v), None, None) if var.secret || args.env.contains(&var.name) => {
                    zeroize::Zeroizing::new(v.clone())
                }
                // Refreshing: sealed values whose recipients are not the nodes' now.
                (None, Some(sealed), Some(key)) => {
                    let opened = api::sealed::open_unchecked(sealed, Some(key)).map_err(|e| {
                        anyhow::anyhow!(
                            "{}/{} env {}: cannot open it with your recovery key: {e}",
                            ns,
                            t.name,
                            var.name
                        )
                    })?;
                    if opened.binding != binding {
                        bail!(
                            "{}/{} env {}: sealed for {}, not for {binding}: seal it for this workload (write it as value: with secret: true, then ui seal -f)",
                            ns,
                            t.name,
                            var.name,
                            opened.binding
                        );
                    }
                    let now = to.get_or_insert(nodes.qualifying(client, &ns, &spec, owner)?);
                    if opened.recipients == now.names(recovery) {
                        continue;
                    }
                    opened.value
                }
                _ => continue,
            };
            let now = match &to {
                Some(q) => q,
                None => to.insert(nodes.qualifying(client, &ns, &spec, owner)?),
            };
            let sealed = api::sealed::seal(&value, &binding, &now.recipients(recovery))
                .map_err(|e| anyhow::anyhow!("cannot seal env {}: {e}", var.name))?;
            replacements.push(Replace { doc: d, index: i, sealed });
            count += 1;
        }
        if count > 0 {
            let to = to.expect("computed for the first value");
            said.push(format!(
                "{} {count} value{} of workload {ns}/{} to {}",
                if args.refresh { "sealed again" } else { "sealed" },
                if count == 1 { "" } else { "s" },
                t.name,
                to.describe()
            ));
            if to.nodes.is_empty() {
                eprintln!(
                    "warning: {}: no node may run workload {ns}/{} now: its values open only with your recovery key until you run ui seal --refresh",
                    path.display(),
                    t.name
                );
            }
        }
    }
    if replacements.is_empty() {
        return Ok(None);
    }
    let out = rewrite(&text, &replacements)?;
    let mode = std::fs::metadata(path)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)?;
    crate::fsutil::write_atomic(path, out.as_bytes(), mode)?;
    Ok(Some(said.join("; ")))
}

/// The nodes a workload may run on: names and age recipients.
struct Qualifying {
    nodes: BTreeMap<String, age::x25519::Recipient>,
}

impl Qualifying {
    fn recipients(&self, recovery: &age::x25519::Recipient) -> Vec<age::x25519::Recipient> {
        self.nodes.values().cloned().chain(std::iter::once(recovery.clone())).collect()
    }

    fn names(&self, recovery: &age::x25519::Recipient) -> BTreeSet<String> {
        self.recipients(recovery).iter().map(ToString::to_string).collect()
    }

    fn describe(&self) -> String {
        let n = self.nodes.len();
        let names: Vec<&str> = self.nodes.keys().map(String::as_str).collect();
        match n {
            0 => "your recovery key only (no node may run it)".to_owned(),
            _ => format!(
                "{n} node{} ({}) and your recovery key",
                if n == 1 { "" } else { "s" },
                names.join(", ")
            ),
        }
    }
}

/// What placement decides with, read once from the cluster.
struct Nodes {
    topology: Topology,
    nodes: Vec<Arc<Kube<NodeSpec>>>,
    policies: BTreeMap<(String, String), Option<Arc<Kube<TrustPolicySpec>>>>,
}

fn typed<S: api::KindSpec + serde::de::DeserializeOwned>(client: &Client) -> anyhow::Result<Vec<Arc<Kube<S>>>>
where
    Kube<S>: serde::de::DeserializeOwned,
{
    let list = client.list(info::<S>(), None, None, false)?;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| serde_json::from_value(o.clone()).map(Arc::new).map_err(anyhow::Error::from))
        .collect()
}

impl Nodes {
    fn read(client: &Client) -> anyhow::Result<Self> {
        let members: BTreeSet<String> = client
            .get_json("/members")?
            .get("members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().map(str::to_owned))
            .collect();
        let objects = Objects {
            nodes: typed::<NodeSpec>(client)?,
            offers: typed::<NodeOfferSpec>(client)?,
            reputations: typed::<ReputationSpec>(client)?,
            attestations: typed::<AttestationSpec>(client)?,
            members: Arc::new(members),
        };
        let topology = Topology::build(&objects, chrono::Utc::now());
        Ok(Self { topology, nodes: objects.nodes, policies: BTreeMap::new() })
    }

    /// The nodes the scheduler's filters admit for a workload of `spec` in `ns` signed by
    /// `owner`, as if each were ready and empty.
    fn qualifying(
        &mut self,
        client: &Client,
        ns: &str,
        spec: &WorkloadSpec,
        owner: &str,
    ) -> anyhow::Result<Qualifying> {
        // The workload as the scheduler will see it: signed by its owner.
        let mut workload: Kube<WorkloadSpec> = serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1", "kind": "Workload",
            "metadata": { "name": "w", "namespace": ns, "annotations": { api::signing::SIGNER: owner } },
            "spec": {},
        }))?;
        workload.spec = spec.clone();
        let named = match &spec.trust_policy {
            None => None,
            Some(name) => {
                let key = (ns.to_owned(), name.clone());
                if !self.policies.contains_key(&key) {
                    let got = match client.get(info::<TrustPolicySpec>(), Some(ns), name) {
                        Ok(v) => Some(Arc::new(serde_json::from_value(v)?)),
                        Err(e) if e.is_not_found() => None,
                        Err(e) => return Err(e.into()),
                    };
                    self.policies.insert(key.clone(), got);
                }
                Some((name.as_str(), self.policies[&key].clone()))
            }
        };
        let policy =
            controllers::scheduler::owner_policy(&workload, named.as_ref().map(|(n, p)| (*n, p.as_deref())))
                .map_err(|(_, message)| anyhow::anyhow!("{message}"))?;
        let constraints = Constraints::of(spec.placement.as_ref());
        let mut nodes = BTreeMap::new();
        for (c, verdict) in self.topology.qualifying(policy.as_ref(), Some(owner), &constraints) {
            if verdict.is_err() {
                continue;
            }
            let Some(node) = self.nodes.iter().find(|n| n.name() == c.name && n.uid() == c.uid) else {
                continue;
            };
            match node.spec.age_recipient.as_str().parse::<age::x25519::Recipient>() {
                Ok(r) => {
                    nodes.insert(c.name.clone(), r);
                }
                Err(e) => {
                    eprintln!("warning: node {} has an unusable ageRecipient ({e}): not sealed to it", c.name)
                }
            }
        }
        Ok(Qualifying { nodes })
    }
}
