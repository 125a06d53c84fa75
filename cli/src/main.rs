//! `ui`: the univrs command line.

mod commands;
mod config;
mod fsutil;
mod keystore;
mod manifest_files;
mod output;
mod passphrase;
mod paths;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::{Context, Outcome};

/// univrs: run workloads on machines offered by independent operators, under your own keys
///
/// Start with `ui init` to create your identity, then sign manifests with `ui sign`.
#[derive(Debug, Parser)]
#[command(name = "ui", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    /// Directory of your identity and configuration [default: $XDG_CONFIG_HOME/univrs]
    #[arg(long, global = true, env = "UNIVRS_CONFIG_DIR", value_name = "DIR")]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Init(commands::init::Args),
    #[command(subcommand)]
    Identity(commands::identity::Command),
    Sign(commands::sign::Args),
    Verify(commands::verify::Args),
    #[command(subcommand)]
    Config(commands::config::Command),
    Version(commands::version::Args),
    Apiserver(commands::apiserver::Args),
    /// Run univrs on this machine: for now the apiserver of a one-member control plane
    ///
    /// The same as `ui apiserver` today; the controllers and a local node agent join it as
    /// they are built.
    Up(commands::apiserver::Args),
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    if let Command::Version(args) = &cli.command {
        return commands::version::run(args);
    }
    let ctx = Context { dirs: paths::ConfigDirs::resolve(cli.config_dir)? };
    match &cli.command {
        Command::Init(args) => commands::init::run(&ctx, args),
        Command::Identity(cmd) => commands::identity::run(&ctx, cmd),
        Command::Sign(args) => commands::sign::run(&ctx, args),
        Command::Verify(args) => commands::verify::run(&ctx, args),
        Command::Config(cmd) => commands::config::run(&ctx, cmd),
        Command::Apiserver(args) | Command::Up(args) => commands::apiserver::run(&ctx, args),
        Command::Version(_) => unreachable!("handled above"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
