//! AI agents acting for you: `ui agent init NAME` (the agent's own key and directory),
//! `ui approvals`, `ui approve NAME`, `ui deny NAME` (its held requests) and `ui audit` (what
//! it did). What an agent may do is the AgentGrant you sign; the apiserver enforces it.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use api::kinds::{ApprovalSpec, ApprovalStatus, AuditEventSpec, decision};
use api::validation::check_dns1123_label;
use chrono::{Duration, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use super::{Context, Outcome};
use crate::connection::{ClusterArgs, connect};
use crate::fsutil::{self, PRIVATE_FILE};
use crate::keystore::{self, Identity, Protection};
use crate::output::OutputArgs;
use crate::passphrase::{PassphraseArgs, Purpose};
use crate::paths::ConfigDirs;

/// Give an AI agent a key of its own, acting for you within a grant you sign
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Init(InitArgs),
    Accept(AcceptArgs),
}

/// As an agent (in its directory): consent to act for a user under their AgentGrant
///
/// Prints the `spec.acceptance` to put in that grant: the agent key's signature over the user's
/// did and the grant's name. A grant without it gives the agent nothing, so nobody can make
/// someone else's key their agent by naming it. `ui agent init` writes one for its grant.
#[derive(Debug, clap::Args)]
pub struct AcceptArgs {
    /// The user's did:key (the grant's signer)
    #[arg(long, value_name = "DID")]
    owner: String,
    /// The AgentGrant's name
    #[arg(long, value_name = "NAME")]
    grant: String,
}

fn accept(ctx: &Context, args: &AcceptArgs) -> anyhow::Result<Outcome> {
    let owner = api::identity::Did::parse(&args.owner)
        .map_err(|e| anyhow::anyhow!("--owner {:?}: {e}", args.owner))?;
    check_dns1123_label(&args.grant).map_err(|e| anyhow::anyhow!("--grant {:?}: {e}", args.grant))?;
    let key = crate::unlock::signer(&ctx.dirs, || {
        anyhow::bail!("the agent's key is encrypted: unlock it (ui unlock)")
    })?;
    let acceptance =
        api::kinds::accept(&*key, owner.as_str(), &args.grant).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{acceptance}");
    Ok(Outcome::Success)
}

/// Make an AI agent's key and directory, and a starting AgentGrant for you to review and apply
///
/// The agent gets its own did:key, kept unencrypted in CONFIG_DIR/agents/NAME (it runs
/// unattended), a kubeconfig on your cluster, and `[agent]` in its config.toml naming you and
/// the grant: everything it signs there is signed on your behalf. It can do nothing until you
/// apply the AgentGrant written next to it (edit it first: verbs × kinds × namespaces,
/// autonomous, approval or forbidden, and an expiry). Then run `ui --config-dir DIR mcp` from
/// your desktop agent, or any `ui`/kubectl command with that directory or kubeconfig: the
/// apiserver enforces the grant whichever it uses.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The agent's name (a DNS label): its directory and its AgentGrant's name
    name: String,
    /// How long the starting grant lasts, in days
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    days: u32,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Serialize)]
struct Made {
    name: String,
    did: String,
    dir: PathBuf,
    kubeconfig: Option<PathBuf>,
    grant: PathBuf,
    /// The agent's acceptance of the grant named `name` from you (`spec.acceptance`).
    acceptance: String,
}

/// Where the agent `name` of the user in `ctx` lives.
fn agent_dir(ctx: &Context, name: &str) -> PathBuf {
    ctx.dirs.root().join("agents").join(name)
}

/// The AgentGrant `ui agent init` starts from: reads everything in `default`, asks before
/// creating or changing Workloads there, never deletes (forbidden unless granted).
fn starting_grant(name: &str, agent: &str, expires: &str, acceptance: &str) -> String {
    format!(
        r#"# What the AI agent {name:?} may do on your behalf. Review it, then: ui apply -f THIS_FILE
# Each rule: verbs (get list watch create update delete scale logs) × kinds × namespaces
# → autonomous (done at once), approval (held until you `ui approve`), or forbidden.
# Nothing is granted unless a rule says so; where rules overlap the strictest wins.
apiVersion: univrs.io/v1
kind: AgentGrant
metadata:
  name: {name}
spec:
  agent: {agent}
  # The agent's consent to act for you under this grant (its signature; ui agent accept).
  acceptance: {acceptance}
  expires: "{expires}"
  rules:
  - verbs: [get, list, watch, logs]
    kinds: ["*"]
    namespaces: [default]
    mode: autonomous
  - verbs: [create, update, scale]
    kinds: [Workload]
    namespaces: [default]
    mode: approval
  # Deleting is not granted: add a rule with verbs [delete] to allow it.
  # revealEnv: false          # whether it sees your workloads' environment values
  # spendingCap: "10"         # the most credits it may pay on your behalf
  # approvalTtlSeconds: 3600  # how long a held request waits for you
"#
    )
}

