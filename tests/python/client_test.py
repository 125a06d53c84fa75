"""The official Python `kubernetes` client against a running `ui apiserver` (TLS, tokens).

Usage: python3 client_test.py MEMBER_KUBECONFIG USER_KUBECONFIG

MEMBER_KUBECONFIG authenticates as a control-plane member, which may write Replicas (the kind
these checks create, patch, replace and delete freely); USER_KUBECONFIG as an ordinary user,
who may read them but not write them. Both come from the server: they trust the cluster's CA
(`certificate-authority-data`) and get their bearer token from the exec credential plugin
(`ui token --exec-credential`), and `load_kube_config` is expected to use both.

Run by tests/python_client.rs, which starts the server. Exits non-zero, saying what broke, on
the first failed check; exits 3 when the `kubernetes` module is missing.
"""

import sys

try:
    import kubernetes
    from kubernetes import client, config, dynamic, watch
    from kubernetes.client.rest import ApiException
except ImportError as e:
    print(f"the Python kubernetes client is not installed ({e}): pip install kubernetes", file=sys.stderr)
    sys.exit(3)

GROUP, VERSION, PLURAL, NS = "univrs.io", "v1", "replicas", "default"


def check(ok, what):
    if not ok:
        raise AssertionError(what)


def replica(name, node="n1", app=None):
    """Replica `name` of workload `web`, bound to `node` (the field the checks change)."""
    return {
        "apiVersion": "univrs.io/v1",
        "kind": "Replica",
        "metadata": {"name": name, "labels": {"app": app or name}},
        "spec": {
            "workload": "web",
            "nodeName": node,
            "container": {
                "rootfs": "busybox",
                "command": ["/bin/sh", "-c", "sleep 3600"],
                "resources": {"cpu": "100m", "memory": "32Mi"},
            },
        },
    }


