//! `ui image`: the OCI images of a node, on the node's machine (`import` for nodes that reach
//! no registry, `ls`, `rm`), and the flags of `ui node run` and `ui up` that say how its agent
//! pulls them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use super::{Context, Outcome};
use crate::output::OutputArgs;

/// The OCI images of a node (on its machine)
///
/// Replicas with `image: REF` run OCI images: pulled by the node's agent, or imported here for
/// nodes that reach no registry. Each is unpacked once under NODE_DIR/images/.oci and shared.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Import(ImportArgs),
    Ls(LsArgs),
    Rm(RmArgs),
}

/// Where the node's images are.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Where {
    /// The node's directory [default: CONFIG_DIR/node]
    #[arg(long, value_name = "DIR", env = "UNIVRS_NODE_DIR")]
    node_dir: Option<PathBuf>,
    /// Where its images are [default: NODE_DIR/images]
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
}

impl Where {
    fn node_dir(&self, ctx: &Context) -> PathBuf {
        self.node_dir.clone().unwrap_or_else(|| ctx.dirs.root().join("node"))
    }

    fn store(&self, ctx: &Context) -> agent::store::Store {
        let images = self.images.clone().unwrap_or_else(|| self.node_dir(ctx).join("images"));
        agent::store::Store::new(&images)
    }

    fn runs(&self, ctx: &Context) -> PathBuf {
        self.node_dir(ctx).join("state").join("runs")
    }
}

/// Import images from a file: an OCI image layout as a tar, or a `docker save` archive
///
/// Every blob is checked against its digest (an OCI layout) or its layer's diff ID (docker).
/// The images are named as the archive names them, and with each --name.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The archive (tar, not compressed)
    file: PathBuf,
    /// Also name the images REF (a tag, e.g. registry.example/app:1; repeatable)
    #[arg(long = "name", value_name = "REF")]
    names: Vec<String>,
    #[command(flatten)]
    at: Where,
    #[command(flatten)]
    output: OutputArgs,
}

/// List the node's images: references, image ID, size, when last used
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    at: Where,
    #[command(flatten)]
    output: OutputArgs,
}

/// Remove an image (refused while a run on the node uses it)
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// A reference (tag or digest) or an image ID (sha256:…, or 12+ of its hex digits)
    image: String,
    #[command(flatten)]
    at: Where,
}

fn shown(image: &agent::store::Image) -> serde_json::Value {
    let last_used = image.last_used().map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339());
    json!({
        "id": image.meta.id,
        "tags": image.meta.tags,
        "repoDigests": image.meta.repo_digests,
        "size": image.meta.size,
        "storedAt": image.meta.stored_at,
        "lastUsed": last_used,
    })
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1}Gi", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.1}Mi", b as f64 / f64::from(1u32 << 20)),
        b => format!("{:.1}Ki", b as f64 / 1024.0),
    }
}

fn ago(t: Option<std::time::SystemTime>) -> String {
    let Some(secs) = t.and_then(|t| t.elapsed().ok()).map(|d| d.as_secs()) else { return "-".into() };
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86400),
    }
}

pub fn run(ctx: &Context, cmd: &Command) -> anyhow::Result<Outcome> {
    match cmd {
        Command::Import(a) => {
            let store = a.at.store(ctx);
            let started = std::time::Instant::now();
            let images = agent::import::import(&store, &a.file, &a.names, agent::store::Limits::default())
                .with_context(|| format!("cannot import {}", a.file.display()))?;
            let all: Vec<_> = images.iter().map(shown).collect();
            if !a.output.print_structured(&all)? {
                for i in &images {
                    let names = if i.meta.tags.is_empty() {
                        "(no name: use --name)".to_owned()
                    } else {
                        i.meta.tags.join(", ")
                    };
                    println!(
                        "imported {} {names} ({}) in {:?}",
                        i.meta.id,
                        size(i.meta.size),
                        started.elapsed()
                    );
                }
            }
            Ok(Outcome::Success)
        }
        Command::Ls(a) => {
            let images = a.at.store(ctx).list();
            let all: Vec<_> = images.iter().map(shown).collect();
            if !a.output.print_structured(&all)? {
                println!("{:<50} {:<19} {:>9}  LAST USED", "REFERENCE", "IMAGE ID", "SIZE");
                for i in &images {
                    let names: Vec<&String> = i.meta.tags.iter().chain(i.meta.repo_digests.iter()).collect();
                    let first = names.first().map_or("<none>".to_owned(), |n| n.to_string());
                    println!(
                        "{first:<50} {:<19} {:>9}  {}",
                        &i.meta.id[..19],
                        size(i.meta.size),
                        ago(i.last_used())
                    );
                    for n in names.iter().skip(1) {
                        println!("{n}");
                    }
                }
            }
            Ok(Outcome::Success)
        }
        Command::Rm(a) => {
            let image = a.at.store(ctx).remove(&a.image, &a.at.runs(ctx))?;
            println!("removed {} ({})", image.meta.id, size(image.meta.size));
            Ok(Outcome::Success)
        }
    }
}

/// How a node's agent pulls images (`ui node run`, and `ui up` for its local node).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RegistryArgs {
    /// Pull images of REGISTRY through MIRROR first (REGISTRY=MIRROR, e.g.
    /// docker.io=mirror.example:5000; repeatable, tried in order)
    #[arg(long = "registry-mirror", value_name = "REGISTRY=MIRROR")]
    mirrors: Vec<String>,
    /// Reach this registry (HOST:PORT) over plain HTTP, without TLS (repeatable; for a
    /// registry on loopback or a network you trust)
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure: Vec<String>,
    /// The most an image may unpack to on this node
    #[arg(long, value_name = "QUANTITY", default_value = "4Gi")]
    image_size_limit: String,
    /// How long an image no run uses stays on the node
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    image_keep_unused: u64,
}

impl RegistryArgs {
    /// The agent's configuration.
    pub fn resolve(&self) -> anyhow::Result<agent::registry::Registries> {
        let mut regs = agent::registry::Registries::default();
        for m in &self.mirrors {
            let (registry, mirror) = m
                .split_once('=')
                .filter(|(r, m)| !r.is_empty() && !m.is_empty())
                .ok_or_else(|| anyhow::anyhow!("--registry-mirror {m}: write REGISTRY=MIRROR"))?;
            regs.mirrors.entry(registry.to_owned()).or_default().push(mirror.to_owned());
        }
        regs.insecure = self.insecure.clone();
        regs.limits.max_unpacked_bytes = api::quantity::Quantity::parse(&self.image_size_limit)
            .and_then(|q| q.bytes())
            .map_err(|e| anyhow::anyhow!("--image-size-limit {}: {e}", self.image_size_limit))?
            .0;
        regs.keep_unused = Duration::from_secs(self.image_keep_unused);
        Ok(regs)
    }
}