fn init(ctx: &Context, args: &InitArgs) -> anyhow::Result<Outcome> {
    check_dns1123_label(&args.name).map_err(|e| anyhow::anyhow!("agent name {:?}: {e}", args.name))?;
    if ctx.agent_of()?.is_some() {
        bail!("{} is an agent's directory: an agent cannot make agents", ctx.dirs.root().display());
    }
    let owner =
        keystore::load_public(&ctx.dirs).context("your identity is needed to make an agent (ui init)")?.did;
    let dir = agent_dir(ctx, &args.name);
    if dir.exists() {
        bail!(
            "agent {} exists already in {} (remove that directory to make it anew)",
            args.name,
            dir.display()
        );
    }
    let agent_dirs = ConfigDirs::resolve(Some(dir.clone()))?;
    ctx.dirs.ensure_root()?;
    fsutil::create_private_dir(&ctx.dirs.root().join("agents"))?;
    let identity = Identity::generate();
    keystore::store(&agent_dirs, &identity, &Protection::None, false)?;
    let did = identity.did();
    let config = format!(
        "# An AI agent's directory: everything signed here is signed on behalf of `owner`, under\n# the AgentGrant `grant`, and the apiserver allows only what that grant says.\n[agent]\nowner = \"{owner}\"\ngrant = \"{}\"\n",
        args.name
    );
    fsutil::write_atomic(&agent_dirs.config_file(), config.as_bytes(), PRIVATE_FILE)?;
    // A kubeconfig on your cluster, authenticating with the agent's key (its own `ui token`).
    let kubeconfig = match crate::connection::cluster_of(ctx, &args.cluster) {
        Ok(c) => {
            let path = dir.join("kubeconfig");
            let text = crate::kubeconfig::render(
                &c.server,
                &c.others,
                c.ca_pem.as_deref(),
                &c.audience,
                &["--config-dir".to_owned(), dir.display().to_string()],
                &[],
            );
            fsutil::write_atomic(&path, text.as_bytes(), PRIVATE_FILE)?;
            Some(path)
        }
        Err(e) => {
            eprintln!(
                "note: no kubeconfig for the agent ({e:#}); run `ui up` or pass --kubeconfig, then init again"
            );
            None
        }
    };
    let expires =
        (Utc::now() + Duration::days(i64::from(args.days))).to_rfc3339_opts(SecondsFormat::Secs, true);
    let grant = dir.join("agentgrant.yaml");
    let acceptance = api::kinds::accept(identity.signing_key(), owner.as_str(), &args.name)
        .map_err(|e| anyhow::anyhow!("cannot sign the agent's acceptance: {e}"))?;
    let text = starting_grant(&args.name, did.as_str(), &expires, &acceptance);
    fsutil::write_atomic(&grant, text.as_bytes(), PRIVATE_FILE)?;
    let made = Made {
        name: args.name.clone(),
        did: did.to_string(),
        dir: dir.clone(),
        kubeconfig,
        grant,
        acceptance,
    };
    if args.output.print_structured(&made)? {
        return Ok(Outcome::Success);
    }
    println!("agent {} made: {did}", args.name);
    println!("  its directory:  {}", dir.display());
    if let Some(k) = &made.kubeconfig {
        println!("  its kubeconfig: {}", k.display());
    }
    println!("It can do nothing until you apply its grant. Review it, then:");
    println!("  ui apply -f {}", made.grant.display());
    println!("Connect a desktop agent (an MCP client config):");
    let block = serde_json::json!({ "mcpServers": { format!("univrs-{}", args.name): {
        "command": crate::kubeconfig::plugin_command(),
        "args": ["--config-dir", dir.display().to_string(), "mcp"],
    } } });
    println!("{}", serde_json::to_string_pretty(&block)?);
    Ok(Outcome::Success)
}

pub fn run(ctx: &Context, cmd: &Command) -> anyhow::Result<Outcome> {
    match cmd {
        Command::Init(a) => init(ctx, a),
        Command::Accept(a) => accept(ctx, a),
    }
}

