//! OCI images end to end: Debian's `docker-registry` started by the test on loopback, an image
//! the test builds itself (the host's static busybox and an index.html, as layers, a config and
//! a manifest) pushed with plain HTTP calls of the distribution API, then `ui up` (as root, real
//! containers) pulling and running it, pinned by digest, through a mirror, refusing a tampered
//! blob; and `ui image import|ls|rm` for a node that reaches no registry. Nothing is fetched
//! from outside.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::Digest as _;
use support::{User, free_port, require_root, stop_shims, wait_for};

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

/// Debian's `docker-registry` on a free loopback port, storing in a temp dir.
struct Registry {
    child: Child,
    port: u16,
    storage: tempfile::TempDir,
    http: ureq::Agent,
    /// The token the test's own pushes carry, behind token auth.
    bearer: Option<String>,
}

impl Registry {
    fn start() -> Self {
        Self::start_with("", None)
    }

    /// With `auth` (YAML of its `auth:` section, indented by two) and the token for pushes.
    fn start_with(auth: &str, bearer: Option<String>) -> Self {
        let storage = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{}",
                storage.path().join("data").display(),
                if auth.is_empty() { String::new() } else { format!("auth:\n{auth}") }
            ),
        )
        .unwrap();
        let child = std::process::Command::new("docker-registry")
            .args(["serve", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian's docker-registry; ./dev deps test installs it)");
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let r = Self { child, port, storage, http, bearer };
        wait_for(20, "the registry to serve /v2/", || {
            r.http.get(&r.url("/v2/")).call().map(|_| ()).map_err(|e| e.to_string())
        });
        r
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host())
    }

    /// Pushes a blob (monolithic upload) and returns its digest.
    fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let started = self
            .authorized(self.http.post(&self.url(&format!("/v2/{repo}/blobs/uploads/"))))
            .send_empty()
            .unwrap();
        assert_eq!(started.status().as_u16(), 202, "start an upload");
        let location = started.headers().get("location").unwrap().to_str().unwrap().to_owned();
        let location = if location.starts_with("http") { location } else { self.url(&location) };
        let sep = if location.contains('?') { '&' } else { '?' };
        let done = self
            .authorized(self.http.put(&format!("{location}{sep}digest={digest}")))
            .header("content-type", "application/octet-stream")
            .send(bytes)
            .unwrap();
        assert_eq!(done.status().as_u16(), 201, "finish the upload of {digest}");
        digest
    }

    fn push_manifest(&self, repo: &str, tag: &str, manifest: &[u8]) {
        let done = self
            .authorized(self.http.put(&self.url(&format!("/v2/{repo}/manifests/{tag}"))))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .send(manifest)
            .unwrap();
        assert_eq!(done.status().as_u16(), 201, "push the manifest {repo}:{tag}");
    }

    fn authorized<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.bearer {
            Some(t) => r.header("authorization", format!("Bearer {t}")),
            None => r,
        }
    }

    fn push(&self, repo: &str, tag: &str, image: &Built) {
        for blob in image.layers.iter().chain([&image.config]) {
            self.push_blob(repo, blob);
        }
        self.push_manifest(repo, tag, &image.manifest);
    }

    /// Where the registry keeps the blob `digest`.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage.path().join(format!("data/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An image the test made: its blobs and manifest.
