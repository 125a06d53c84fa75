//! `ui cluster members|add|remove`: the control plane's own members.

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{Context, Outcome};
use crate::connection::ClusterArgs;
use crate::output::OutputArgs;

/// The control plane's members: list, add, remove
///
/// A cluster grows one member at a time: on a running member, `ui cluster add DID ADDRESS`
/// with the new member's did (printed by its `ui apiserver` at start, from its data dir's
/// member.key) and transport address; then start the new member with
/// `--peer-listen ADDRESS --join MEMBER_DID@MEMBER_ADDRESS`. It catches up as a learner and
/// becomes a voter. Only members may add or remove members.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List the members: id, address, role, who leads, last applied index
    Members {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Let a new member join (as a learner, then a voter once it has caught up)
    Add {
        /// The new member's did:key
        did: String,
        /// Its transport address (what it passes to --peer-listen), IP:PORT
        address: String,
        /// Its API URL, shown in `ui cluster members` and used by clients to fail over
        #[arg(long, value_name = "URL", default_value = "")]
        api: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print the did of a data dir's member key, making the key if the dir has none yet
    ///
    /// What `ui cluster add` needs of a new member before it first starts (its `ui apiserver`
    /// uses the same key): scripts and containers can have a member added, then start it.
    MemberKey {
        /// The member's data dir [default: as `ui apiserver`]
        #[arg(long, value_name = "DIR")]
        data_dir: Option<std::path::PathBuf>,
    },
    /// Remove a member (by id or did); a voter leaves the quorum
    Remove {
        /// The member's id (from `ui cluster members`) or did
        member: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

pub fn run(ctx: &Context, cmd: &Command) -> anyhow::Result<Outcome> {
    match cmd {
        Command::Members { cluster, output } => {
            let client = crate::connection::connect(ctx, cluster)?;
            let list = client.get_json("/cluster/members")?;
            let members = list.get("members").and_then(Value::as_array).cloned().unwrap_or_default();
            let rows: Vec<Value> = members.iter().map(row).collect();
            if output.print_structured(&rows)? {
                return Ok(Outcome::Success);
            }
            println!(
                "{:<20} {:<22} {:<8} {:<7} {:<8} {:<10} DID",
                "ID", "ADDRESS", "ROLE", "LEADER", "APPLIED", "STATE"
            );
            for r in &rows {
                let s = |k: &str| {
                    r.get(k)
                        .map_or_else(String::new, |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                };
                let applied =
                    r.get("lastApplied").and_then(Value::as_u64).map_or("?".to_owned(), |a| a.to_string());
                println!(
                    "{:<20} {:<22} {:<8} {:<7} {:<8} {:<10} {}",
                    s("id"),
                    s("address"),
                    s("role"),
                    if r["leader"] == json!(true) { "*" } else { "" },
                    applied,
                    s("state"),
                    s("did")
                );
            }
            Ok(Outcome::Success)
        }
        Command::Add { did, address, api, cluster } => {
            api::identity::Did::parse(did).map_err(|e| anyhow::anyhow!("{e}: pass the new member's did"))?;
            if address.parse::<std::net::SocketAddr>().is_err() {
                bail!(
                    "{address:?} is not an IP:PORT transport address (what the new member passes to --peer-listen)"
                );
            }
            let client = crate::connection::connect(ctx, cluster)?;
            let added = client
                .post_json("/cluster/members", &json!({ "did": did, "address": address, "api": api }))?;
            println!("member {} added as a learner", added["id"]);
            println!(
                "now start it with: ui apiserver --peer-listen {address} --join MEMBER_DID@MEMBER_ADDRESS"
            );
            Ok(Outcome::Success)
        }
        Command::MemberKey { data_dir } => {
            let path = match data_dir {
                Some(d) => d.clone(),
                None => super::apiserver::default_data_dir()?,
            };
            let dir = apiserver::member::DataDir::open(&path)
                .with_context(|| format!("data dir {}", path.display()))?;
            let (_, key) =
                dir.member_key().with_context(|| format!("the member key in {}", path.display()))?;
            println!("{}", api::identity::Did::from_key(&key.verifying_key()));
            Ok(Outcome::Success)
        }
        Command::Remove { member, cluster } => {
            let client = crate::connection::connect(ctx, cluster)?;
            let id = match member.parse::<u64>() {
                Ok(id) => id,
                Err(_) => {
                    let list = client.get_json("/cluster/members")?;
                    let found = list["members"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|m| m["did"].as_str() == Some(member.as_str()))
                        .and_then(|m| m["id"].as_u64());
                    found.with_context(|| {
                        format!("no member has id or did {member:?}: see `ui cluster members`")
                    })?
                }
            };
            client.delete_json(&format!("/cluster/members/{id}"))?;
            println!("member {id} removed");
            Ok(Outcome::Success)
        }
    }
}

/// One member as `-o json` shows it: stable field names.
fn row(m: &Value) -> Value {
    let status = m.get("status").filter(|s| !s.is_null());
    json!({
        "id": m["id"],
        "did": m["did"],
        "address": m["address"],
        "api": m["api"],
        "role": m["role"],
        "leader": m["leader"],
        "lastApplied": status.map(|s| s["last_applied"].clone()),
        "state": status.map_or(json!("Unreachable"), |s| s["state"].clone()),
        "term": status.map(|s| s["term"].clone()),
    })
}