/// List your agents' requests that wait for your approval
///
/// Only the approvals you or your agent are party to are visible to you. `--all` shows the
/// decided and lapsed ones too (kept a day).
#[derive(Debug, clap::Args)]
pub struct ApprovalsArgs {
    /// Also the decided and lapsed ones
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    output: OutputArgs,
}

fn kind_approvals() -> &'static api::KindInfo {
    api::kinds::info::<ApprovalSpec>()
}

/// One approval, typed.
struct Held {
    name: String,
    uid: String,
    spec: ApprovalSpec,
    status: ApprovalStatus,
    raw: Value,
}

fn held(obj: Value) -> anyhow::Result<Held> {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_owned();
    let spec = serde_json::from_value(obj["spec"].clone()).with_context(|| format!("approval {name}"))?;
    let status =
        obj.get("status").cloned().map(serde_json::from_value).transpose().ok().flatten().unwrap_or_default();
    Ok(Held { name, uid, spec, status, raw: obj })
}

fn object_of(spec: &ApprovalSpec) -> String {
    let r = &spec.request;
    match &r.namespace {
        Some(ns) => format!("{}/{}/{}", r.kind, ns, r.name),
        None => format!("{}/{}", r.kind, r.name),
    }
}

pub fn approvals(ctx: &Context, args: &ApprovalsArgs) -> anyhow::Result<Outcome> {
    let client = connect(ctx, &args.cluster)?;
    let list = client.list(kind_approvals(), None, None, false)?;
    let mut all: Vec<Held> = Vec::new();
    for item in list["items"].as_array().cloned().unwrap_or_default() {
        let h = held(item)?;
        if args.all || !h.status.phase.is_final() {
            all.push(h);
        }
    }
    all.sort_by_key(|a| a.spec.expires.0);
    if args.output.print_structured(&all.iter().map(|h| &h.raw).collect::<Vec<_>>())? {
        return Ok(Outcome::Success);
    }
    if all.is_empty() {
        println!("no approvals{}", if args.all { "" } else { " waiting (--all for decided ones)" });
        return Ok(Outcome::Success);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|h| {
            vec![
                h.name.clone(),
                format!("{:?}", h.status.phase),
                h.spec.request.verb.as_str().to_owned(),
                object_of(&h.spec),
                h.spec.agent.to_string(),
                h.spec.expires.to_string(),
            ]
        })
        .collect();
    super::credits::print_table(&["NAME", "PHASE", "VERB", "OBJECT", "AGENT", "EXPIRES"], rows);
    Ok(Outcome::Success)
}

/// Approve (or deny) an agent's held request: shows it and its diff, signs your decision
///
/// The apiserver then performs exactly the request you saw, unchanged — only while the object
/// is still the version the diff is against and the agent's grant still allows it — or, denied,
/// nothing. The agent learns the outcome by watching the approval.
#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    /// The approval (`ui approvals` lists them)
    name: String,
    /// Print only the outcome, not the request and its diff
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn decide(ctx: &Context, args: &DecideArgs, approve: bool) -> anyhow::Result<Outcome> {
    if let Some(of) = ctx.agent_of()? {
        bail!(
            "{} is an agent's directory: an agent never decides an approval; {} does, with their own key",
            ctx.dirs.root().display(),
            of.owner
        );
    }
    let client = connect(ctx, &args.cluster)?;
    let h = held(client.get(kind_approvals(), None, &args.name)?)?;
    if h.status.phase.is_final() {
        bail!(
            "approval {} is decided already: {:?}{}",
            h.name,
            h.status.phase,
            h.status.message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default()
        );
    }
    if !args.quiet && !matches!(args.output.format, crate::output::Format::Json | crate::output::Format::Yaml)
    {
        println!(
            "approval {}: {} asks to {} {}",
            h.name,
            h.spec.agent,
            h.spec.request.verb.as_str(),
            object_of(&h.spec)
        );
        println!("  under AgentGrant {:?}, {}", h.spec.grant, h.spec.rule);
        // The diff made here, from the object as you read it (secrets and all metadata
        // included) to the exact request, never cut: what your signature approves.
        print!("{}", local_diff(&client, &h.spec)?);
    }
    let key = crate::unlock::signer(&ctx.dirs, || args.passphrase.get(Purpose::Existing, "your identity"))?;
    let mut d = decision::unsigned(&h.name, &h.uid, &h.spec.request.digest(), approve);
    api::signing::sign(&mut d, &*key, Utc::now())
        .map_err(|e| anyhow::anyhow!("cannot sign the decision: {e}"))?;
    let path =
        format!("{}/{}/decision", client::blocking::Client::path(kind_approvals(), None, None), h.name);
    let decided = held(client.post_json(&path, &d)?)?;
    if args.output.print_structured(&decided.raw)? {
        return Ok(Outcome::Success);
    }
    let message = decided.status.message.unwrap_or_default();
    println!("approval {}: {:?} — {message}", decided.name, decided.status.phase);
    Ok(match decided.status.phase {
        api::kinds::ApprovalPhase::Approved | api::kinds::ApprovalPhase::Denied => Outcome::Success,
        _ => Outcome::Failure,
    })
}

