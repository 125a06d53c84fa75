//! `ui credits balance|history|send|grant`: the mutual-credit ledger from a user's side.
//!
//! Balances are the apiserver's (each identity's read-only Account, posted in the Raft entry of
//! each committed Transfer); a payment is a Transfer signed by its payer, decided on the credit
//! line its payee grants when it is written; a credit line is a CreditGrant signed by its
//! granter (see `api::ledger`).

use anyhow::{Context as _, bail};
use api::credits::Credits;
use api::identity::Did;
use api::kinds::{AccountStatus, CreditGrantSpec, TransferSpec, account_name};
use api::object::KindSpec;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Context, Outcome};
use crate::connection::ClusterArgs;
use crate::output::OutputArgs;
use crate::passphrase::{PassphraseArgs, Purpose};

/// Balances, payments and credit lines (mutual credit: no bank, no minting)
///
/// Every identity's balance starts at zero; a payment moves credits from its payer to its payee
/// and is committed only within the credit line the payee grants the payer (a CreditGrant the
/// payee signs), so the sum of all balances is always zero.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Balance(BalanceArgs),
    History(HistoryArgs),
    Send(SendArgs),
    Grant(GrantArgs),
}

/// Show a balance, its lines with each counterparty and the credit available
#[derive(Debug, clap::Args)]
pub struct BalanceArgs {
    /// Whose balance [default: yours]
    did: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// List the transfers to and from an identity, newest first
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Whose transfers [default: yours]
    did: Option<String>,
    /// At most this many
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: usize,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Pay someone: a Transfer signed by you, committed within the credit line they grant you
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Who is paid (did:key)
    to: String,
    /// How much, as a decimal (at most 6 decimals), e.g. 12.5
    amount: String,
    /// A note for the payee (at most 256 bytes)
    #[arg(long)]
    memo: Option<String>,
    /// Ask the apiserver what it would decide, and change nothing
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Extend a credit line: let someone owe you up to LIMIT (a CreditGrant signed by you)
///
/// Granting again to the same identity replaces the grant (a lower limit cuts the line; the
/// credit already drawn stays owed). `ui delete creditgrant NAME` ends it.
#[derive(Debug, clap::Args)]
pub struct GrantArgs {
    /// Who may owe you (did:key)
    grantee: String,
    /// The most they may owe you, as a decimal, e.g. 100
    limit: String,
    /// When the line ends: an RFC 3339 time or a duration from now (30d, 12h, 90m)
    #[arg(long, value_name = "WHEN")]
    expires: Option<String>,
    /// The CreditGrant's name [default: grant-GRANTEE, abbreviated]
    #[arg(long)]
    name: Option<String>,
    /// Show what would be written, and change nothing
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn run(ctx: &Context, cmd: &Command) -> anyhow::Result<Outcome> {
    match cmd {
        Command::Balance(a) => balance(ctx, a),
        Command::History(a) => history(ctx, a),
        Command::Send(a) => send(ctx, a),
        Command::Grant(a) => grant(ctx, a),
    }
}

/// Prints rows under headers, aligned as `ui get` aligns them.
pub(crate) fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let table = crate::table::Table { headers: headers.iter().map(|h| (*h).to_owned()).collect(), rows };
    print!("{}", table.render());
}

fn whose(ctx: &Context, did: Option<&str>) -> anyhow::Result<Did> {
    match did {
        Some(d) => Did::parse(d).with_context(|| format!("{d:?} is not a did:key")),
        None => ctx.acting_for(),
    }
}

fn parse_amount(s: &str, what: &str) -> anyhow::Result<Credits> {
    let c = Credits::parse(s).with_context(|| what.to_owned())?;
    if c <= Credits::ZERO {
        bail!("{what}: {s} must be more than 0");
    }
    Ok(c)
}

/// One line of a balance: the counterparty, the balance with it, the credit it grants.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    /// The other identity (did:key).
    pub counterparty: String,
    /// What the counterparty owes (> 0) or is owed (< 0).
    pub balance: Credits,
    /// The credit lines the counterparty grants now (what may be owed it).
    pub credit_granted_to_you: Credits,
    /// The credit lines granted the counterparty.
    pub credit_you_grant: Credits,
    /// What may still be paid to the counterparty: balance + credit granted.
    pub available: Credits,
}

