//! AI agents bound by what their user signed (issue 14): an agent's key made with `ui agent
//! init`, an AgentGrant the user applies, and the apiserver enforcing it for every request of
//! that key — through `ui`, through kubectl with the agent's own kubeconfig, through raw HTTP —
//! with approvals as objects the user decides and an audit of everything the agent asked.

mod support;

use std::path::PathBuf;

use support::{Kubectl, Run, Server, User, write};

/// An agent of `u`: its directory, did and a way to run `ui` as it.
struct Agent<'a> {
    u: &'a User,
    dir: PathBuf,
    did: String,
}

impl Agent<'_> {
    fn run(&self, args: &[&str]) -> Run {
        let out = self.u.cmd(args).env("UNIVRS_CONFIG_DIR", &self.dir).output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn kubectl(&self) -> Kubectl {
        Kubectl { kubeconfig: self.dir.join("kubeconfig"), cache: self.dir.join("kube-cache") }
    }
}

fn agent<'a>(u: &'a User, server: &Server, name: &str) -> Agent<'a> {
    let made = u
        .run(&["agent", "init", name, "--kubeconfig", server.kubeconfig.to_str().unwrap(), "-o", "json"])
        .ok()
        .json();
    Agent {
        u,
        dir: PathBuf::from(made["dir"].as_str().unwrap()),
        did: made["did"].as_str().unwrap().to_owned(),
    }
}

