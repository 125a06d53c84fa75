//! `ui`: the univrs command line.

mod applyset;
mod commands;
mod config;
mod connection;
mod dashboard;
mod fsutil;
mod keystore;
mod kstatus;
mod kubeconfig;
mod logging;
mod manifest_files;
mod mcp;
mod objects;
mod output;
mod passphrase;
mod paths;
mod seal_text;
mod table;
mod unlock;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::{Context, Outcome};

/// mimalloc rather than glibc's malloc: an apiserver allocates and frees many small buffers on
/// every request (JSON values, entries, frames), and glibc's malloc took 15–17 % of its CPU in
/// a profile of 3 members under 64 updating clients (BENCHMARKS.md, change 7).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// univrs: run workloads on machines offered by independent operators, under your own keys
///
/// Start with `ui init` to create your identity, then sign manifests with `ui sign`, run a
/// cluster with `ui up` and apply them with `ui apply -f`.
#[derive(Debug, Parser)]
#[command(name = "ui", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    /// Directory of your identity and configuration [default: $XDG_CONFIG_HOME/univrs]
    #[arg(long, global = true, env = "UNIVRS_CONFIG_DIR", value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Log more: -v info, -vv debug, -vvv trace (servers log info by default); RUST_LOG,
    /// when set, wins (e.g. RUST_LOG=apiserver=debug,openraft=info)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// How log lines on stderr are written: text, or json (one object per line)
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        value_name = "FORMAT",
        env = "UNIVRS_LOG_FORMAT"
    )]
    log_format: logging::Format,
    #[command(subcommand)]
    command: Command,
}

impl Command {
    /// Whether the command runs until stopped (a server, an agent): those log at info.
    fn long_running(&self) -> bool {
        match self {
            Command::Up(_) | Command::Apiserver(_) | Command::Mcp(_) | Command::Dashboard(_) => true,
            Command::Controllers(c) => c.long_running(),
            Command::Node(c) => c.long_running(),
            _ => false,
        }
    }
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
    Apply(commands::apply::Args),
    Get(commands::get::Args),
    Describe(commands::describe::Args),
    Events(commands::events::Args),
    Delete(commands::delete::Args),
    Diff(commands::diff::Args),
    Scale(commands::scale::Args),
    Seal(commands::seal::Args),
    Status(commands::status::Args),
    Version(commands::version::Args),
    Token(commands::token::Args),
    Apiserver(commands::apiserver::Args),
    #[command(subcommand)]
    Cluster(commands::cluster::Command),
    #[command(subcommand)]
    Controllers(commands::controllers::Command),
    #[command(subcommand)]
    Node(commands::node::Command),
    #[command(subcommand)]
    Image(commands::image::Command),
    #[command(subcommand)]
    Credits(commands::credits::Command),
    #[command(subcommand)]
    Reputation(commands::reputation::Command),
    #[command(subcommand)]
    Network(commands::network::Command),
    Logs(commands::logs::Args),
    Exec(commands::exec::Args),
    #[command(subcommand)]
    Agent(commands::agent::Command),
    Approvals(commands::agent::ApprovalsArgs),
    Approve(commands::agent::DecideArgs),
    Deny(commands::agent::DecideArgs),
    Audit(commands::agent::AuditArgs),
    Mcp(commands::mcp::Args),
    Dashboard(commands::dashboard::Args),
    Up(commands::apiserver::UpArgs),
    Down(commands::down::Args),
    Unlock(commands::unlock::UnlockArgs),
    Lock(commands::unlock::LockArgs),
    #[command(hide = true)]
    UnlockAgent(commands::unlock::AgentArgs),
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    if let Command::Version(args) = &cli.command {
        return commands::version::run(args);
    }
    logging::init(cli.verbose, cli.log_format, cli.command.long_running())?;
    let ctx = Context { dirs: paths::ConfigDirs::resolve(cli.config_dir)? };
    match &cli.command {
        Command::Init(args) => commands::init::run(&ctx, args),
        Command::Identity(cmd) => commands::identity::run(&ctx, cmd),
        Command::Sign(args) => commands::sign::run(&ctx, args),
        Command::Verify(args) => commands::verify::run(&ctx, args),
        Command::Config(cmd) => commands::config::run(&ctx, cmd),
        Command::Apply(args) => commands::apply::run(&ctx, args),
        Command::Get(args) => commands::get::run(&ctx, args),
        Command::Describe(args) => commands::describe::run(&ctx, args),
        Command::Events(args) => commands::events::run(&ctx, args),
        Command::Delete(args) => commands::delete::run(&ctx, args),
        Command::Diff(args) => commands::diff::run(&ctx, args),
        Command::Apiserver(args) => commands::apiserver::run(&ctx, args, None),
        Command::Up(args) => commands::apiserver::up(&ctx, args),
        Command::Down(args) => commands::down::run(&ctx, args),
        Command::Unlock(args) => commands::unlock::unlock(&ctx, args),
        Command::Lock(args) => commands::unlock::lock(&ctx, args),
        Command::UnlockAgent(args) => commands::unlock::agent(args),
        Command::Token(args) => commands::token::run(&ctx, args),
        Command::Scale(args) => commands::scale::run(&ctx, args),
        Command::Seal(args) => commands::seal::run(&ctx, args),
        Command::Status(args) => commands::status::run(&ctx, args),
        Command::Controllers(cmd) => commands::controllers::run(&ctx, cmd),
        Command::Cluster(cmd) => commands::cluster::run(&ctx, cmd),
        Command::Node(cmd) => commands::node::run(&ctx, cmd),
        Command::Image(cmd) => commands::image::run(&ctx, cmd),
        Command::Credits(cmd) => commands::credits::run(&ctx, cmd),
        Command::Reputation(cmd) => commands::reputation::run(&ctx, cmd),
        Command::Network(cmd) => commands::network::run(&ctx, cmd),
        Command::Logs(args) => commands::logs::run(&ctx, args),
        Command::Exec(args) => commands::exec::run(&ctx, args),
        Command::Agent(cmd) => commands::agent::run(&ctx, cmd),
        Command::Approvals(args) => commands::agent::approvals(&ctx, args),
        Command::Approve(args) => commands::agent::decide(&ctx, args, true),
        Command::Deny(args) => commands::agent::decide(&ctx, args, false),
        Command::Audit(args) => commands::agent::audit(&ctx, args),
        Command::Mcp(args) => commands::mcp::run(&ctx, args),
        Command::Dashboard(args) => commands::dashboard::run(&ctx, args),
        Command::Version(_) => unreachable!("handled above"),
    }
}

/// `ui get … | head` ends quietly when `head` closes the pipe, as Unix tools do, instead of
/// panicking in `println!`. SIGPIPE itself stays ignored (Rust's default): a server whose client
/// went away must get EPIPE on the socket, not die.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            // 128 + SIGPIPE, what a shell reports for a process the closed pipe ended.
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    match run(cli) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(e) => {
            commands::print_error(&e);
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