struct Built {
    layers: Vec<Vec<u8>>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

impl Built {
    fn digest(&self) -> String {
        sha256(&self.manifest)
    }
}

enum Item<'a> {
    Dir,
    File(&'a [u8], u32),
}

/// A layer: a tar of `items`, gzip'd; and its diff ID.
fn layer(items: &[(&str, Item<'_>)]) -> (Vec<u8>, String) {
    let mut b = tar::Builder::new(Vec::new());
    for (path, item) in items {
        let mut h = tar::Header::new_gnu();
        match item {
            Item::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
            Item::File(data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data).unwrap();
            }
        }
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), sha256(&tar))
}

/// An HTTP server image: busybox in the first layer (with a file the second whites out), an
/// index.html saying `page` in the second; its config's cmd runs httpd on 127.0.0.1:8080.
fn web_image(page: &str) -> Built {
    web_image_as(page, json!({}))
}

/// [`web_image`] with `config` added to its config's `config` (`User`, `WorkingDir`).
fn web_image_as(page: &str, config: Value) -> Built {
    let busybox = std::fs::read("/bin/busybox").expect("Debian's busybox-static");
    let (base, base_id) = layer(&[
        ("bin", Item::Dir),
        ("bin/busybox", Item::File(&busybox, 0o755)),
        ("etc", Item::Dir),
        ("etc/junk", Item::File(b"from the lower layer", 0o644)),
    ]);
    let (site, site_id) = layer(&[
        ("www", Item::Dir),
        ("www/index.html", Item::File(page.as_bytes(), 0o644)),
        ("etc/.wh.junk", Item::File(b"", 0o644)),
    ]);
    let mut image_config = json!({
        "Env": ["PATH=/bin", "PAGE=from-the-image"],
        "Cmd": ["/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"],
    });
    image_config.as_object_mut().unwrap().extend(config.as_object().unwrap().clone());
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": image_config,
        "rootfs": { "type": "layers", "diff_ids": [base_id, site_id] },
    }))
    .unwrap();
    let layers: Vec<Value> = [&base, &site]
        .iter()
        .map(|l| json!({ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(l), "size": l.len() }))
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len() },
        "layers": layers,
    }))
    .unwrap();
    Built { layers: vec![base, site], config, manifest }
}

/// `ui up` with its local node (containers) and `extra` flags.
struct Up {
    child: Child,
    data: PathBuf,
}

