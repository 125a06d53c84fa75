//! The kubeconfig univrs writes: the cluster's server and CA, and a user that authenticates
//! with a client-go exec credential plugin running `ui token` (a token minted from the
//! identity's own key), so kubectl and every client-go-compatible client work unchanged.

/// Quotes a string for YAML (JSON strings are YAML).
fn q(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A kubeconfig for `server` whose user runs `ui token` as a client-go exec credential plugin.
pub fn render(
    server: &str,
    ca_pem: Option<&str>,
    audience: &str,
    token_args: &[String],
    env: &[(&str, String)],
) -> String {
    use base64::Engine as _;
    let ca = ca_pem.map_or_else(String::new, |pem| {
        format!("    certificate-authority-data: {}\n", base64::engine::general_purpose::STANDARD.encode(pem))
    });
    let ui = std::env::current_exe().map_or_else(|_| "ui".to_owned(), |p| p.display().to_string());
    let mut args: Vec<String> =
        ["token", "--exec-credential", "--audience", audience].map(String::from).to_vec();
    args.extend(token_args.iter().cloned());
    let args: Vec<String> = args.iter().map(|a| q(a)).collect();
    let env: Vec<String> =
        env.iter().map(|(k, v)| format!("{{\"name\": {}, \"value\": {}}}", q(k), q(v))).collect();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: univrs\n  cluster:\n    server: {server}\n{ca}\
         contexts:\n- name: univrs\n  context:\n    cluster: univrs\n    user: univrs\n    namespace: default\n\
         current-context: univrs\nusers:\n- name: univrs\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n\
         \x20     command: {}\n      args: [{}]\n      env: [{}]\n      interactiveMode: IfAvailable\n      provideClusterInfo: false\n",
        q(&ui),
        args.join(", "),
        env.join(", "),
    )
}
