//! The kubeconfig univrs writes (`ui up`, `ui apiserver`, `ui node register`) and every
//! client reads: the current context's cluster (its server, every member's server in the
//! `univrs.io/servers` extension, its CA) and user (a token, or a client-go exec credential
//! plugin — `ui token --exec-credential`, which mints a token from the identity's own key).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Why a kubeconfig cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// It cannot be read.
    #[error(
        "cannot read the kubeconfig {path} ({reason}): start a cluster with `ui up`, or pass --server URL or --kubeconfig FILE"
    )]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// It does not say what is needed.
    #[error("kubeconfig {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with the field.
        reason: String,
    },
}

/// How the kubeconfig's user authenticates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Credential {
    /// No credentials.
    #[default]
    None,
    /// `user.token`.
    Token(String),
    /// `user.exec`: a client-go credential plugin (as univrs writes: `ui token`).
    Exec {
        /// The program.
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Its extra environment.
        env: Vec<(String, String)>,
    },
}

/// What the current context of a kubeconfig says.
#[derive(Clone, Debug, Default)]
pub struct Kubeconfig {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    /// The cluster's `server`.
    pub server: String,
    /// Every member's URL, from the cluster's `univrs.io/servers` extension (kubectl only
    /// knows `server`).
    pub servers: Vec<String>,
    /// The context's namespace.
    pub namespace: Option<String>,
    /// The cluster's CA (PEM), from `certificate-authority-data`.
    pub ca_pem: Option<String>,
    /// The user's credential.
    pub credential: Credential,
}

/// The kubeconfig to read: `explicit`, else the first path of `$KUBECONFIG`, else `fallback`
/// (univrs' own, in its config directory).
pub fn path(explicit: Option<&Path>, fallback: &Path) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    if let Some(env) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&env).find(|p| !p.as_os_str().is_empty())
    {
        return first;
    }
    fallback.to_owned()
}

impl Kubeconfig {
    /// The current context of the kubeconfig at `path`.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Read { path: path.display().to_string(), reason: e.to_string() })?;
        let invalid = |reason: String| Error::Invalid { path: path.display().to_string(), reason };
        let docs = api::manifest::parse_documents(&text).map_err(|e| invalid(e.located()))?;
        let config = docs.into_iter().next().unwrap_or(Value::Null);
        let mut k = Self::parse(&config).map_err(invalid)?;
        k.path = path.to_owned();
        Ok(k)
    }

    /// A kubeconfig that names only `server` (no CA, no credentials): for `--server URL`
    /// without a kubeconfig.
    pub fn with_server(server: &str) -> Self {
        Self { server: server.to_owned(), ..Self::default() }
    }

    /// Every server, `server` first, each once, without trailing slashes.
    pub fn all_servers(&self) -> Vec<String> {
        let first = self.server.trim_end_matches('/').to_owned();
        let mut out = vec![first];
        for s in &self.servers {
            let s = s.trim_end_matches('/').to_owned();
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    /// The token audience (the cluster), from a `ui token --audience A` exec credential.
    pub fn audience(&self) -> Option<String> {
        match &self.credential {
            Credential::Exec { args, .. } => args.iter().skip_while(|a| *a != "--audience").nth(1).cloned(),
            _ => None,
        }
    }

    /// `current-context` → its cluster's `server`, servers and CA, its user's credential, and
    /// the context's namespace.
    pub fn parse(config: &Value) -> Result<Self, String> {
        let current =
            config.get("current-context").and_then(Value::as_str).ok_or("current-context: not set")?;
        let named = |list: &str, name: &str| {
            config
                .get(list)
                .and_then(Value::as_array)
                .and_then(|items| items.iter().find(|i| i.get("name").and_then(Value::as_str) == Some(name)))
                .cloned()
        };
        let context =
            named("contexts", current).ok_or_else(|| format!("contexts: no context named {current:?}"))?;
        let cluster_name = context
            .pointer("/context/cluster")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("contexts[{current}].context.cluster: not set"))?;
        let cluster = named("clusters", cluster_name)
            .ok_or_else(|| format!("clusters: no cluster named {cluster_name:?}"))?;
        let server = cluster
            .pointer("/cluster/server")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("clusters[{cluster_name}].cluster.server: not set"))?;
        let servers = cluster
            .pointer("/cluster/extensions")
            .and_then(Value::as_array)
            .and_then(|exts| {
                exts.iter().find(|e| e.get("name").and_then(Value::as_str) == Some(SERVERS_EXTENSION))
            })
            .and_then(|e| e.pointer("/extension/servers"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let namespace = context
            .pointer("/context/namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let ca_pem = match cluster.pointer("/cluster/certificate-authority-data").and_then(Value::as_str) {
            Some(b64) => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|e| {
                    format!("clusters[{cluster_name}].cluster.certificate-authority-data: {e}")
                })?;
                Some(
                    String::from_utf8(bytes)
                        .map_err(|_| "certificate-authority-data is not PEM text".to_owned())?,
                )
            }
            None => None,
        };
        let user = context.pointer("/context/user").and_then(Value::as_str).and_then(|u| named("users", u));
        let credential = match user.as_ref().and_then(|u| u.get("user")) {
            Some(u) if u.get("token").and_then(Value::as_str).is_some() => {
                Credential::Token(u["token"].as_str().unwrap_or_default().to_owned())
            }
            Some(u) if u.get("exec").is_some() => {
                let exec = &u["exec"];
                let strings = |v: Option<&Value>| -> Vec<String> {
                    v.and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                        .unwrap_or_default()
                };
                let env = exec
                    .get("env")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|e| {
                                Some((
                                    e.get("name")?.as_str()?.to_owned(),
                                    e.get("value")?.as_str()?.to_owned(),
                                ))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let command = exec
                    .get("command")
                    .and_then(Value::as_str)
                    .ok_or("users[].user.exec.command: not set")?;
                Credential::Exec { command: command.to_owned(), args: strings(exec.get("args")), env }
            }
            _ => Credential::None,
        };
        Ok(Self { path: PathBuf::new(), server: server.to_owned(), servers, namespace, ca_pem, credential })
    }
}