/// An identity's balance, its lines with each counterparty and the credit available.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    /// Whose.
    pub did: String,
    /// The Account object's name.
    pub account: String,
    /// The balance (what others owe minus what is owed them).
    pub balance: Credits,
    /// How many transfers were committed.
    pub transfers: u64,
    /// Per counterparty.
    pub lines: Vec<Line>,
}

fn balance(ctx: &Context, args: &BalanceArgs) -> anyhow::Result<Outcome> {
    let did = whose(ctx, args.did.as_deref())?;
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let report = balance_of(&client, &did)?;
    if !args.output.print_structured(&report)? {
        println!("{}: balance {} ({} transfers)", did.short(), report.balance, report.transfers);
        if !report.lines.is_empty() {
            let rows: Vec<Vec<String>> = report
                .lines
                .iter()
                .map(|l| {
                    vec![
                        l.counterparty.clone(),
                        l.balance.to_string(),
                        l.credit_granted_to_you.to_string(),
                        l.credit_you_grant.to_string(),
                        l.available.to_string(),
                    ]
                })
                .collect();
            print_table(&["COUNTERPARTY", "BALANCE", "CREDIT-TO-YOU", "CREDIT-YOU-GRANT", "AVAILABLE"], rows);
        }
    }
    Ok(Outcome::Success)
}

/// The balance of `did`: its Account's status and the credit lines granted to and by it, as
/// `ui credits balance` and the MCP `balance` tool show them.
pub fn balance_of(client: &crate::connection::Client, did: &Did) -> anyhow::Result<Balance> {
    let did = did.clone();
    let account_kind = api::kinds::info::<api::kinds::AccountSpec>();
    let name = account_name(&did);
    let status: AccountStatus = match client.get(account_kind, None, &name) {
        Ok(a) => serde_json::from_value(a["status"].clone()).unwrap_or_default(),
        Err(e) if e.is_not_found() => AccountStatus::default(),
        Err(e) => return Err(e).context("cannot read the account"),
    };
    let grants = client
        .list(api::kinds::info::<CreditGrantSpec>(), None, None, false)
        .context("cannot list credit grants")?;
    let now = Utc::now();
    let mut to_me: std::collections::BTreeMap<String, Credits> = Default::default();
    let mut by_me: std::collections::BTreeMap<String, Credits> = Default::default();
    for g in grants["items"].as_array().into_iter().flatten() {
        let Ok(spec) = serde_json::from_value::<CreditGrantSpec>(g["spec"].clone()) else { continue };
        let Some(granter) = g
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(api::signing::SIGNER))
            .and_then(Value::as_str)
        else {
            continue;
        };
        if spec.expires.as_ref().is_some_and(|e| e.0 <= now) {
            continue;
        }
        let add = |m: &mut std::collections::BTreeMap<String, Credits>, k: &str| {
            let e = m.entry(k.to_owned()).or_default();
            *e = e.checked_add(spec.limit).unwrap_or(*e);
        };
        if spec.grantee == did {
            add(&mut to_me, granter);
        }
        if granter == did.as_str() {
            add(&mut by_me, spec.grantee.as_str());
        }
    }
    let mut parties: std::collections::BTreeSet<String> =
        status.lines.iter().map(|l| l.counterparty.as_str().to_owned()).collect();
    parties.extend(to_me.keys().cloned());
    parties.extend(by_me.keys().cloned());
    let lines: Vec<Line> = parties
        .into_iter()
        .map(|p| {
            let balance = status
                .lines
                .iter()
                .find(|l| l.counterparty.as_str() == p)
                .map_or(Credits::ZERO, |l| l.balance);
            let granted = to_me.get(&p).copied().unwrap_or_default();
            Line {
                available: balance.checked_add(granted).unwrap_or(balance).max(Credits::ZERO),
                counterparty: p.clone(),
                balance,
                credit_granted_to_you: granted,
                credit_you_grant: by_me.get(&p).copied().unwrap_or_default(),
            }
        })
        .collect();
    Ok(Balance {
        did: did.as_str().to_owned(),
        account: name,
        balance: status.balance,
        transfers: status.transfers,
        lines,
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    name: String,
    decided_at: Option<String>,
    phase: String,
    reason: String,
    /// Signed from the identity's side: + received, − paid.
    amount: Credits,
    counterparty: String,
    memo: Option<String>,
    message: Option<String>,
}

fn history(ctx: &Context, args: &HistoryArgs) -> anyhow::Result<Outcome> {
    let did = whose(ctx, args.did.as_deref())?;
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let all = client
        .list(api::kinds::info::<TransferSpec>(), None, None, false)
        .context("cannot list transfers")?;
    let mut entries: Vec<Entry> = Vec::new();
    for t in all["items"].as_array().into_iter().flatten() {
        let Ok(spec) = serde_json::from_value::<TransferSpec>(t["spec"].clone()) else { continue };
        let payer = t["status"]["payer"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| spec.from.as_ref().map(|d| d.as_str().to_owned()));
        let (amount, counterparty) = if payer.as_deref() == Some(did.as_str()) {
            (Credits::ZERO.checked_sub(spec.amount).unwrap_or_default(), spec.to.as_str().to_owned())
        } else if spec.to == did {
            (spec.amount, payer.unwrap_or_default())
        } else {
            continue;
        };
        entries.push(Entry {
            name: t["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
            decided_at: t["status"]["decidedAt"].as_str().map(str::to_owned),
            phase: t["status"]["phase"].as_str().unwrap_or("Pending").to_owned(),
            reason: t["spec"]["reason"].as_str().unwrap_or_default().to_owned(),
            amount,
            counterparty,
            memo: spec.memo.clone(),
            message: t["status"]["message"].as_str().map(str::to_owned),
        });
    }
    entries.sort_by(|a, b| b.decided_at.cmp(&a.decided_at).then(a.name.cmp(&b.name)));
    entries.truncate(args.limit);
    if !args.output.print_structured(&entries)? {
        if entries.is_empty() {
            println!("no transfers to or from {}", did.short());
            return Ok(Outcome::Success);
        }
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    e.decided_at.clone().unwrap_or_default(),
                    e.reason.clone(),
                    e.phase.clone(),
                    e.amount.to_string(),
                    e.counterparty.clone(),
                    e.memo.clone().or_else(|| e.message.clone()).unwrap_or_default(),
                ]
            })
            .collect();
        print_table(&["DECIDED", "REASON", "PHASE", "AMOUNT", "COUNTERPARTY", "MEMO"], rows);
    }
    Ok(Outcome::Success)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Sent {
    name: String,
    phase: String,
    message: Option<String>,
    dry_run: bool,
}

