//! The registry's side of AI agents: a write the agent's grant holds becomes an Approval
//! ([`Registry::hold`]); the user's signed decision performs exactly that request or refuses it
//! ([`Registry::decide`]); every request of an agent's key is recorded as an AuditEvent
//! ([`Registry::audit`]); the leader sweeps lapsed approvals and old records
//! ([`Registry::sweep_agents`]). Who may do what is [`crate::access::agent`]'s.

use std::collections::HashMap;
use std::time::Duration;

use api::identity::Did;
use api::kinds::{
    AgentRequest, AgentVerb, ApprovalPhase, ApprovalSpec, ApprovalStatus, AuditDecision, AuditEventSpec,
    MAX_AUDIT_REASON, decision,
};
use api::meta::Time;
use api::object::KindSpec as _;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::meta::{meta_mut, meta_str};
use super::{ApiError, DeleteOptions, ObjectRef, Part, Registry, WriteOptions, unavailable};
use crate::access::Caller;
use crate::access::agent::Hold;
use crate::raft::rpc::MAX_OPS;
use crate::raft::{Expect, Op, Outcome};

/// The longest diff an approval keeps.
const MAX_DIFF_BYTES: usize = 64 * 1024;
/// How long AuditEvents are kept.
pub const AUDIT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most AuditEvents kept per agent (the newest).
pub const AUDIT_PER_AGENT: usize = 1000;
/// How long a decided or lapsed Approval is kept for its agent to read the outcome.
pub const DECIDED_APPROVAL_KEPT: Duration = Duration::from_secs(24 * 3600);

fn approvals() -> &'static api::KindInfo {
    api::kinds::info::<ApprovalSpec>()
}

fn audit_events() -> &'static api::KindInfo {
    api::kinds::info::<AuditEventSpec>()
}

/// The warning of a dry run whose request would be held.
pub(super) fn would_hold(hold: &Hold) -> String {
    format!(
        "this write would wait for the approval of {} (rule {} of AgentGrant {:?})",
        hold.owner, hold.rule, hold.grant
    )
}

/// The object as its author wrote it, as text to diff.
fn authored_text(obj: Option<&Value>) -> String {
    obj.and_then(|o| api::signing::authored(o).ok())
        .map(|a| serde_json::to_string_pretty(&a).expect("JSON serializes") + "\n")
        .unwrap_or_default()
}

/// A unified diff of `old` against `new`, cut at [`MAX_DIFF_BYTES`] (and saying so).
fn diff(old: Option<&Value>, new: Option<&Value>) -> String {
    let (a, b) = (authored_text(old), authored_text(new));
    let text = similar::TextDiff::from_lines(&a, &b).unified_diff().header("stored", "requested").to_string();
    if text.len() <= MAX_DIFF_BYTES {
        return text;
    }
    let mut end = MAX_DIFF_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n… (cut: the diff is {} bytes; the request is kept whole)\n", &text[..end], text.len())
}

fn new_name(prefix: &str, now: DateTime<Utc>) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}-{}", now.timestamp_millis(), &random[..8])
}

fn did(s: &str) -> Result<Did, ApiError> {
    Did::parse(s).map_err(|e| ApiError::Unavailable(format!("a stored did is not valid: {e}")))
}

/// An approval as stored, typed.
fn parse_approval(obj: &Value) -> Result<(ApprovalSpec, ApprovalStatus), ApiError> {
    let spec = serde_json::from_value(obj.get("spec").cloned().unwrap_or_default())
        .map_err(|e| unavailable(format!("a stored approval does not decode: {e}")))?;
    let status = obj.get("status").map(|s| serde_json::from_value(s.clone())).transpose().ok().flatten();
    Ok((spec, status.unwrap_or_default()))
}

