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
    let ui = std::env::current_exe().map_or_else(|_| "ui".to_owned(), |p| p.display().to_string());
    client::kubeconfig::render(server, others, ca_pem, &ui, audience, token_args, env)
}
