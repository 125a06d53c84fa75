//! Which cluster a command talks to (`--server`, `--kubeconfig`, `-n`), and its client: the
//! one client of the `client` crate (the same kubeconfig reader, credentials and failover
//! across members as the controllers and node agents use), in its blocking form.

use std::path::PathBuf;

use anyhow::Context as _;
pub use client::blocking::ClientError;
use client::kubeconfig::{self, Kubeconfig};

use crate::commands::Context;

/// Which apiserver and namespace: the options every command that talks to the cluster takes.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClusterArgs {
    /// The apiserver's URL [default: the server of the kubeconfig's current context]
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The kubeconfig to read [default: $KUBECONFIG (first path), else CONFIG_DIR/kubeconfig]
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The namespace [default: the kubeconfig context's, else `default`]
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    namespace: Option<String>,
}

impl ClusterArgs {
    /// The cluster of the kubeconfig at `path`.
    pub fn for_kubeconfig(path: PathBuf) -> Self {
        Self { server: None, kubeconfig: Some(path), namespace: None }
    }

    /// The namespace `-n` names, if given (without the kubeconfig's default).
    pub fn namespace_given(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The kubeconfig these options name.
    pub fn kubeconfig_path(&self, ctx: &Context) -> PathBuf {
        kubeconfig::path(self.kubeconfig.as_deref(), &ctx.dirs.root().join("kubeconfig"))
    }

    /// What the kubeconfig says, with `--server` in place of its servers.
    fn kubeconfig(&self, ctx: &Context) -> anyhow::Result<Kubeconfig> {
        let path = self.kubeconfig_path(ctx);
        let mut k = match (&self.server, path.exists()) {
            // --server alone: no kubeconfig to take a CA or credentials from.
            (Some(s), false) => Kubeconfig::with_server(s),
            _ => Kubeconfig::read(&path)?,
        };
        if let Some(server) = &self.server {
            k.server = server.clone();
            k.servers.clear();
        }
        Ok(k)
    }
}

/// The client of the cluster `args` name.
pub type Client = client::blocking::Client;

/// A client of the cluster that `args` (and the kubeconfig) name.
pub fn connect(ctx: &Context, args: &ClusterArgs) -> anyhow::Result<Client> {
    let k = args.kubeconfig(ctx)?;
    Ok(Client::new(&k, args.namespace.clone())?)
}

/// The async client (kube-rs, for watches) of the cluster that `args` and the kubeconfig
/// name: the same kubeconfig, credentials and failover. Call it inside a tokio runtime.
pub fn connect_async(ctx: &Context, args: &ClusterArgs) -> anyhow::Result<kube::Client> {
    let k = args.kubeconfig(ctx)?;
    client::connect(&k).map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", k.server))
}

/// The cluster `args` and the kubeconfig name, as another kubeconfig on it needs it.
#[derive(Debug)]
pub struct ClusterInfo {
    /// The server.
    pub server: String,
    /// The other members' servers.
    pub others: Vec<String>,
    /// The CA (PEM).
    pub ca_pem: Option<String>,
    /// The token audience.
    pub audience: String,
}

/// The URL of the server `args` and the kubeconfig name (the first, when it names several).
pub fn server_of(ctx: &Context, args: &ClusterArgs) -> anyhow::Result<String> {
    Ok(args.kubeconfig(ctx)?.server)
}

/// The servers, CA (PEM) and token audience of the cluster `args` and the kubeconfig name, for
/// writing a kubeconfig of another identity on the same cluster (a node's).
pub fn cluster_of(ctx: &Context, args: &ClusterArgs) -> anyhow::Result<ClusterInfo> {
    let k = args.kubeconfig(ctx)?;
    let audience = k.audience().with_context(|| {
        format!(
            "kubeconfig {}: its user is not `ui token --audience …`, so the cluster's audience is unknown",
            k.path.display()
        )
    })?;
    let mut all = k.all_servers().into_iter();
    let server = all.next().unwrap_or_default();
    Ok(ClusterInfo { server, others: all.collect(), ca_pem: k.ca_pem.clone(), audience })
}