impl Up {
    fn start(u: &User, node: &str, extra: &[&str]) -> Self {
        u.init_plain();
        let data = u.path("data");
        let kubeconfig = u.path("kubeconfig");
        let mut args = vec!["--node-name", node, "--runtime", "container"];
        args.extend(extra);
        let mut child = u
            .up_cmd(&data, &kubeconfig, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map(|l| l.unwrap());
        lines.find(|l| l.starts_with("local node ")).expect("ui up says how its local node runs");
        std::thread::spawn(move || for _ in lines {});
        Self { child, data }
    }

    fn node_dir(&self) -> String {
        self.data.join("node").display().to_string()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        stop_shims(&self.data);
    }
}

fn ui(u: &User, args: &[&str]) -> support::Run {
    let kubeconfig = u.path("kubeconfig");
    let mut all = args.to_vec();
    all.extend(["--kubeconfig", kubeconfig.to_str().unwrap()]);
    u.run(&all)
}

fn apply(u: &User, name: &str, yaml: &str) {
    let file = u.path(&format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    ui(u, &["apply", "-f", file.to_str().unwrap()]).ok();
}

const PROBE: &str =
    "  readinessProbe:\n    httpGet:\n      path: /index.html\n      port: 8080\n    periodSeconds: 1\n";

/// A workload of `image`; `command` empty: the image's own.
fn workload(name: &str, image: &str, command: &str) -> String {
    let command = if command.is_empty() { String::new() } else { format!("  command: {command}\n") };
    format!(
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  image: \"{image}\"\n{command}{PROBE}"
    )
}

/// The replica of `workload`, as the API has it.
fn replica(u: &User, workload: &str) -> Option<Value> {
    let list = ui(u, &["get", "replicas", "-o", "json"]).ok().json();
    list["items"].as_array().unwrap().iter().find(|r| r["spec"]["workload"] == workload).cloned()
}

fn ready(r: &Value) -> bool {
    r["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Waits until the replica of `workload` is Ready and returns it.
#[track_caller]
fn wait_ready(u: &User, workload: &str, secs: u64) -> Value {
    wait_for(secs, &format!("{workload} ready"), || match replica(u, workload) {
        Some(r) if ready(&r) => Ok(r),
        Some(r) => Err(r["status"].to_string()),
        None => Err("no replica".into()),
    })
}

#[test]
fn a_workload_runs_an_image_pulled_from_a_local_registry_by_tag_by_digest_and_through_a_mirror() {
    require_root();
    let registry = Registry::start();
    let web = web_image("hello from the registry");
    registry.push("web", "1", &web);
    let host = registry.host();
    let u = User::new();
    let mirror = format!("mirror.invalid={host}");
    let up = Up::start(&u, "img", &["--insecure-registry", &host, "--registry-mirror", &mirror]);

    // By tag, with the command given: Ready (its readiness probe reached httpd), and the tag
    // resolved to the manifest's digest in its status.
    let cmd = r#"["/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"]"#;
    let applied = Instant::now();
    apply(&u, "web", &workload("web", &format!("{host}/web:1"), cmd));
    let r = wait_ready(&u, "web", 90);
    println!("apply to ready, image pulled: {:?}", applied.elapsed());
    let pinned = format!("{host}/web@{}", web.digest());
    assert_eq!(r["status"]["imageID"], pinned.as_str(), "{}", r["status"]);
    // The pull as Events about the replica: Pulling, then Pulled with the digest it pinned.
    let name = r["metadata"]["name"].as_str().unwrap();
    let said = wait_for(20, "the pull's events", || {
        let out = ui(&u, &["events", "--for", &format!("replica/{name}")]).ok().stdout;
        if out.contains("Pulling") && out.contains("Pulled") { Ok(out) } else { Err(out) }
    });
    assert!(said.contains(&format!("Pulling image {host}/web:1")), "{said}");
    assert!(said.contains(&format!("Successfully pulled image {host}/web:1: {pinned}")), "{said}");

    // The node's store: the image once, by tag and digest; the lower layer's file whited out;
    // the store's directories traversable by a replica's unprivileged root.
    let node_dir = up.node_dir();
    let images = u.run(&["image", "ls", "-o", "json", "--node-dir", &node_dir]).ok().json();
    let [image] = images.as_array().unwrap().as_slice() else { panic!("{images}") };
    assert_eq!(image["tags"], json!([format!("{host}/web:1")]));
    assert_eq!(image["repoDigests"], json!([pinned]));
    let id = image["id"].as_str().unwrap();
    assert_eq!(id, sha256(&web.config));
    let dir = Path::new(&node_dir).join(format!("images/.oci/images/{}", &id[7..]));
    assert!(dir.join("rootfs/www/index.html").is_file());
    assert!(!dir.join("rootfs/etc/junk").exists(), "the whiteout of the upper layer");
    for d in [dir.parent().unwrap().to_owned(), dir.clone(), dir.join("rootfs")] {
        assert_eq!(support::mode(&d) & 0o777, 0o755, "{}", d.display());
    }
    let text = u.run(&["image", "ls", "--node-dir", &node_dir]).ok().stdout;
    assert!(text.contains(&format!("{host}/web:1")) && text.contains(&id[..19]), "{text}");
    // In use: not removed.
    u.run(&["image", "rm", &format!("{host}/web:1"), "--node-dir", &node_dir]).fails_with(&["in use"]);

    // Pinned by digest, with the image's own command: runs the same image.
    apply(&u, "pinned", &workload("pinned", &pinned, ""));
    let r = wait_ready(&u, "pinned", 60);
    assert_eq!(r["status"]["imageID"], pinned.as_str());

    // Through a mirror: mirror.invalid does not exist, its mirror is the local registry.
    apply(&u, "mirrored", &workload("mirrored", "mirror.invalid/web:1", ""));
    let r = wait_ready(&u, "mirrored", 60);
    assert_eq!(r["status"]["imageID"], format!("mirror.invalid/web@{}", web.digest()).as_str());

    // A tampered blob: the registry's stored bytes of a layer no longer match its digest.
    let bad = web_image("tampered");
    registry.push("bad", "1", &bad);
    let file = registry.blob_file(&sha256(&bad.layers[1]));
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    apply(&u, "bad", &workload("bad", &format!("{host}/bad:1"), ""));
    let status = wait_for(60, "the tampered image refused", || match replica(&u, "bad") {
        Some(r) if r["status"]["reason"] == "ErrImagePull" || r["status"]["reason"] == "ImagePullBackOff" => {
            Ok(r["status"].clone())
        }
        r => Err(format!("{r:?}")),
    });
    let message = status["message"].as_str().unwrap();
    assert!(message.contains("digest mismatch") && message.contains(&sha256(&bad.layers[1])), "{message}");
    assert_eq!(status["phase"], "Pending");

    // An image the registry does not have.
    apply(&u, "missing", &workload("missing", &format!("{host}/nothing:1"), ""));
    let status = wait_for(60, "the missing image reported", || match replica(&u, "missing") {
        Some(r) if r["status"]["reason"] == "ErrImagePull" || r["status"]["reason"] == "ImagePullBackOff" => {
            Ok(r["status"].clone())
        }
        r => Err(format!("{r:?}")),
    });
    assert!(status["message"].as_str().unwrap().contains("not found"), "{status}");

    // A registry nobody listens on.
    let closed = format!("127.0.0.1:{}/web:1", free_port());
    apply(&u, "unreachable", &workload("unreachable", &closed, ""));
    let status = wait_for(60, "the unreachable registry reported", || match replica(&u, "unreachable") {
        Some(r) if r["status"]["reason"] == "ErrImagePull" => Ok(r["status"].clone()),
        r => Err(format!("{r:?}")),
    });
    assert!(status["message"].as_str().unwrap().contains("unreachable"), "{status}");
}

/// An OCI image layout of `image` named `name`, as a tar; `tampered`: its last layer's bytes
/// are another's, under its own digest.
fn oci_layout(image: &Built, name: &str, tampered: bool) -> Vec<u8> {
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.digest(), "size": image.manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": name },
        }],
    }))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for blob in image.layers.iter().chain([&image.config, &image.manifest]) {
        let other = web_image("other").layers[1].clone();
        let bytes = if tampered && blob == &image.layers[1] { &other } else { blob };
        add(&format!("blobs/sha256/{}", &sha256(blob)[7..]), bytes);
    }
    b.into_inner().unwrap()
}