impl Registry {
    /// Holds an agent's write as a pending Approval: the request exactly as it would be
    /// performed (`new` for a create, update or scale; the stored `old`'s version and uid as its
    /// precondition) and its diff. Returns the 202 the agent gets, or why it could not be held.
    pub(super) fn hold<'a>(
        &'a self,
        hold: &'a Hold,
        at: ObjectRef<'a>,
        old: Option<&'a Value>,
        new: Option<&'a Value>,
    ) -> super::store::BoxFuture<'a, ApiError> {
        // Boxed: holding creates an Approval, and create is what holds.
        Box::pin(async move {
            match self.try_hold(hold, at, old, new).await {
                Ok(e) | Err(e) => e,
            }
        })
    }

    async fn try_hold(
        &self,
        hold: &Hold,
        at: ObjectRef<'_>,
        old: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<ApiError, ApiError> {
        let now = Utc::now();
        let object = new.map(|n| {
            let mut o = n.clone();
            o.as_object_mut().expect("admitted objects are maps").remove("status");
            let meta = meta_mut(&mut o);
            for server_owned in ["resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"]
            {
                meta.remove(server_owned);
            }
            o
        });
        let request = AgentRequest {
            verb: hold.verb,
            kind: at.kind.kind.to_owned(),
            namespace: at.namespace.map(str::to_owned),
            name: at.name.to_owned(),
            object,
            resource_version: old.and_then(|o| meta_str(o, "resourceVersion")).map(str::to_owned),
            uid: old.and_then(|o| meta_str(o, "uid")).map(str::to_owned),
        };
        let agent_caller = Caller::identity(did(&hold.agent)?, false);
        let agent_view = match old {
            Some(o) => self.redact(&agent_caller, at.kind, o.clone()).await,
            None => None,
        };
        let expires = now + chrono::Duration::from_std(hold.ttl).expect("a ttl of days at most");
        let spec = ApprovalSpec {
            agent: did(&hold.agent)?,
            owner: did(&hold.owner)?,
            grant: hold.grant.clone(),
            rule: hold.rule.clone(),
            request,
            // As the agent may see the stored object: the approval is the agent's to read.
            diff: diff(agent_view.as_ref(), new),
            expires: Time(expires),
        };
        let name = new_name("approval", now);
        let obj = json!({
            "apiVersion": api::API_VERSION,
            "kind": ApprovalSpec::KIND,
            // Counted against the agent's quota, as its audit records are: an agent cannot
            // flood its user (or the control plane) with held requests.
            "metadata": { "name": name, "annotations": { api::signing::SIGNER: hold.agent } },
            "spec": spec,
            "status": ApprovalStatus::default(),
        });
        let agent = Caller::identity(did(&hold.agent)?, false);
        let key = ObjectRef::new(approvals(), None, &name).key();
        self.charge(&agent, &key, None, Some(&obj.to_string())).await?;
        let created = self.create(&Caller::system(), approvals(), obj, &WriteOptions::default()).await?;
        // A new object's status is dropped at create: the pending phase is written after.
        let rv = meta_str(&created.object, "resourceVersion").map(str::to_owned);
        self.write_approval_status(&name, rv.as_deref(), &ApprovalStatus::default())
            .await
            .map_err(after_a_write)?;
        let where_ = at.namespace.map(|ns| format!("{ns}/")).unwrap_or_default();
        Ok(ApiError::PendingApproval {
            message: format!(
                "{} {} {where_}{} waits for the approval of {} (rule {} of AgentGrant {:?}): held as Approval {name}, nothing else was written; {} decides with `ui approve {name}` or `ui deny {name}`; watch approvals/{name} for the outcome (it lapses at {})",
                hold.verb.as_str(),
                at.kind.plural,
                at.name,
                hold.owner,
                hold.rule,
                hold.grant,
                hold.owner,
                Time(expires),
            ),
            name,
        })
    }

    /// Writes an approval's status (the control plane's), with its `resourceVersion` as
    /// precondition when given.
    async fn write_approval_status(
        &self,
        name: &str,
        rv: Option<&str>,
        status: &ApprovalStatus,
    ) -> Result<Value, ApiError> {
        let at = ObjectRef::new(approvals(), None, name);
        let mut current = self.get(&Caller::system(), at, super::ReadAt::Latest).await?;
        if let Some(rv) = rv {
            meta_mut(&mut current).insert("resourceVersion".into(), rv.into());
        }
        current["status"] = serde_json::to_value(status).expect("a status serializes");
        Ok(self.update(&Caller::system(), at, Part::Status, current, &WriteOptions::default()).await?.object)
    }

    /// The user's decision on the approval `name`: a signed `ApprovalDecision` (see
    /// `api::kinds::decision`) by the approval's owner, for its uid and its request's digest.
    /// Approved, the request is performed exactly as held, as the agent, within its grant as it
    /// is now (deleted, expired or now forbidden: refused); denied, nothing is. Returns the
    /// approval as it ends.
    pub async fn decide(&self, who: &Caller, name: &str, signed: Value) -> Result<Value, ApiError> {
        let at = ObjectRef::new(approvals(), None, name);
        // Hidden from whoever is no party to it, as a get is.
        let current = self.get(who, at, super::ReadAt::Latest).await?;
        let (spec, status) = parse_approval(&current)?;
        let me = who.did.as_ref().map(|d| d.as_str());
        if me == Some(spec.agent.as_str()) {
            return Err(ApiError::Forbidden(format!(
                "{} cannot decide approval {name:?}: an agent never approves its own request; {} decides it",
                spec.agent, spec.owner
            )));
        }
        if me != Some(spec.owner.as_str()) {
            return Err(ApiError::Forbidden(format!(
                "{} cannot decide approval {name:?}: only {} (whose grant held it) decides it",
                who.name(),
                spec.owner
            )));
        }
        if status.phase.is_final() || status.decision.is_some() {
            return Err(ApiError::Conflict { kind: approvals().plural.into(), name: name.into() });
        }
        let now = Utc::now();
        if spec.expires.0 <= now {
            self.lapse(name, &current).await?;
            return Err(ApiError::Expired(format!(
                "approval {name:?} lapsed at {}: the request was not performed; the agent may ask again",
                spec.expires
            )));
        }
        let uid = meta_str(&current, "uid").unwrap_or_default();
        let approve =
            decision::check(&signed, name, uid, &spec.request.digest(), &spec.owner).map_err(|e| {
                ApiError::Invalid {
                    kind: approvals().kind.into(),
                    name: name.into(),
                    causes: vec![
                        api::FieldPath::root().child("status").child("decision").error(e.to_string()),
                    ],
                }
            })?;
        // The decision, first, with the approval's version as precondition: of two decisions
        // at once one wins, and a request is performed at most once.
        let rv = meta_str(&current, "resourceVersion");
        let mut decided = ApprovalStatus {
            phase: ApprovalPhase::Pending,
            decision: Some(signed),
            decided_at: Some(Time(now)),
            message: Some(if approve { "approved: performing the request".into() } else { String::new() }),
            resource_version: None,
        };
        if !approve {
            decided.phase = ApprovalPhase::Denied;
            decided.message = Some(format!("denied by {}: the request was not performed", spec.owner));
            return self.write_approval_status(name, rv, &decided).await;
        }
        self.write_approval_status(name, rv, &decided).await?;
        let outcome = self.perform(&spec).await;
        match &outcome {
            Ok(written_rv) => {
                decided.phase = ApprovalPhase::Approved;
                decided.message = Some(format!("approved by {}: performed", spec.owner));
                decided.resource_version = written_rv.clone();
            }
            Err(e) => {
                decided.phase = ApprovalPhase::Failed;
                decided.message = Some(format!("approved by {}, but not performed: {e}", spec.owner));
            }
        }
        let record = match &outcome {
            Ok(_) => (AuditDecision::Allowed, 200, format!("approved by {} (approval {name})", spec.owner)),
            Err(e) => {
                (AuditDecision::Refused, e.code(), format!("approved (approval {name}) but refused: {e}"))
            }
        };
        let agent = Caller::identity(spec.agent.clone(), false);
        agent.trail.note(crate::access::agent::GrantUse {
            owner: spec.owner.to_string(),
            grant: spec.grant.clone(),
        });
        let r = &spec.request;
        let resource = api::kinds::by_kind(&r.kind).map_or(r.kind.as_str(), |k| k.plural);
        self.audit(&agent, r.verb.as_str(), resource, r.namespace.as_deref(), Some(&r.name), false, record)
            .await;
        self.write_approval_status(name, None, &decided).await.map_err(after_a_write)
    }

    /// Performs an approved request as its agent; returns the written object's version.
    async fn perform(&self, spec: &ApprovalSpec) -> Result<Option<String>, ApiError> {
        let r = &spec.request;
        let kind = api::kinds::by_kind(&r.kind)
            .ok_or_else(|| ApiError::BadRequest(format!("{:?} is not a kind", r.kind)))?;
        let mut agent = Caller::identity(spec.agent.clone(), false);
        agent.approved = true;
        let at = ObjectRef::new(kind, r.namespace.as_deref(), &r.name);
        let opts = WriteOptions::default();
        let rv_of = |v: &Value| meta_str(v, "resourceVersion").map(str::to_owned);
        match r.verb {
            AgentVerb::Create => {
                let obj = r
                    .object
                    .clone()
                    .ok_or_else(|| ApiError::BadRequest("the request has no object".into()))?;
                Ok(rv_of(&self.create(&agent, kind, obj, &opts).await?.object))
            }
            AgentVerb::Update | AgentVerb::Scale => {
                let mut obj = r
                    .object
                    .clone()
                    .ok_or_else(|| ApiError::BadRequest("the request has no object".into()))?;
                // Only on the very version the user saw the diff against.
                if let Some(rv) = &r.resource_version {
                    meta_mut(&mut obj).insert("resourceVersion".into(), rv.clone().into());
                }
                if let Some(uid) = &r.uid {
                    meta_mut(&mut obj).insert("uid".into(), uid.clone().into());
                }
                Ok(rv_of(&self.update(&agent, at, Part::Main, obj, &opts).await?.object))
            }
            AgentVerb::Delete => {
                let opts = DeleteOptions {
                    resource_version: r
                        .resource_version
                        .as_deref()
                        .map(|rv| rv.parse())
                        .transpose()
                        .ok()
                        .flatten(),
                    uid: r.uid.clone(),
                    ..Default::default()
                };
                self.delete(&agent, at, &opts).await?;
                Ok(None)
            }
            verb => Err(ApiError::BadRequest(format!("{} is not a write", verb.as_str()))),
        }
    }

    /// Marks a pending approval that nobody decided in time as lapsed.
    async fn lapse(&self, name: &str, current: &Value) -> Result<(), ApiError> {
        let (spec, _) = parse_approval(current)?;
        let status = ApprovalStatus {
            phase: ApprovalPhase::Expired,
            decided_at: Some(Time(Utc::now())),
            message: Some(format!("nobody decided by {}: the request was not performed", spec.expires)),
            ..Default::default()
        };
        self.write_approval_status(name, meta_str(current, "resourceVersion"), &status).await.map(drop)
    }

    /// Records one request of an agent's key: `who` (its trail names the grant that decided
    /// it, if any), what it asked, and the decision (`(decision, HTTP code, reason)`).
    /// Recording never fails the request: a record that cannot be written is logged.
    #[allow(clippy::too_many_arguments)]
    pub async fn audit(
        &self,
        who: &Caller,
        verb: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
        dry_run: bool,
        (decision, code, reason): (AuditDecision, u16, String),
    ) {
        let Some(agent) = who.did.clone() else { return };
        let used = who.trail.used();
        let mut reason = reason;
        if reason.len() > MAX_AUDIT_REASON {
            let mut end = MAX_AUDIT_REASON - 3;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            reason.push('…');
        }
        let now = Utc::now();
        let spec = AuditEventSpec {
            agent,
            owner: used.as_ref().and_then(|u| Did::parse(&u.owner).ok()),
            grant: used.map(|u| u.grant).filter(|g| !g.is_empty()),
            verb: verb.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            dry_run,
            decision,
            code,
            reason,
            at: Time(now),
        };
        // Counted against the agent's own quota (the signer annotation is what the quota
        // ledger counts by): what an agent's requests cost is the agent's.
        let obj = json!({
            "apiVersion": api::API_VERSION,
            "kind": AuditEventSpec::KIND,
            "metadata": {
                "name": new_name("audit", now),
                "annotations": { api::signing::SIGNER: spec.agent.as_str() },
            },
            "spec": spec,
        });
        if let Err(e) = self.create(&Caller::system(), audit_events(), obj, &WriteOptions::default()).await {
            tracing::warn!("cannot record an agent's request ({verb} {resource}): {e}");
        }
    }

    /// Refuses a payment an agent signs on its user's behalf that would take what the agent has
    /// committed the user to under its grant past the grant's `spendingCap`: the Transfers
    /// signed by that agent under that grant, but those refused.
    pub(super) async fn check_spending_cap(&self, obj: &Value) -> Result<(), ApiError> {
        let ann =
            |k: &str| obj.pointer("/metadata/annotations").and_then(|a| a.get(k)).and_then(Value::as_str);
        let (Some(agent), Some(grant), Some(owner)) =
            (ann(api::signing::AGENT), ann(api::signing::GRANT), ann(api::signing::SIGNER))
        else {
            return Ok(());
        };
        let cap = self
            .grants_now(agent)
            .await?
            .iter()
            .find(|g| g.owner == owner && g.name == grant)
            .and_then(|g| g.spec.spending_cap);
        let Some(cap) = cap else { return Ok(()) };
        // Every Transfer is read: off the async workers.
        let (this, under) = (self.clone(), [agent, grant, owner].map(str::to_owned));
        let spent = tokio::task::spawn_blocking(move || this.spent_under(&under))
            .await
            .map_err(|e| ApiError::Unavailable(format!("adding up an agent's payments failed: {e}")))??;
        let asked = amount(obj);
        if spent.saturating_add(asked) > cap.micros() {
            let c = api::credits::Credits::from_micros;
            return Err(ApiError::Forbidden(format!(
                "{agent} may not pay {} on {owner}'s behalf: AgentGrant {grant:?} caps what it may commit {owner} to at {cap} (spec.spendingCap) and it has committed {} already; {owner} can raise spec.spendingCap and apply the grant again (ui apply -f GRANT.yaml)",
                c(asked),
                c(spent)
            )));
        }
        Ok(())
    }

    /// What the Transfers signed by `agent` under `grant` on `owner`'s behalf, but those
    /// refused, pay.
    fn spent_under(&self, [agent, grant, owner]: &[String; 3]) -> Result<i64, ApiError> {
        let kind = api::kinds::info::<api::kinds::TransferSpec>();
        let prefix = super::prefix(kind, None);
        let mut spent = 0i64;
        super::scan_now(&*self.store, &prefix, &mut |_, stored| {
            // Only a Transfer that names the agent is parsed.
            if !stored.value.contains(agent.as_str()) {
                return true;
            }
            let Ok(t) = serde_json::from_str::<Value>(&stored.value) else { return true };
            let a =
                |k: &str| t.pointer("/metadata/annotations").and_then(|a| a.get(k)).and_then(Value::as_str);
            if a(api::signing::AGENT) == Some(agent)
                && a(api::signing::GRANT) == Some(grant)
                && a(api::signing::SIGNER) == Some(owner)
                && t.pointer("/status/phase").and_then(Value::as_str) != Some("Refused")
            {
                spent = spent.saturating_add(amount(&t));
            }
            true
        })?;
        Ok(spent)
    }

    /// Whether `who` is an agent's key: named by a stored AgentGrant of someone else (expired
    /// ones too, so that the refusals after expiry are recorded; a grant naming its own signer
    /// makes no agent). Grants that cannot be read are an error (a 503), never "not an
    /// agent": an agent's request would then go unrecorded.
    pub async fn is_agent(&self, who: &Caller) -> Result<bool, ApiError> {
        let Some(did) = who.did.as_ref().filter(|_| !who.member) else { return Ok(false) };
        let grants = self.grants_now(did.as_str()).await?;
        Ok(grants.iter().any(|g| g.owner != did.as_str()))
    }

    /// Whether the agent `who` has room in its quota for one more audit record (its records
    /// count as its objects until the retention sweep removes them): a request that could not
    /// be recorded is refused before it runs, with a 429.
    pub async fn audit_room(&self, who: &Caller) -> Result<(), ApiError> {
        let Some(did) = &who.did else { return Ok(()) };
        let sample = json!({
            "kind": AuditEventSpec::KIND,
            "metadata": { "annotations": { api::signing::SIGNER: did.as_str() } },
            "spec": { "reason": "x".repeat(MAX_AUDIT_REASON) },
        });
        let key = super::prefix(audit_events(), None) + "sample";
        self.charge(who, &key, None, Some(&sample.to_string())).await.map_err(|e| match e {
            ApiError::TooManyRequests { message, retry_after } => ApiError::TooManyRequests {
                message: format!(
                    "your requests as an agent cannot be recorded: your audit records are at your quota ({message}); they are removed after {} days or beyond the newest {AUDIT_PER_AGENT}, every few minutes",
                    AUDIT_RETENTION.as_secs() / 86400
                ),
                retry_after: retry_after.max(300),
            },
            other => other,
        })
    }

    /// Marks lapsed approvals, removes decided ones after a day and AuditEvents past their
    /// retention or beyond the newest [`AUDIT_PER_AGENT`] of their agent. Returns how many
    /// objects it changed. The leader runs it every few minutes.
    pub async fn sweep_agents(&self, now: DateTime<Utc>) -> Result<usize, ApiError> {
        let mut changed = 0;
        let mut gone = Vec::new();
        let (all, _) = self.store.list(&super::prefix(approvals(), None)).map_err(unavailable)?;
        for (key, stored) in all {
            let Ok(obj) = serde_json::from_str::<Value>(&stored.value) else { continue };
            let Ok((spec, status)) = parse_approval(&obj) else { continue };
            if !status.phase.is_final() && status.decision.is_none() && spec.expires.0 <= now {
                let name = meta_str(&obj, "name").unwrap_or_default().to_owned();
                let mut current = obj.clone();
                meta_mut(&mut current)
                    .insert("resourceVersion".into(), stored.mod_revision.to_string().into());
                if self.lapse(&name, &current).await.is_ok() {
                    changed += 1;
                }
            } else if status.phase.is_final()
                && status.decided_at.is_none_or(|at| {
                    now.signed_duration_since(at.0).to_std().unwrap_or_default() > DECIDED_APPROVAL_KEPT
                })
            {
                gone.push((key, stored.mod_revision));
            }
        }
        let (all, _) = self.store.list(&super::prefix(audit_events(), None)).map_err(unavailable)?;
        let mut per_agent: HashMap<String, Vec<(DateTime<Utc>, String, u64)>> = HashMap::new();
        for (key, stored) in all {
            let Ok(obj) = serde_json::from_str::<Value>(&stored.value) else { continue };
            let Ok(spec) = serde_json::from_value::<AuditEventSpec>(obj["spec"].clone()) else { continue };
            if now.signed_duration_since(spec.at.0).to_std().unwrap_or_default() > AUDIT_RETENTION {
                gone.push((key, stored.mod_revision));
            } else {
                per_agent.entry(spec.agent.to_string()).or_default().push((
                    spec.at.0,
                    key,
                    stored.mod_revision,
                ));
            }
        }
        for mut records in per_agent.into_values() {
            if records.len() > AUDIT_PER_AGENT {
                records.sort();
                let excess = records.len() - AUDIT_PER_AGENT;
                gone.extend(records.into_iter().take(excess).map(|(_, k, rev)| (k, rev)));
            }
        }
        changed += self.delete_keys(gone).await?;
        Ok(changed)
    }

    /// Deletes `keys` (each at its revision), [`MAX_OPS`] to a Raft entry.
    pub(super) async fn delete_keys(&self, keys: Vec<(String, u64)>) -> Result<usize, ApiError> {
        let mut n = 0;
        for chunk in keys.chunks(MAX_OPS) {
            let ops = chunk
                .iter()
                .map(|(key, rev)| Op::Delete { key: key.clone(), expect: Expect::ModRevision(*rev) });
            // One changed meanwhile fails the precondition: the next sweep sees it again.
            if let (_, Outcome::Applied { .. }) = self.commit(ops.collect()).await? {
                n += chunk.len();
            }
        }
        Ok(n)
    }
}

/// An error after this request already wrote something (an Approval, a decision performed):
/// never one that says nothing was done ([`ApiError::NotReady`], which clients send again).
fn after_a_write(e: ApiError) -> ApiError {
    match e {
        ApiError::NotReady(why) => ApiError::Unavailable(why),
        e => e,
    }
}

/// What a Transfer pays, in micro-credits (none if it cannot be read).
fn amount(transfer: &Value) -> i64 {
    transfer
        .pointer("/spec/amount")
        .cloned()
        .and_then(|a| serde_json::from_value::<api::credits::Credits>(a).ok())
        .map_or(0, |c| c.micros())
}