def expect_api_error(status, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except ApiException as e:
        check(e.status == status, f"expected HTTP {status}, got {e.status}: {e.body}")
        return e
    raise AssertionError(f"expected HTTP {status}, the call succeeded")


def load(kubeconfig):
    """A client configuration from `kubeconfig`, checked to use TLS with the cluster's CA and
    a bearer token from the exec plugin."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    check(cfg.host.startswith("https://127.0.0.1:"), f"not https: {cfg.host}")
    check(cfg.verify_ssl and cfg.ssl_ca_cert, f"the cluster's CA is not used: {cfg.ssl_ca_cert}")
    token = cfg.api_key.get("authorization", "")
    check(token.startswith("Bearer ey"), f"the exec plugin gave no bearer token: {cfg.api_key}")
    return cfg


def main(kubeconfig, user_kubeconfig):
    print(f"kubernetes {kubernetes.__version__}")
    member_cfg = load(kubeconfig)
    api_client = client.ApiClient(member_cfg)
    objects = client.CustomObjectsApi(api_client)
    args = (GROUP, VERSION, NS, PLURAL)

    start = objects.list_namespaced_custom_object(*args)
    check(start["items"] == [], f"not empty at start: {start}")
    start_rv = start["metadata"]["resourceVersion"]

    # create and get
    created = objects.create_namespaced_custom_object(*args, replica("web", "n1", app="web"))
    check(created["metadata"]["namespace"] == NS, created)
    check(created["metadata"]["generation"] == 1, created)
    check(created["metadata"]["uid"], created)
    got = objects.get_namespaced_custom_object(*args, "web")
    check(got == created, f"get differs from create:\n{got}\n{created}")
    expect_api_error(409, objects.create_namespaced_custom_object, *args, replica("web"))
    objects.create_namespaced_custom_object(*args, replica("batch", "n2", app="jobs"))
    print("ok: create, get, AlreadyExists")

    # list with a label selector
    web = objects.list_namespaced_custom_object(*args, label_selector="app=web")
    check([o["metadata"]["name"] for o in web["items"]] == ["web"], web)
    both = objects.list_namespaced_custom_object(*args, label_selector="app in (web,jobs)")
    check(sorted(o["metadata"]["name"] for o in both["items"]) == ["batch", "web"], both)
    none = objects.list_namespaced_custom_object(*args, label_selector="app!=web,app!=jobs")
    check(none["items"] == [], none)
    print("ok: list with label selectors")

    # pagination: limit and continue
    first = objects.list_namespaced_custom_object(*args, limit=1)
    check(len(first["items"]) == 1 and first["metadata"].get("continue"), first)
    rest = objects.list_namespaced_custom_object(*args, limit=1, _continue=first["metadata"]["continue"])
    check(len(rest["items"]) == 1 and not rest["metadata"].get("continue"), rest)
    names = [o["metadata"]["name"] for o in first["items"] + rest["items"]]
    check(sorted(names) == ["batch", "web"], names)
    print("ok: pagination")

    # a dry run changes nothing
    dry = objects.create_namespaced_custom_object(*args, replica("dry"), dry_run="All")
    check(dry["metadata"]["name"] == "dry", dry)
    expect_api_error(404, objects.get_namespaced_custom_object, *args, "dry")
    print("ok: dryRun")

    # merge patch
    patched = objects.patch_namespaced_custom_object(*args, "web", {"spec": {"nodeName": "n3"}})
    check(patched["spec"]["nodeName"] == "n3", patched)
    check(patched["spec"]["container"]["rootfs"] == "busybox", patched)
    check(patched["metadata"]["generation"] == 2, patched)
    check(int(patched["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"]), patched)
    print("ok: merge patch")

    # replace with a stale resourceVersion: 409 Conflict, nothing changed
    stale = dict(created)
    stale["spec"] = dict(created["spec"], nodeName="n9")
    e = expect_api_error(409, objects.replace_namespaced_custom_object, *args, "web", stale)
    check('"Conflict"' in e.body, e.body)
    check(objects.get_namespaced_custom_object(*args, "web")["spec"]["nodeName"] == "n3", "a stale replace changed the object")
    fresh = objects.get_namespaced_custom_object(*args, "web")
    fresh["spec"]["nodeName"] = "n4"
    replaced = objects.replace_namespaced_custom_object(*args, "web", fresh)
    check(replaced["spec"]["nodeName"] == "n4", replaced)
    print("ok: replace, and 409 Conflict on a stale resourceVersion")

    # the status subresource
    status = {"status": {"phase": "Running", "restarts": 2}}
    with_status = objects.patch_namespaced_custom_object_status(*args, "web", status)
    check(with_status["status"]["phase"] == "Running" and with_status["status"]["restarts"] == 2, with_status)
    check(with_status["spec"] == replaced["spec"], with_status)
    check(with_status["metadata"]["generation"] == replaced["metadata"]["generation"], "a status write bumped the generation")
    got = objects.get_namespaced_custom_object_status(*args, "web")
    check(got["status"]["restarts"] == 2, got)
    # A status in a main-resource patch is ignored, as Kubernetes does with a status subresource.
    ignored = objects.patch_namespaced_custom_object(*args, "web", {"status": {"restarts": 0}})
    check(ignored["status"]["restarts"] == 2, ignored)
    print("ok: status subresource")

    # delete
    deleted = objects.delete_namespaced_custom_object(
        *args, "batch", body=client.V1DeleteOptions(propagation_policy="Background")
    )
    check(deleted.get("status") == "Success", deleted)
    expect_api_error(404, objects.get_namespaced_custom_object, *args, "batch")
    print("ok: delete, 404 NotFound after")

    # watch from before every write above: every change, in order
    w = watch.Watch()
    seen = []
    for event in w.stream(objects.list_namespaced_custom_object, *args, resource_version=start_rv, timeout_seconds=10):
        obj = event["object"]
        seen.append((event["type"], obj["metadata"]["name"], obj["spec"]["nodeName"]))
        if len(seen) == 6:
            w.stop()
    expected = [
        ("ADDED", "web", "n1"),
        ("ADDED", "batch", "n2"),
        ("MODIFIED", "web", "n3"),
        ("MODIFIED", "web", "n4"),
        ("MODIFIED", "web", "n4"),  # the status write
        ("DELETED", "batch", "n2"),
    ]
    check(seen == expected, f"watch events:\n{seen}\nexpected:\n{expected}")
    print("ok: watch from a resourceVersion: ADDED, MODIFIED, DELETED in order")

    # a watch with a label selector, started now: the changes after it, of matching objects only
    now_rv = objects.list_namespaced_custom_object(*args)["metadata"]["resourceVersion"]
    objects.create_namespaced_custom_object(*args, replica("other", "n1", app="other"))
    objects.patch_namespaced_custom_object(*args, "web", {"spec": {"nodeName": "n5"}})
    objects.delete_namespaced_custom_object(*args, "web")
    seen = []
    for event in w.stream(
        objects.list_namespaced_custom_object, *args, label_selector="app=web", resource_version=now_rv, timeout_seconds=10
    ):
        seen.append((event["type"], event["object"]["metadata"]["name"], event["object"]["spec"]["nodeName"]))
        if len(seen) == 2:
            w.stop()
    check(seen == [("MODIFIED", "web", "n5"), ("DELETED", "web", "n5")], seen)
    print("ok: watch with a label selector")

    # the dynamic client, which finds the resource through discovery
    dyn = dynamic.DynamicClient(api_client)
    replicas = dyn.resources.get(api_version="univrs.io/v1", kind="Replica")
    check(replicas.namespaced and replicas.name == "replicas", replicas)
    made = replicas.create(body=replica("dyn", "n1"), namespace=NS)
    check(made.metadata.name == "dyn" and made.spec.nodeName == "n1", made)
    listed = replicas.get(namespace=NS, label_selector="app=dyn")
    check([i.metadata.name for i in listed.items] == ["dyn"], listed)
    patched = replicas.patch(
        name="dyn", namespace=NS, body={"spec": {"nodeName": "n2"}}, content_type="application/merge-patch+json"
    )
    check(patched.spec.nodeName == "n2", patched)
    replicas.delete(name="dyn", namespace=NS)
    check([i.metadata.name for i in replicas.get(namespace=NS).items] == ["other"], "dyn was not deleted")
    print("ok: dynamic client: discovery, create, list, patch, delete")

    # the user's kubeconfig authenticates (it may read replicas) but may not write them: 403
    user = client.CustomObjectsApi(client.ApiClient(load(user_kubeconfig)))
    names = [o["metadata"]["name"] for o in user.list_namespaced_custom_object(*args)["items"]]
    check(names == ["other"], names)
    e = expect_api_error(403, user.create_namespaced_custom_object, *args, replica("mine"))
    check('"Forbidden"' in e.body, e.body)
    expect_api_error(403, user.patch_namespaced_custom_object, *args, "other", {"spec": {"nodeName": "n6"}})
    expect_api_error(403, user.delete_namespaced_custom_object, *args, "other")
    expect_api_error(404, objects.get_namespaced_custom_object, *args, "mine")
    check(objects.get_namespaced_custom_object(*args, "other")["spec"]["nodeName"] == "n1", "the user changed a replica")
    print("ok: the user's kubeconfig: read, but 403 Forbidden on create, patch, delete")

    # no credentials at all (the CA trusted, no token): 401
    anonymous = client.Configuration()
    anonymous.host = member_cfg.host
    anonymous.ssl_ca_cert = member_cfg.ssl_ca_cert
    nobody = client.CustomObjectsApi(client.ApiClient(anonymous))
    expect_api_error(401, nobody.list_namespaced_custom_object, *args)
    print("ok: no credentials: 401 Unauthorized")

if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        main(sys.argv[1], sys.argv[2])
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    print("all checks passed")
