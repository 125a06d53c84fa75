"""The official Python `kubernetes` client against a running `ui apiserver`.

Usage: python3 client_test.py KUBECONFIG

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

GROUP, VERSION, PLURAL, NS = "univrs.io", "v1", "workloads", "default"


def check(ok, what):
    if not ok:
        raise AssertionError(what)


def workload(name, replicas=1, app=None):
    return {
        "apiVersion": "univrs.io/v1",
        "kind": "Workload",
        "metadata": {"name": name, "labels": {"app": app or name}},
        "spec": {
            "replicas": replicas,
            "rootfs": "busybox",
            "command": ["/bin/sh", "-c", "sleep 3600"],
            "resources": {"cpu": "100m", "memory": "32Mi"},
            "trustPolicy": "eu-only",
        },
    }


def expect_api_error(status, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except ApiException as e:
        check(e.status == status, f"expected HTTP {status}, got {e.status}: {e.body}")
        return e
    raise AssertionError(f"expected HTTP {status}, the call succeeded")


def main(kubeconfig):
    print(f"kubernetes {kubernetes.__version__}")
    config.load_kube_config(config_file=kubeconfig)
    api_client = client.ApiClient()
    objects = client.CustomObjectsApi(api_client)
    args = (GROUP, VERSION, NS, PLURAL)

    start = objects.list_namespaced_custom_object(*args)
    check(start["items"] == [], f"not empty at start: {start}")
    start_rv = start["metadata"]["resourceVersion"]

    # create and get
    created = objects.create_namespaced_custom_object(*args, workload("web", 1, app="web"))
    check(created["metadata"]["namespace"] == NS, created)
    check(created["metadata"]["generation"] == 1, created)
    check(created["metadata"]["uid"], created)
    got = objects.get_namespaced_custom_object(*args, "web")
    check(got == created, f"get differs from create:\n{got}\n{created}")
    expect_api_error(409, objects.create_namespaced_custom_object, *args, workload("web"))
    objects.create_namespaced_custom_object(*args, workload("batch", 2, app="jobs"))
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
    dry = objects.create_namespaced_custom_object(*args, workload("dry"), dry_run="All")
    check(dry["metadata"]["name"] == "dry", dry)
    expect_api_error(404, objects.get_namespaced_custom_object, *args, "dry")
    print("ok: dryRun")

    # merge patch
    patched = objects.patch_namespaced_custom_object(*args, "web", {"spec": {"replicas": 3}})
    check(patched["spec"]["replicas"] == 3, patched)
    check(patched["spec"]["rootfs"] == "busybox", patched)
    check(patched["metadata"]["generation"] == 2, patched)
    check(int(patched["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"]), patched)
    print("ok: merge patch")

    # replace with a stale resourceVersion: 409 Conflict, nothing changed
    stale = dict(created)
    stale["spec"] = dict(created["spec"], replicas=9)
    e = expect_api_error(409, objects.replace_namespaced_custom_object, *args, "web", stale)
    check('"Conflict"' in e.body, e.body)
    check(objects.get_namespaced_custom_object(*args, "web")["spec"]["replicas"] == 3, "a stale replace changed the object")
    fresh = objects.get_namespaced_custom_object(*args, "web")
    fresh["spec"]["replicas"] = 4
    replaced = objects.replace_namespaced_custom_object(*args, "web", fresh)
    check(replaced["spec"]["replicas"] == 4, replaced)
    print("ok: replace, and 409 Conflict on a stale resourceVersion")

    # the status subresource
    status = {"status": {"observedGeneration": replaced["metadata"]["generation"], "replicas": 4, "readyReplicas": 2}}
    with_status = objects.patch_namespaced_custom_object_status(*args, "web", status)
    check(with_status["status"]["readyReplicas"] == 2, with_status)
    check(with_status["spec"] == replaced["spec"], with_status)
    check(with_status["metadata"]["generation"] == replaced["metadata"]["generation"], "a status write bumped the generation")
    got = objects.get_namespaced_custom_object_status(*args, "web")
    check(got["status"]["readyReplicas"] == 2, got)
    # A status in a main-resource patch is ignored, as Kubernetes does with a status subresource.
    ignored = objects.patch_namespaced_custom_object(*args, "web", {"status": {"readyReplicas": 0}})
    check(ignored["status"]["readyReplicas"] == 2, ignored)
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
        seen.append((event["type"], obj["metadata"]["name"], obj["spec"]["replicas"]))
        if len(seen) == 6:
            w.stop()
    expected = [
        ("ADDED", "web", 1),
        ("ADDED", "batch", 2),
        ("MODIFIED", "web", 3),
        ("MODIFIED", "web", 4),
        ("MODIFIED", "web", 4),  # the status write
        ("DELETED", "batch", 2),
    ]
    check(seen == expected, f"watch events:\n{seen}\nexpected:\n{expected}")
    print("ok: watch from a resourceVersion: ADDED, MODIFIED, DELETED in order")

    # a watch with a label selector, started now: the changes after it, of matching objects only
    now_rv = objects.list_namespaced_custom_object(*args)["metadata"]["resourceVersion"]
    objects.create_namespaced_custom_object(*args, workload("other", 1, app="other"))
    objects.patch_namespaced_custom_object(*args, "web", {"spec": {"replicas": 5}})
    objects.delete_namespaced_custom_object(*args, "web")
    seen = []
    for event in w.stream(
        objects.list_namespaced_custom_object, *args, label_selector="app=web", resource_version=now_rv, timeout_seconds=10
    ):
        seen.append((event["type"], event["object"]["metadata"]["name"], event["object"]["spec"]["replicas"]))
        if len(seen) == 2:
            w.stop()
    check(seen == [("MODIFIED", "web", 5), ("DELETED", "web", 5)], seen)
    print("ok: watch with a label selector")

    # the dynamic client, which finds the resource through discovery
    dyn = dynamic.DynamicClient(api_client)
    workloads = dyn.resources.get(api_version="univrs.io/v1", kind="Workload")
    check(workloads.namespaced and workloads.name == "workloads", workloads)
    made = workloads.create(body=workload("dyn", 1), namespace=NS)
    check(made.metadata.name == "dyn" and made.spec.replicas == 1, made)
    listed = workloads.get(namespace=NS, label_selector="app=dyn")
    check([i.metadata.name for i in listed.items] == ["dyn"], listed)
    patched = workloads.patch(
        name="dyn", namespace=NS, body={"spec": {"replicas": 2}}, content_type="application/merge-patch+json"
    )
    check(patched.spec.replicas == 2, patched)
    workloads.delete(name="dyn", namespace=NS)
    check([i.metadata.name for i in workloads.get(namespace=NS).items] == ["other"], "dyn was not deleted")
    print("ok: dynamic client: discovery, create, list, patch, delete")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        main(sys.argv[1])
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    print("all checks passed")