#[test]
fn ui_image_import_runs_an_image_on_a_node_without_a_registry_and_rm_waits_for_its_runs() {
    require_root();
    let u = User::new();
    let up = Up::start(&u, "airgap", &[]);
    let node_dir = up.node_dir();
    let image = web_image("imported");
    let file = u.path("image.tar");

    // A tampered layout is refused by digest, and leaves nothing.
    std::fs::write(&file, oci_layout(&image, "local/imported:1", true)).unwrap();
    u.run(&["image", "import", file.to_str().unwrap(), "--node-dir", &node_dir])
        .fails_with(&["digest mismatch"]);
    assert_eq!(u.run(&["image", "ls", "-o", "json", "--node-dir", &node_dir]).ok().json(), json!([]));

    std::fs::write(&file, oci_layout(&image, "local/imported:1", false)).unwrap();
    let out = u.run(&["image", "import", file.to_str().unwrap(), "--node-dir", &node_dir]).ok().stdout;
    println!("{out}");
    assert!(out.contains("docker.io/local/imported:1"), "{out}");
    let images = u.run(&["image", "ls", "-o", "json", "--node-dir", &node_dir]).ok().json();
    assert_eq!(images[0]["tags"], json!(["docker.io/local/imported:1"]));
    assert_eq!(images[0]["repoDigests"], json!([format!("docker.io/local/imported@{}", image.digest())]));

    // Runs from the store: docker.io is never asked.
    apply(&u, "imp", &workload("imp", "local/imported:1", ""));
    let r = wait_ready(&u, "imp", 60);
    assert_eq!(r["status"]["imageID"], format!("docker.io/local/imported@{}", image.digest()).as_str());
    u.run(&["image", "rm", "local/imported:1", "--node-dir", &node_dir]).fails_with(&["in use"]);

    // Once its run ended, it goes.
    ui(&u, &["delete", "workload", "imp"]).ok();
    let id = images[0]["id"].as_str().unwrap().to_owned();
    wait_for(30, "the image removed once unused", || {
        let out = u.run(&["image", "rm", &id[7..19], "--node-dir", &node_dir]);
        if out.code == 0 { Ok(()) } else { Err(out.stderr) }
    });
    assert_eq!(u.run(&["image", "ls", "-o", "json", "--node-dir", &node_dir]).ok().json(), json!([]));
}

