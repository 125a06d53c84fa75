//! The kubeconfig univrs writes (`client::kubeconfig::render`): the cluster's servers and CA,
//! and a user that authenticates with a client-go exec credential plugin running this `ui`'s
//! `token` command (a token minted from the identity's own key), so kubectl and every
//! client-go-compatible client work unchanged.

/// A kubeconfig for `server` (and the other members' `others`) whose user runs `ui token` as
/// a client-go exec credential plugin.
pub fn render(
    server: &str,
    others: &[String],
    ca_pem: Option<&str>,
    audience: &str,
    token_args: &[String],
    env: &[(&str, String)],
) -> String {
    client::kubeconfig::render(server, others, ca_pem, &plugin_command(), audience, token_args, env)
}

/// The command the kubeconfig runs: `ui` when that is this program on the PATH (so the
/// kubeconfig survives a reinstall), else this program's absolute path (a build in a work
/// tree, e.g. `target/debug/ui`).
pub fn plugin_command() -> String {
    let Ok(me) = std::env::current_exe().and_then(std::fs::canonicalize) else { return "ui".to_owned() };
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("ui"))
            .find(|c| c.is_file())
            .and_then(|c| std::fs::canonicalize(c).ok())
    });
    if on_path.as_ref() == Some(&me) { "ui".to_owned() } else { me.display().to_string() }
}
