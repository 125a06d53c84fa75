//! `ui mcp`: the Model Context Protocol server for an AI agent (the work is in `crate::mcp`).

use std::path::PathBuf;
use std::sync::Arc;

use super::{Context, Outcome};
use crate::connection::ClusterArgs;

/// Serve the Model Context Protocol to an AI agent, over stdio or Streamable HTTP
///
/// Tools: explain, get, list, diff, apply (a server dry run always first), delete, scale,
/// logs, status (with why a replica is pending), approval, balance, reputation. Resources:
/// univrs://{plural}, univrs://{plural}/{namespace}/{name}, univrs://{plural}/{name}
/// (cluster-scoped kinds), followed through the apiserver's watch when subscribed to.
///
/// It acts as the key of the configuration directory it runs in: run it in the agent's own
/// directory (`ui --config-dir DIR mcp`, from `ui agent init NAME`), so that the apiserver
/// holds the agent to the AgentGrant its user signed. What the agent writes is signed on its
/// user's behalf.
///
/// Without --listen it speaks on standard input and output (how an MCP client launches a
/// local server). With --listen it serves Streamable HTTP at http://ADDR/mcp on a loopback
/// address only; every request must carry `Authorization: Bearer TOKEN`, and requests whose
/// Host or Origin is not loopback are refused (DNS rebinding).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Serve Streamable HTTP at ADDR (127.0.0.1:PORT, [::1]:PORT, or PORT alone for
    /// 127.0.0.1) instead of stdio; loopback addresses only
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// With --listen: the file holding the bearer token every request must send; when it does
    /// not exist, a token is generated and written there (mode 0600)
    /// [default: CONFIG_DIR/mcp-token]
    #[arg(long, value_name = "FILE", requires = "listen")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Runs the server until the client goes away (stdio) or the process is interrupted (HTTP).
pub fn run(ctx: &Context, args: &Args) -> anyhow::Result<Outcome> {
    let listen = args.listen.as_deref().map(crate::mcp::http::listen_addr).transpose()?;
    // The blocking client is made (and dropped) outside the server's runtime: it has its own.
    let client = Arc::new(
        crate::connection::connect(ctx, &args.cluster)?.with_field_manager(crate::mcp::FIELD_MANAGER),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ui-mcp")
        .enable_all()
        .build()?;
    let own = Context { dirs: ctx.dirs.clone() };
    let token_file = args.token_file.clone().unwrap_or_else(|| ctx.dirs.root().join("mcp-token"));
    let served = runtime.block_on(async {
        let state = Arc::new(crate::mcp::State::new(own, &args.cluster, client.clone())?);
        match listen {
            None => crate::mcp::serve_stdio(state).await,
            Some(addr) => crate::mcp::http::serve(state, addr, token_file).await,
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    drop(client);
    served.map(|()| Outcome::Success)
}
