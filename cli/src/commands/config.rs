//! `ui config show|path`.

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
    }
    Ok(Outcome::Success)
}
