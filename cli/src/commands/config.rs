//! `ui config show|path`.

use anyhow::Context as _;
use serde::Serialize;

use super::{Context, Outcome};
use crate::config::Config;
use crate::output::OutputArgs;

/// Show your configuration and where it lives
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the configuration in effect (config.toml over the defaults)
    Show {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Print where univrs keeps your files
    Path {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Write a kubeconfig for an existing cluster that authenticates as your identity
    ///
    /// kubectl (and any client-go client) will trust the cluster's CA and run `ui token` to
    /// mint a short-lived token from your key. Ask the cluster's operator for its address, its
    /// CA certificate (`tls/ca.crt` in its data dir) and its id (`univrs:…`, printed by `ui up`).
    Kubeconfig {
        /// The apiserver, e.g. https://10.0.0.5:6443
        #[arg(long, value_name = "URL")]
        server: String,
        /// The cluster's CA certificate (PEM)
        #[arg(long, value_name = "FILE")]
        certificate_authority: std::path::PathBuf,
        /// The cluster's id (`univrs:…`): the audience of your tokens
        #[arg(long, value_name = "ID")]
        cluster: String,
        /// Where to write it [default: CONFIG_DIR/kubeconfig]
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Paths {
    config_dir: String,
    config_file: String,
    identity_dir: String,
    public_key: String,
    policy_dir: String,
}

pub fn run(ctx: &Context, cmd: &Command) -> anyhow::Result<Outcome> {
    let dirs = &ctx.dirs;
    match cmd {
        Command::Show { output } => {
            let config = Config::load(dirs)?;
            if !output.print_structured(&config)? {
                print!("{}", toml::to_string(&config)?);
            }
        }
        Command::Path { output } => {
            let show = |p: std::path::PathBuf| p.display().to_string();
            let paths = Paths {
                config_dir: dirs.root().display().to_string(),
                config_file: show(dirs.config_file()),
                identity_dir: show(dirs.identity_dir()),
                public_key: show(dirs.public_key()),
                policy_dir: show(dirs.policy_dir()),
            };
            if !output.print_structured(&paths)? {
                println!("config dir:   {}", paths.config_dir);
                println!("config file:  {}", paths.config_file);
                println!("identity:     {}", paths.identity_dir);
                println!("public key:   {}", paths.public_key);
                println!("policy:       {}", paths.policy_dir);
            }
        }
        Command::Kubeconfig { server, certificate_authority, cluster, out } => {
            let ca = std::fs::read_to_string(certificate_authority)
                .with_context(|| format!("cannot read {}", certificate_authority.display()))?;
            if !ca.contains("BEGIN CERTIFICATE") {
                anyhow::bail!("{} is not a PEM certificate", certificate_authority.display());
            }
            if !server.starts_with("https://") {
                anyhow::bail!("--server {server}: kubectl sends credentials only over https://");
            }
            let path = out.clone().unwrap_or_else(|| dirs.root().join("kubeconfig"));
            dirs.ensure_root()?;
            let env = [("UNIVRS_CONFIG_DIR", dirs.root().display().to_string())];
            let text = crate::kubeconfig::render(server, &[], Some(&ca), cluster, &[], &env);
            crate::fsutil::write_atomic(&path, text.as_bytes(), crate::fsutil::PRIVATE_FILE)?;
            println!("kubeconfig: {}", path.display());
        }
    }
    Ok(Outcome::Success)
}