fn send(ctx: &Context, args: &SendArgs) -> anyhow::Result<Outcome> {
    let to = Did::parse(&args.to).with_context(|| format!("{:?} is not a did:key", args.to))?;
    let amount = parse_amount(&args.amount, "AMOUNT")?;
    if args.memo.as_ref().is_some_and(|m| m.len() > 256) {
        bail!("--memo: at most 256 bytes");
    }
    let me = ctx.acting_for()?;
    if me == to {
        bail!("you cannot pay yourself");
    }
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let now = Utc::now();
    // One name per payment: a request the client sends again (a member failed over) finds it
    // written and pays nothing twice.
    let name = format!("pay-{}-{}", now.format("%Y%m%d%H%M%S%3f"), &account_name(&me)[..12]);
    let spec = TransferSpec {
        from: Some(me.clone()),
        to: to.clone(),
        amount,
        reason: api::kinds::TransferReason::Payment,
        replica: None,
        workload: None,
        memo: args.memo.clone(),
    };
    let mut obj = json!({
        "apiVersion": api::API_VERSION, "kind": TransferSpec::KIND,
        "metadata": { "name": name }, "spec": spec,
    });
    let key = crate::unlock::signer(&ctx.dirs, || args.passphrase.get(Purpose::Existing, "your identity"))?;
    ctx.sign(&mut obj, &*key, now).map_err(|e| anyhow::anyhow!("cannot sign the payment: {e:#}"))?;
    let kind = api::kinds::info::<TransferSpec>();
    let written = match client.create(kind, None, &obj, args.dry_run) {
        Ok(w) => w,
        Err(e) if e.is_conflict() => client.get(kind, None, &name).context("cannot read the payment back")?,
        Err(e) => return Err(e).context("cannot send the payment"),
    };
    let report = Sent {
        name: name.clone(),
        phase: written["status"]["phase"].as_str().unwrap_or("Pending").to_owned(),
        message: written["status"]["message"].as_str().map(str::to_owned),
        dry_run: args.dry_run,
    };
    let refused = report.phase == "Refused";
    if !args.output.print_structured(&report)? {
        let dry = if args.dry_run { " (dry run)" } else { "" };
        match &report.message {
            Some(m) if refused => println!("transfer.univrs.io/{name} refused{dry}: {m}"),
            _ => println!(
                "transfer.univrs.io/{name} {}{dry}: {amount} to {}",
                report.phase.to_lowercase(),
                to.short()
            ),
        }
    }
    Ok(if refused { Outcome::Failure } else { Outcome::Success })
}