/// The cluster extension that lists every member's URL.
pub const SERVERS_EXTENSION: &str = "univrs.io/servers";

/// Quotes a string for YAML (JSON strings are YAML).
fn q(s: &str) -> String {
    Value::from(s).to_string()
}

/// A kubeconfig for `server` (and every member in `others`) whose user runs `ui` (the
/// program `ui`, an absolute path) `token` as a client-go exec credential plugin, with
/// `token_args` and `env`.
pub fn render(
    server: &str,
    others: &[String],
    ca_pem: Option<&str>,
    ui: &str,
    audience: &str,
    token_args: &[String],
    env: &[(&str, String)],
) -> String {
    use base64::Engine as _;
    let ca = ca_pem.map_or_else(String::new, |pem| {
        format!("    certificate-authority-data: {}\n", base64::engine::general_purpose::STANDARD.encode(pem))
    });
    let extension = if others.is_empty() {
        String::new()
    } else {
        let all: Vec<String> =
            std::iter::once(server.to_owned()).chain(others.iter().cloned()).map(|s| q(&s)).collect();
        format!(
            "    extensions:\n    - name: {SERVERS_EXTENSION}\n      extension:\n        servers: [{}]\n",
            all.join(", ")
        )
    };
    let mut args: Vec<String> =
        ["token", "--exec-credential", "--audience", audience].map(String::from).to_vec();
    args.extend(token_args.iter().cloned());
    let args: Vec<String> = args.iter().map(|a| q(a)).collect();
    let env: Vec<String> =
        env.iter().map(|(k, v)| format!("{{\"name\": {}, \"value\": {}}}", q(k), q(v))).collect();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: univrs\n  cluster:\n    server: {server}\n{ca}{extension}\
         contexts:\n- name: univrs\n  context:\n    cluster: univrs\n    user: univrs\n    namespace: default\n\
         current-context: univrs\nusers:\n- name: univrs\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n\
         \x20     command: {}\n      args: [{}]\n      env: [{}]\n      interactiveMode: IfAvailable\n      provideClusterInfo: false\n",
        q(ui),
        args.join(", "),
        env.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_context_names_the_server_and_namespace() {
        let text = "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: http://127.0.0.1:1\n\
                    - name: b\n  cluster:\n    server: http://127.0.0.1:2\ncontexts:\n- name: x\n  context:\n    cluster: b\n    namespace: team\n\
                    current-context: x\n";
        let doc = api::manifest::parse_documents(text).unwrap().remove(0);
        let k = Kubeconfig::parse(&doc).unwrap();
        assert_eq!((k.server.as_str(), k.namespace.as_deref()), ("http://127.0.0.1:2", Some("team")));
        assert!(k.ca_pem.is_none() && k.credential == Credential::None);
        let bad = api::manifest::parse_documents("current-context: y\ncontexts: []\n").unwrap().remove(0);
        assert!(Kubeconfig::parse(&bad).unwrap_err().contains("no context named \"y\""));
    }

    #[test]
    fn what_is_rendered_reads_back_with_every_member() {
        let text = render(
            "https://127.0.0.1:1",
            &["https://127.0.0.1:2/".to_owned(), "https://127.0.0.1:1".to_owned()],
            Some("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"),
            "/bin/ui",
            "univrs:abc",
            &["--key-file".to_owned(), "/k".to_owned()],
            &[("UNIVRS_CONFIG_DIR", "/c".to_owned())],
        );
        let k = Kubeconfig::parse(&api::manifest::parse_documents(&text).unwrap()[0]).unwrap();
        assert_eq!(k.all_servers(), ["https://127.0.0.1:1", "https://127.0.0.1:2"]);
        assert_eq!(k.audience().as_deref(), Some("univrs:abc"));
        assert!(k.ca_pem.unwrap().contains("BEGIN CERTIFICATE"));
        let Credential::Exec { command, args, env } = k.credential else { panic!("not exec") };
        assert_eq!(command, "/bin/ui");
        assert_eq!(args, ["token", "--exec-credential", "--audience", "univrs:abc", "--key-file", "/k"]);
        assert_eq!(env, [("UNIVRS_CONFIG_DIR".to_owned(), "/c".to_owned())]);
    }
}