#[test]
fn a_replica_restarts_on_the_digest_its_tag_resolved_to_even_after_the_tag_moved() {
    require_root();
    let registry = Registry::start();
    let v1 = web_image("version one");
    registry.push("web", "1", &v1);
    let host = registry.host();
    let u = User::new();
    let up = Up::start(&u, "pin", &["--insecure-registry", &host]);
    let node_dir = up.node_dir();
    // Prints its page, then fails: restarted again and again.
    let cmd = r#"["/bin/busybox", "sh", "-c", "/bin/busybox cat /www/index.html; echo; /bin/busybox sleep 1; exit 1"]"#;
    let yaml = format!(
        "apiVersion: univrs.io/v1\nkind: Workload\nmetadata:\n  name: loop\nspec:\n  replicas: 1\n  image: \"{host}/web:1\"\n  command: {cmd}\n"
    );
    apply(&u, "loop", &yaml);
    let pinned = format!("{host}/web@{}", v1.digest());
    wait_for(60, "the first run pinned", || match replica(&u, "loop") {
        Some(r) if r["status"]["imageID"] == pinned.as_str() => Ok(()),
        r => Err(format!("{r:?}")),
    });

    // The tag moves to another image, and the node's copy goes (between two runs: refused
    // while one runs).
    registry.push("web", "1", &web_image("version two"));
    wait_for(60, "the image removed between two runs", || {
        let out = u.run(&["image", "rm", &pinned, "--node-dir", &node_dir]);
        if out.code == 0 { Ok(()) } else { Err(out.stderr) }
    });
    // The next runs pull the pinned digest again, not what the tag says now.
    let images = wait_for(60, "the pinned image pulled again", || {
        let images = u.run(&["image", "ls", "-o", "json", "--node-dir", &node_dir]).ok().json();
        if images.as_array().is_some_and(|a| a.len() == 1) { Ok(images) } else { Err(images.to_string()) }
    });
    assert_eq!(images[0]["repoDigests"], json!([pinned]));
    assert_eq!(images[0]["id"], sha256(&v1.config).as_str());
    let before = ui(&u, &["logs", "loop"]).stdout.matches("version one").count();
    let r = wait_for(60, "a run on the pulled-again image", || {
        let logs = ui(&u, &["logs", "loop"]).stdout;
        let r = replica(&u, "loop").unwrap();
        if logs.matches("version one").count() > before { Ok((r, logs)) } else { Err(logs) }
    });
    assert!(!r.1.contains("version two"), "{}", r.1);
    assert_eq!(r.0["status"]["imageID"], pinned.as_str());

    // A second replica, made after the tag moved: pinned by the workload controller to the
    // digest the first one runs, so it runs version one too, never what the tag says now.
    let first = r.0["metadata"]["name"].clone();
    ui(&u, &["scale", "workload", "loop", "2"]).ok();
    let second = wait_for(60, "the second replica pulled", || {
        let list = ui(&u, &["get", "replicas", "-o", "json"]).ok().json();
        let rs: Vec<Value> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["spec"]["workload"] == "loop")
            .cloned()
            .collect();
        match rs.iter().find(|r| r["metadata"]["name"] != first) {
            Some(s) if s["status"]["imageID"].is_string() => Ok(s.clone()),
            s => Err(format!("{s:?}")),
        }
    });
    assert_eq!(second["spec"]["pinnedImage"], pinned.as_str(), "{}", second["spec"]);
    assert_eq!(second["status"]["imageID"], pinned.as_str(), "{}", second["status"]);
    let name = second["metadata"]["name"].as_str().unwrap().to_owned();
    let logs = wait_for(60, "the second replica's output", || {
        let logs = ui(&u, &["logs", &name]).stdout;
        if logs.contains("version") { Ok(logs) } else { Err(logs) }
    });
    assert!(logs.contains("version one") && !logs.contains("version two"), "{logs}");
}

/// A free port among those an offer lets workloads publish by default (30000-32767).
fn free_node_port() -> u16 {
    let start = 30_000 + (std::process::id() % 2_000) as u16;
    (start..=32_767)
        .chain(30_000..start)
        .find(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok())
        .unwrap()
}