/// An expiry: an RFC 3339 time, or a duration from `now` (`30d`, `12h`, `90m`, `45s`).
fn parse_expiry(s: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = n.parse().map_err(|_| {
        anyhow::anyhow!("--expires {s:?}: write an RFC 3339 time or a duration such as 30d, 12h, 90m")
    })?;
    let d = match unit {
        "d" => chrono::Duration::try_days(n),
        "h" => chrono::Duration::try_hours(n),
        "m" => chrono::Duration::try_minutes(n),
        "s" => chrono::Duration::try_seconds(n),
        _ => None,
    }
    .ok_or_else(|| {
        anyhow::anyhow!("--expires {s:?}: write an RFC 3339 time or a duration such as 30d, 12h, 90m")
    })?;
    Ok(now + d)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Granted {
    name: String,
    grantee: String,
    limit: Credits,
    expires: Option<String>,
    changed: bool,
    dry_run: bool,
}

fn grant(ctx: &Context, args: &GrantArgs) -> anyhow::Result<Outcome> {
    let grantee =
        Did::parse(&args.grantee).with_context(|| format!("{:?} is not a did:key", args.grantee))?;
    let limit = parse_amount(&args.limit, "LIMIT")?;
    let now = Utc::now();
    let expires = args.expires.as_deref().map(|e| parse_expiry(e, now)).transpose()?;
    if expires.is_some_and(|e| e <= now) {
        bail!("--expires: the line would have ended already");
    }
    let me = ctx.acting_for()?;
    if me == grantee {
        bail!("a credit line to yourself means nothing");
    }
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("grant-{}-{}", &account_name(&me)[..16], &account_name(&grantee)[..16]));
    let spec = CreditGrantSpec { grantee: grantee.clone(), limit, expires: expires.map(api::meta::Time) };
    let client = crate::connection::connect(ctx, &args.cluster)?;
    let kind = api::kinds::info::<CreditGrantSpec>();
    let mut key = None;
    let written =
        client.modify_dry(kind, None, &name, args.dry_run, |current| -> anyhow::Result<Option<Value>> {
            if let Some(c) = current {
                let signer = c
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(api::signing::SIGNER))
                    .and_then(Value::as_str);
                if signer != Some(me.as_str()) {
                    bail!(
                        "the name creditgrant {name} is taken by {}: choose another with --name",
                        signer.unwrap_or("nobody")
                    );
                }
                if serde_json::from_value::<CreditGrantSpec>(c["spec"].clone()).ok().as_ref() == Some(&spec) {
                    return Ok(None);
                }
            }
            let mut obj = json!({
                "apiVersion": api::API_VERSION, "kind": CreditGrantSpec::KIND,
                "metadata": { "name": name }, "spec": spec,
            });
            let signer = match &key {
                Some(k) => k,
                None => key.insert(crate::unlock::signer(&ctx.dirs, || {
                    args.passphrase.get(Purpose::Existing, "your identity")
                })?),
            };
            ctx.sign(&mut obj, &**signer, Utc::now())
                .map_err(|e| anyhow::anyhow!("cannot sign the grant: {e:#}"))?;
            Ok(Some(obj))
        });
    let changed = written.with_context(|| format!("cannot grant credit as creditgrant {name}"))?.is_some();
    let report = Granted {
        name: name.clone(),
        grantee: grantee.as_str().to_owned(),
        limit,
        expires: expires.map(|e| e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        changed,
        dry_run: args.dry_run,
    };
    if !args.output.print_structured(&report)? {
        let until = report.expires.as_deref().map(|e| format!(" until {e}")).unwrap_or_default();
        let what = if !changed {
            "unchanged"
        } else if args.dry_run {
            "would be written (dry run)"
        } else {
            "granted"
        };
        println!("creditgrant.univrs.io/{name} {what}: {} may owe you up to {limit}{until}", grantee.short());
    }
    Ok(Outcome::Success)
}