fn workload(name: &str, ns: &str, replicas: u32) -> String {
    format!(
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n  replicas: {replicas}\n  rootfs: busybox\n  command: [\"/bin/true\"]\n  env:\n  - name: TOKEN\n    value: s3cret\n"
    )
}

/// An AgentGrant `name` of `owner` naming the agent `a`, accepted by it (`ui agent accept`).
fn grant(a: &Agent<'_>, owner: &str, name: &str, expires: &str, rules: &str) -> String {
    let acceptance = a.run(&["agent", "accept", "--owner", owner, "--grant", name]).ok().stdout;
    format!(
        "apiVersion: univrs.io/v1\nkind: AgentGrant\nmetadata:\n  name: {name}\nspec:\n  agent: {}\n  acceptance: {}\n  expires: \"{expires}\"\n  rules:\n{rules}",
        a.did,
        acceptance.trim()
    )
}

const RULES: &str = concat!(
    "  - verbs: [get, list, watch, logs]\n    kinds: [\"*\"]\n    namespaces: [\"*\"]\n    mode: autonomous\n",
    "  - verbs: [create, update, scale]\n    kinds: [Workload]\n    namespaces: [sandbox]\n    mode: autonomous\n",
    "  - verbs: [create, update, delete]\n    kinds: [Workload]\n    namespaces: [default]\n    mode: approval\n",
    "  - verbs: [delete]\n    kinds: [Workload]\n    namespaces: [sandbox]\n    mode: forbidden\n",
);

fn later() -> String {
    (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn get(u: &User, server: &Server, what: &[&str]) -> Run {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json", "--kubeconfig", server.kubeconfig.to_str().unwrap()]);
    u.run(&args)
}

#[test]
fn an_agent_acts_for_its_user_only_within_the_grant_the_apiserver_enforces() {
    let u = User::new();
    let me = u.init_plain();
    let server = Server::start(&u, &u.path("data"));
    let kc = server.kubeconfig.to_str().unwrap().to_owned();
    let a = agent(&u, &server, "claude");
    assert_ne!(a.did, me);
    assert!(a.dir.join("agentgrant.yaml").exists());

    // Without a grant the agent acts for nobody: its write on the user's behalf is refused,
    // naming the missing grant, and nothing is written.
    let w = write(&u, "w-sandbox.yaml", &workload("web", "sandbox", 1));
    a.run(&["apply", "-f", &w]).fails_with(&["signed no AgentGrant \"claude\" naming this agent"]);
    assert!(get(&u, &server, &["workload", "web", "-n", "sandbox"]).code != 0);

    // The user signs the grant; an autonomous write is done at once, and the object is the
    // user's (its signer), the agent's signature showing who wrote it under which grant.
    let g = write(&u, "grant.yaml", &grant(&a, &me, "claude", &later(), RULES));
    u.run(&["apply", "-f", &g, "--kubeconfig", &kc]).ok();
    let out = a.run(&["apply", "-f", &w]).ok();
    assert!(out.stdout.contains("created"), "{}", out.stdout);
    let stored = get(&u, &server, &["workload", "web", "-n", "sandbox"]).ok().json();
    let ann = &stored["metadata"]["annotations"];
    assert_eq!(ann["univrs.io/signer"], me.as_str(), "the object is the user's");
    assert_eq!(ann["univrs.io/agent"], a.did.as_str());
    assert_eq!(ann["univrs.io/grant"], "claude");
    // The agent reads it with its env redacted (the grant does not reveal env), the user whole.
    let seen = a.run(&["get", "workload", "web", "-n", "sandbox", "-o", "json"]).ok().json();
    assert!(!seen.to_string().contains("s3cret"), "{seen}");
    assert!(stored.to_string().contains("s3cret"));
    // Putting the user's object in an apply set schedules its deletion by the next prune:
    // like its ownerReferences and finalizers, that needs delete (forbidden here).
    let labelled = workload("web", "sandbox", 1).replace(
        "  namespace: sandbox\n",
        "  namespace: sandbox\n  labels:\n    applyset.kubernetes.io/part-of: applyset-x-v1\n",
    );
    let labelled = write(&u, "w-labelled.yaml", &labelled);
    a.run(&["apply", "-f", &labelled]).fails_with(&["apply-set label", "needs delete granted autonomous"]);
    let stored = get(&u, &server, &["workload", "web", "-n", "sandbox"]).ok().json();
    assert_eq!(stored["metadata"]["labels"]["applyset.kubernetes.io/part-of"], serde_json::Value::Null);
    // No write answers with what the agent may not read: the user's object sent back as it is
    // (a merge patch of nothing, a dry run) is refused, and so is a JSON patch (its `test`
    // could probe a value) — over raw HTTP, as any client would send them.
    let token = a.run(&["token", "--audience", &server.audience]).ok().stdout.trim().to_owned();
    let url = format!("{}/apis/univrs.io/v1/namespaces/sandbox/workloads/web", server.url);
    let http = server.agent();
    let bearer = format!("Bearer {token}");
    let merge = "application/merge-patch+json";
    let (code, body) =
        support::send(&http, "PATCH", &format!("{url}?dryRun=All"), &bearer, merge, b"{}".to_vec());
    assert_eq!(code, 200, "its own writing, answered as it may read it: {body}");
    assert!(!body.contains("s3cret"), "{body}");
    let users = write(&u, "users.yaml", &workload("users", "sandbox", 1));
    u.run(&["apply", "-f", &users, "--kubeconfig", &kc]).ok();
    let (code, body) = support::send(
        &http,
        "PATCH",
        &format!("{url}?dryRun=All").replace("/web?", "/users?"),
        &bearer,
        merge,
        b"{}".to_vec(),
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("an agent writes only what it signed") && !body.contains("s3cret"), "{body}");
    let probe = br#"[{"op": "test", "path": "/spec/env/0/value", "value": "s3cret"}]"#.to_vec();
    let (code, body) = support::send(&http, "PATCH", &url, &bearer, "application/json-patch+json", probe);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("may not send JSON patches"), "{body}");
    // Scaling is granted in sandbox; signing a workload again needs all of it, so one whose
    // env values the agent may not see cannot be scaled by it, saying why.
    a.run(&["scale", "workload", "web", "3", "-n", "sandbox"])
        .fails_with(&["spec.env hidden", "revealEnv: true"]);
    let plain = write(
        &u,
        "plain.yaml",
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: plain\n  namespace: sandbox\nspec:\n  replicas: 1\n  rootfs: busybox\n  command: [\"/bin/true\"]\n",
    );
    a.run(&["apply", "-f", &plain]).ok();
    a.run(&["scale", "workload", "plain", "3", "-n", "sandbox"]).ok();
    assert_eq!(get(&u, &server, &["workload", "plain", "-n", "sandbox"]).ok().json()["spec"]["replicas"], 3);

    // A forbidden delete is refused with the rule that forbids it and how to change it —
    // through ui, and the same through kubectl with the agent's own kubeconfig.
    a.run(&["delete", "workload", "web", "-n", "sandbox"]).fails_with(&[
        "rule spec.rules[3]",
        "forbids it",
        "AgentGrant \"claude\"",
    ]);
    a.kubectl().fails(&["delete", "workloads", "web", "-n", "sandbox"], "forbids it");
    a.kubectl().fails(&["auth", "can-i", "delete", "workloads/web", "-n", "sandbox"], "");
    assert_eq!(a.kubectl().ok(&["auth", "can-i", "get", "workloads", "-n", "sandbox"]).trim(), "yes");
    // Unnamed: forbidden unless granted (a TrustPolicy), naming what to add.
    let tp = write(
        &u,
        "tp.yaml",
        "apiVersion: univrs.io/v1\nkind: TrustPolicy\nmetadata:\n  name: mine\n  namespace: sandbox\nspec: {}\n",
    );
    a.run(&["apply", "-f", &tp])
        .fails_with(&["no rule of AgentGrant \"claude\" grants it", "mode: autonomous"]);
    // The user changes and deletes what the agent made.
    u.run(&["delete", "workload", "web", "-n", "sandbox", "--kubeconfig", &kc]).ok();

    // An approval-gated write is held as an Approval: nothing else is written.
    let held = write(&u, "w-default.yaml", &workload("api", "default", 2));
    let out = a.run(&["apply", "-f", &held, "-o", "json"]).ok().json();
    assert_eq!(out[0]["result"], "held", "{out}");
    let approval = out[0]["approval"].as_str().unwrap().to_owned();
    assert!(get(&u, &server, &["workload", "api"]).code != 0, "nothing written before approval");
    let listed = u.run(&["approvals", "--kubeconfig", &kc]).ok().stdout;
    assert!(listed.contains(&approval) && listed.contains("Workload/default/api"), "{listed}");
    // The agent can never approve its own request.
    a.run(&["approve", &approval]).fails_with(&["an agent never decides an approval"]);
    // The user approves: the diff is shown, and exactly the request is performed.
    let out = u.run(&["approve", &approval, "--kubeconfig", &kc]).ok().stdout;
    assert!(out.contains("+    \"replicas\": 2") || out.contains("\"replicas\": 2"), "{out}");
    assert!(out.contains("Approved"), "{out}");
    let api = get(&u, &server, &["workload", "api"]).ok().json();
    assert_eq!(api["spec"]["replicas"], 2);
    assert_eq!(api["metadata"]["annotations"]["univrs.io/agent"], a.did.as_str());
    // The agent sees the outcome on the approval.
    let seen = a.run(&["get", "approvals", &approval, "-o", "json"]).ok().json();
    assert_eq!(seen["status"]["phase"], "Approved", "{seen}");

    // A denied request never happens.
    let denied = write(&u, "w-denied.yaml", &workload("nope", "default", 1));
    let out = a.run(&["apply", "-f", &denied, "-o", "json"]).ok().json();
    let approval = out[0]["approval"].as_str().unwrap().to_owned();
    u.run(&["deny", &approval, "--kubeconfig", &kc]).ok();
    assert!(get(&u, &server, &["workload", "nope"]).code != 0);
    u.run(&["approve", &approval, "--kubeconfig", &kc]).fails_with(&["decided already"]);

    // The audit names every request of the agent: allowed, held and refused.
    let audit =
        u.run(&["audit", "--agent", &a.did, "-o", "json", "--limit", "500", "--kubeconfig", &kc]).ok().json();
    let decisions: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["verb"].as_str().unwrap().to_owned(), e["decision"].as_str().unwrap().to_owned()))
        .collect();
    for wanted in
        [("create", "Allowed"), ("create", "PendingApproval"), ("delete", "Refused"), ("create", "Refused")]
    {
        assert!(
            decisions.iter().any(|(v, d)| v == wanted.0 && d == wanted.1),
            "{wanted:?} not in {decisions:?}"
        );
    }
    let refused = audit.as_array().unwrap().iter().find(|e| e["verb"] == "delete").unwrap();
    assert!(refused["reason"].as_str().unwrap().contains("forbids it"), "{refused}");
    assert_eq!(refused["grant"], "claude");

    // Deleting the grant cuts the agent off at once.
    u.run(&["delete", "agentgrant", "claude", "--kubeconfig", &kc]).ok();
    a.run(&["apply", "-f", &w]).fails_with(&["signed no AgentGrant \"claude\""]);
    server.stop();
}

#[test]
fn a_grant_the_agent_did_not_accept_gives_nothing_and_makes_no_one_an_agent() {
    let u = User::new();
    let me = u.init_plain();
    let server = Server::start(&u, &u.path("data"));
    let kc = server.kubeconfig.to_str().unwrap().to_owned();
    let a = agent(&u, &server, "quiet");
    // Without spec.acceptance: stored with a warning, and the agent acts for nobody.
    let text = grant(&a, &me, "quiet", &later(), RULES)
        .lines()
        .filter(|l| !l.contains("acceptance"))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    let g = support::write_signed(&u, "grant.yaml", &text);
    let k = Kubectl { kubeconfig: server.kubeconfig.clone(), cache: u.path("kube-cache") };
    let out = k.run(&["apply", "-f", &g]);
    assert!(out.ok && out.stderr.contains("has no spec.acceptance"), "{}{}", out.stdout, out.stderr);
    let w = write(&u, "w.yaml", &workload("web", "sandbox", 1));
    a.run(&["apply", "-f", &w]).fails_with(&["signed no AgentGrant \"quiet\" naming this agent"]);
    // Nothing it asks is recorded: naming a key makes it no agent (a stranger cannot make
    // your requests audited and costly).
    a.run(&["get", "workloads", "-n", "sandbox"]).ok();
    let audit = u.run(&["audit", "-o", "json", "--kubeconfig", &kc]).ok().json();
    assert_eq!(audit.as_array().map(Vec::len), Some(0), "{audit}");
    // An acceptance for another grant name is refused, naming the field.
    let stolen = grant(&a, &me, "other-name", &later(), RULES).replace("name: other-name", "name: quiet");
    let g = write(&u, "stolen.yaml", &stolen);
    u.run(&["apply", "-f", &g, "--kubeconfig", &kc])
        .fails_with(&["spec.acceptance", "is not the agent's signature"]);
    server.stop();
}

#[test]
fn an_expired_grant_a_strangers_grant_and_forged_decisions_count_for_nothing() {
    let u = User::new();
    let me = u.init_plain();
    let server = Server::start(&u, &u.path("data"));
    let kc = server.kubeconfig.to_str().unwrap().to_owned();
    let a = agent(&u, &server, "bot");

    // Expired: refused, saying so and how to renew.
    let past = (chrono::Utc::now() - chrono::Duration::minutes(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let g = write(&u, "grant.yaml", &grant(&a, &me, "bot", &past, RULES));
    u.run(&["apply", "-f", &g, "--kubeconfig", &kc]).ok();
    let w = write(&u, "w.yaml", &workload("web", "sandbox", 1));
    a.run(&["apply", "-f", &w]).fails_with(&["expired", "spec.expires"]);

    // A stranger signs a grant naming the same agent and the same grant name: it counts only
    // for the stranger's objects, never the user's.
    let mallory = User::new();
    let mallory_did = mallory.init_plain();
    let mkc = server.kubeconfig_for(&mallory);
    let mkc = mkc.to_str().unwrap();
    let mg = write(&mallory, "grant.yaml", &grant(&a, &mallory_did, "bot-m", &later(), RULES));
    mallory.run(&["apply", "-f", &mg, "--kubeconfig", mkc]).ok();
    // The agent names mallory's grant on the user's behalf: refused.
    let cfg = a.dir.join("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("grant = \"bot\"", "grant = \"bot-m\"");
    std::fs::write(&cfg, text).unwrap();
    a.run(&["apply", "-f", &w]).fails_with(&["signed no AgentGrant \"bot-m\" naming this agent"]);
    assert!(get(&u, &server, &["workload", "web", "-n", "sandbox"]).code != 0);

    // Renewed: it works again.
    let text = std::fs::read_to_string(&cfg).unwrap().replace("grant = \"bot-m\"", "grant = \"bot\"");
    std::fs::write(&cfg, text).unwrap();
    let g = write(&u, "grant.yaml", &grant(&a, &me, "bot", &later(), RULES));
    u.run(&["apply", "-f", &g, "--kubeconfig", &kc]).ok();
    a.run(&["apply", "-f", &w]).ok();

    // An approval's decision signed by anyone but its owner is refused, changing nothing.
    let held = write(&u, "held.yaml", &workload("api", "default", 1));
    let out = a.run(&["apply", "-f", &held, "-o", "json"]).ok().json();
    let approval = out[0]["approval"].as_str().unwrap().to_owned();
    mallory.run(&["approve", &approval, "--kubeconfig", mkc]).fails_with(&["not found"]);
    let phase = a.run(&["get", "approvals", &approval, "-o", "json"]).ok().json()["status"]["phase"].clone();
    assert_eq!(phase, "Pending");
    // Nobody else sees the approval (it holds the agent's whole request).
    let theirs = mallory.run(&["get", "approvals", "-o", "json", "--kubeconfig", mkc]).ok().json();
    assert_eq!(theirs["items"].as_array().map(Vec::len), Some(0), "{theirs}");
    // The grant itself can never be written by the agent, whatever a grant says.
    let widen = write(
        &u,
        "widen.yaml",
        &grant(
            &a,
            &me,
            "bot",
            &later(),
            "  - verbs: [delete]\n    kinds: [\"*\"]\n    namespaces: [\"*\"]\n    mode: autonomous\n",
        ),
    );
    a.run(&["apply", "-f", &widen]).fails_with(&["never writes AgentGrant objects"]);
    server.stop();
}