/// `GET http://127.0.0.1:PORT/PATH` from the host: the body of a 200, or what went wrong.
fn get_from_host(port: u16, path: &str) -> Result<String, String> {
    let agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(3))).build().new_agent();
    match agent.get(&format!("http://127.0.0.1:{port}{path}")).call() {
        Ok(mut r) => r.body_mut().read_to_string().map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn an_image_serves_on_its_published_port_and_a_taken_host_port_waits_for_another_node() {
    require_root();
    let registry = Registry::start();
    // An image that runs as a user of its own in its own working directory.
    registry.push(
        "web",
        "1",
        &web_image_as("hello, published", json!({ "User": "1000:1000", "WorkingDir": "/www" })),
    );
    let host = registry.host();
    let u = User::new();
    let _up = Up::start(&u, "pub", &["--insecure-registry", &host]);
    let port = free_node_port();
    // httpd on every address of the replica (not its loopback alone): the node relays to it;
    // it serves its working directory.
    let cmd = r#"["/bin/busybox", "httpd", "-f", "-p", "8080"]"#;
    let site = |name: &str| {
        format!(
            "{}  ports:\n  - name: http\n    containerPort: 8080\n    hostPort: {port}\n",
            workload(name, &format!("{host}/web:1"), cmd)
        )
    };
    let applied = Instant::now();
    apply(&u, "site", &site("site"));
    let body = wait_for(90, "the page on the published port", || {
        get_from_host(port, "/index.html").and_then(|b| if b.contains("published") { Ok(b) } else { Err(b) })
    });
    println!(
        "apply to serving on the published port (image pulled from the registry): {:?}",
        applied.elapsed()
    );
    assert_eq!(body.trim(), "hello, published");
    let r = wait_ready(&u, "site", 30);
    assert_eq!(r["status"]["publishedPorts"], json!([format!("{port}→8080/TCP")]), "{}", r["status"]);
    let ip = r["status"]["podIP"].as_str().unwrap().to_owned();
    let text = ui(&u, &["status"]).ok().stdout;
    assert!(text.contains(&format!("{ip}, publishes {port}→8080/TCP")), "{text}");
    // It runs as the image's user, and so does `ui exec`, in its working directory.
    let name = r["metadata"]["name"].as_str().unwrap().to_owned();
    let kubeconfig = u.path("kubeconfig");
    let script = "/bin/busybox id -u; /bin/busybox id -g; /bin/busybox pwd";
    let exec = [
        "exec",
        &name,
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ];
    let who = u.run(&exec).ok().stdout;
    assert_eq!(who, "1000\n1000\n/www\n");
    let wide = ui(&u, &["get", "replicas", "-o", "wide"]).ok().stdout;
    assert!(wide.contains("PORTS") && wide.contains(&format!("{port}→8080/TCP")), "{wide}");

    // Another workload publishing the same host port: the one node has it taken, so its replica
    // waits for a node (unschedulable, saying why), never fails at start.
    apply(&u, "clash", &site("clash"));
    let status = wait_for(30, "the clash unschedulable", || match replica(&u, "clash") {
        Some(r)
            if r["spec"]["nodeName"].is_null()
                && r["status"]["message"].as_str().is_some_and(|m| m.contains("host port")) =>
        {
            Ok(r["status"].clone())
        }
        r => Err(format!("{r:?}")),
    });
    println!("{status}");
    // Once the first is gone the port is free: the waiting one is placed and serves.
    ui(&u, &["delete", "workload", "site"]).ok();
    let r = wait_ready(&u, "clash", 90);
    assert_eq!(r["spec"]["nodeName"], "pub");
    wait_for(30, "the clash serving on the port", || get_from_host(port, "/index.html"));
}

/// A token server for a registry's token auth, as Docker Hub's: anyone asking gets a token (an
/// ES256 JWT, its certificate in `x5c`) for what they asked (`scope=repository:NAME:ACTIONS`).
struct TokenServer {
    port: u16,
    key: rcgen::KeyPair,
    cert_der: Vec<u8>,
    /// The certificate the registry trusts (`rootcertbundle`).
    cert_pem: String,
    /// How many tokens it gave.
    given: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

const TOKEN_SERVICE: &str = "univrs-test-registry";
const TOKEN_ISSUER: &str = "univrs-test-issuer";

/// A DER ECDSA signature (SEQUENCE of two INTEGERs) as JWS wants it: r and s, 32 bytes each.
fn raw_ecdsa(der: &[u8]) -> Vec<u8> {
    let int = |at: usize| -> (Vec<u8>, usize) {
        assert_eq!(der[at], 0x02, "an INTEGER");
        let len = der[at + 1] as usize;
        let v = &der[at + 2..at + 2 + len];
        let v = &v[v.len().saturating_sub(32)..];
        let mut out = vec![0u8; 32 - v.len()];
        out.extend_from_slice(v);
        (out, at + 2 + len)
    };
    assert_eq!(der[0], 0x30, "a SEQUENCE");
    let (r, next) = int(2);
    let (s, _) = int(next);
    [r, s].concat()
}

impl TokenServer {
    fn start() -> std::sync::Arc<Self> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["token-issuer".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = std::sync::Arc::new(Self {
            port: listener.local_addr().unwrap().port(),
            key,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            given: Default::default(),
        });
        let s = server.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                // The request's headers, up to the empty line.
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/");
                let scope = path
                    .split(['?', '&'])
                    .find_map(|kv| kv.strip_prefix("scope="))
                    .map(|v| v.replace("%3A", ":").replace("%2C", ","))
                    .unwrap_or_default();
                let token = s.token(&scope);
                s.given.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = json!({ "token": token, "access_token": token, "expires_in": 300 }).to_string();
                let _ = write!(
                    &stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        server
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// A token for `scope` (`repository:NAME:ACTIONS`, empty: none).
    fn token(&self, scope: &str) -> String {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let access: Vec<Value> = scope
            .split(' ')
            .filter_map(|sc| {
                let mut p = sc.splitn(3, ':');
                let (kind, name, actions) = (p.next()?, p.next()?, p.next()?);
                Some(json!({ "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>() }))
            })
            .collect();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let header = json!({ "typ": "JWT", "alg": "ES256",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)] });
        let claims = json!({ "iss": TOKEN_ISSUER, "sub": "", "aud": TOKEN_SERVICE, "exp": now + 300,
            "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", self.given.load(std::sync::atomic::Ordering::SeqCst)),
            "access": access });
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let der = rcgen::SigningKey::sign(&self.key, input.as_bytes()).unwrap();
        format!("{input}.{}", b64(&raw_ecdsa(&der)))
    }
}

#[test]
fn an_image_behind_a_registry_s_token_auth_is_pulled_through_its_token_flow() {
    require_root();
    let tokens = TokenServer::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("issuer.pem");
    std::fs::write(&bundle, &tokens.cert_pem).unwrap();
    let auth = format!(
        "  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
        tokens.realm(),
        bundle.display()
    );
    let push_token = tokens.token("repository:web:pull,push");
    let registry = Registry::start_with(&auth, Some(push_token));
    registry.push("web", "1", &web_image("behind a token"));
    // Without a token the registry refuses, and says where to get one.
    let bare = registry.http.get(&registry.url("/v2/web/manifests/1")).call().unwrap();
    assert_eq!(bare.status().as_u16(), 401);
    let challenge = bare.headers().get("www-authenticate").unwrap().to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer ") && challenge.contains(&tokens.realm()), "{challenge}");
    let before = tokens.given.load(std::sync::atomic::Ordering::SeqCst);

    let host = registry.host();
    let u = User::new();
    let _up = Up::start(&u, "tok", &["--insecure-registry", &host]);
    apply(&u, "tok", &workload("tok", &format!("{host}/web:1"), ""));
    let r = wait_ready(&u, "tok", 90);
    assert!(
        r["status"]["imageID"].as_str().unwrap().starts_with(&format!("{host}/web@sha256:")),
        "{}",
        r["status"]
    );
    assert!(
        tokens.given.load(std::sync::atomic::Ordering::SeqCst) > before,
        "the node asked the token server for a token"
    );
}