/// An object as a diff shows it: without what the server owns.
fn diff_view(obj: Option<&Value>) -> String {
    let Some(obj) = obj else { return String::new() };
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("status");
    }
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"] {
            meta.remove(k);
        }
    }
    serde_json::to_string_pretty(&o).unwrap_or_default() + "\n"
}

/// The request against the object as stored now, as the user reads it.
fn local_diff(client: &crate::connection::Client, spec: &ApprovalSpec) -> anyhow::Result<String> {
    let r = &spec.request;
    let kind = api::kinds::by_kind(&r.kind).with_context(|| format!("{:?} is not a kind", r.kind))?;
    let stored = match client.get(kind, r.namespace.as_deref(), &r.name) {
        Ok(v) => Some(v),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let mut out = String::new();
    let now = stored.as_ref().and_then(|s| s.pointer("/metadata/resourceVersion")).and_then(Value::as_str);
    if r.resource_version.is_some() && now != r.resource_version.as_deref() {
        out.push_str("  note: the object changed since the agent asked: approved, the request will fail\n");
    }
    let requested = match r.verb {
        api::kinds::AgentVerb::Delete => None,
        _ => r.object.as_ref(),
    };
    let (a, b) = (diff_view(stored.as_ref()), diff_view(requested));
    out.push_str(
        &similar::TextDiff::from_lines(&a, &b).unified_diff().header("stored", "requested").to_string(),
    );
    Ok(out)
}

/// What your agents did: every request of an agent's key, allowed, held or refused
///
/// Recorded by the apiserver through Raft whatever client the agent used (MCP, ui, kubectl),
/// kept 7 days and at most the newest 1000 per agent. You see the records of requests your
/// grants decided; an agent sees its own.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only this agent's requests (its did:key)
    #[arg(long, value_name = "DID")]
    agent: Option<String>,
    /// At most this many, the newest
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn audit(ctx: &Context, args: &AuditArgs) -> anyhow::Result<Outcome> {
    if let Some(did) = &args.agent {
        api::identity::Did::parse(did).map_err(|e| anyhow::anyhow!("--agent {did:?}: {e}"))?;
    }
    let client = connect(ctx, &args.cluster)?;
    let list = client.list(api::kinds::info::<AuditEventSpec>(), None, None, false)?;
    let mut events: Vec<(AuditEventSpec, Value)> = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|o| Some((serde_json::from_value::<AuditEventSpec>(o["spec"].clone()).ok()?, o)))
        .filter(|(s, _)| args.agent.as_deref().is_none_or(|a| s.agent.as_str() == a))
        .collect();
    events.sort_by_key(|a| a.0.at.0);
    let skip = events.len().saturating_sub(args.limit);
    let events = &events[skip..];
    if args.output.print_structured(&events.iter().map(|(s, _)| s).collect::<Vec<_>>())? {
        return Ok(Outcome::Success);
    }
    if events.is_empty() {
        println!("no requests by agents recorded");
        return Ok(Outcome::Success);
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|(s, _)| {
            let object = match (&s.namespace, &s.name) {
                (Some(ns), Some(n)) => format!("{}/{ns}/{n}", s.resource),
                (None, Some(n)) => format!("{}/{n}", s.resource),
                (Some(ns), None) => format!("{} in {ns}", s.resource),
                (None, None) => s.resource.clone(),
            };
            let mut reason = s.reason.clone();
            if reason.chars().count() > 100 {
                reason = reason.chars().take(99).collect::<String>() + "…";
            }
            vec![
                s.at.to_string(),
                s.agent.to_string(),
                s.grant.clone().unwrap_or_default(),
                format!("{}{}", s.verb, if s.dry_run { " (dry run)" } else { "" }),
                object,
                format!("{:?} {}", s.decision, s.code),
                reason,
            ]
        })
        .collect();
    super::credits::print_table(&["AT", "AGENT", "GRANT", "VERB", "OBJECT", "DECISION", "REASON"], rows);
    Ok(Outcome::Success)
}
