#!/usr/bin/env python3
"""Checks of `ui mcp` driven by the official Python MCP SDK (`pip install 'mcp==2.3.0'`).

A library of checks, one function each (`check_*`, taking a `Run`), run in the order of
`CHECKS` against one `ui mcp` server reached over stdio (the SDK launches
`ui --config-dir AGENT_DIR mcp`) or over Streamable HTTP (a `ui mcp --listen` already
running). Another user's changes are made with `ui --config-dir USER_DIR apply`.

    mcp_client.py --ui PATH --agent-dir DIR --user-dir DIR --mode stdio|http
                  [--url URL --token-file FILE] [--protocol auto|legacy] [--only NAME,...]
                  [--member-kubeconfig FILE] [--with-node]

Prints `ok NAME` per check, then `all checks passed`; exit 1 when a check fails, 3 when the
SDK is missing. To add a check: write `async def check_something(run)` and list it in CHECKS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import traceback
import urllib.error
import urllib.request
import uuid
import warnings
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

try:
    import httpx2
    import mcp_types as types
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client
    from mcp.client.subscriptions import ResourcesListChanged, ResourceUpdated
    from mcp.shared.exceptions import MCPError
except ImportError as e:  # pragma: no cover - the environment, not the server
    print(f"the Python MCP SDK is missing ({e}): pip install 'mcp==2.3.0'", file=sys.stderr)
    sys.exit(3)

warnings.simplefilter("ignore")

TOOLS = {
    "explain", "get", "list", "diff", "apply", "delete", "scale",
    "logs", "status", "approval", "balance", "reputation",
}
READ_ONLY = {"explain", "get", "list", "diff", "logs", "status", "approval", "balance", "reputation"}
DESTRUCTIVE = {"apply", "delete", "scale"}
SUFFIX = uuid.uuid4().hex[:6]


def workload(name: str, replicas: int = 1, labels: dict[str, str] | None = None) -> str:
    """A small Workload manifest (unsigned: the server signs it for the agent's user)."""
    label_lines = "".join(f"    {k}: {v}\n" for k, v in (labels or {"app": name}).items())
    return (
        "apiVersion: univrs.io/v1\nkind: Workload\n"
        f"metadata:\n  name: {name}\n  namespace: default\n  labels:\n{label_lines}"
        f"spec:\n  rootfs: busybox\n  replicas: {replicas}\n"
    )


@dataclass
class Run:
    """What every check gets: the connected client and the options."""

    client: Client
    args: argparse.Namespace
    notes: dict[str, object] = field(default_factory=dict)
    # Notifications seen by the message handler (legacy subscriptions): updated URIs, and
    # "list_changed" for notifications/resources/list_changed.
    updates: asyncio.Queue = field(default_factory=asyncio.Queue)

    async def call(self, tool: str, arguments: dict) -> types.CallToolResult:
        return await self.client.call_tool(tool, arguments)

    async def ok(self, tool: str, arguments: dict) -> str:
        """The text of a successful call; fails the check on a tool error."""
        r = await self.call(tool, arguments)
        text = "".join(c.text for c in r.content if getattr(c, "text", None) is not None)
        if r.is_error:
            raise AssertionError(f"{tool} {arguments}: unexpected tool error: {text}")
        return text

    async def error(self, tool: str, arguments: dict) -> str:
        """The text of a tool error; fails the check when the call succeeds."""
        r = await self.call(tool, arguments)
        text = "".join(c.text for c in r.content if getattr(c, "text", None) is not None)
        if not r.is_error:
            raise AssertionError(f"{tool} {arguments}: expected a tool error, got: {text}")
        return text

    def user_ui(self, *argv: str, stdin: str | None = None) -> str:
        """Runs `ui` as the other user (their config dir); its stdout."""
        env = dict(os.environ, UNIVRS_CONFIG_DIR=self.args.user_dir)
        env.pop("UNIVRS_PASSPHRASE", None)
        p = subprocess.run([self.args.ui, *argv], input=stdin, capture_output=True, text=True, env=env, timeout=60)
        if p.returncode != 0:
            raise AssertionError(f"ui {' '.join(argv)} failed ({p.returncode}): {p.stdout}{p.stderr}")
        return p.stdout


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


# ---- the checks ------------------------------------------------------------------------------


async def check_initialize(run: Run) -> None:
    version = run.client.protocol_version
    print(f"negotiated protocol version {version} ({run.args.mode}, {run.args.protocol})")
    expect(version in ("2026-07-28", "2025-11-25"), f"unexpected protocol version {version}")
    if run.args.protocol == "legacy":
        expect(version == "2025-11-25", f"legacy mode negotiated {version}")
    caps = run.client.server_capabilities
    expect(caps.tools is not None, f"no tools capability: {caps}")
    expect(caps.resources is not None and caps.resources.subscribe, f"no resource subscriptions: {caps}")


async def check_list_tools(run: Run) -> None:
    tools = (await run.client.list_tools()).tools
    names = {t.name for t in tools}
    expect(names == TOOLS, f"tools {sorted(names)} != {sorted(TOOLS)}")
    for t in tools:
        expect(t.input_schema.get("type") == "object", f"{t.name}: input schema {t.input_schema}")
        a = t.annotations
        expect(a is not None, f"{t.name}: no annotations")
        if t.name in READ_ONLY:
            expect(a.read_only_hint is True, f"{t.name}: not read-only: {a}")
        if t.name in DESTRUCTIVE:
            expect(a.read_only_hint is False and a.destructive_hint is True, f"{t.name}: {a}")
    apply = next(t for t in tools if t.name == "apply")
    expect("manifest" in apply.input_schema.get("properties", {}), f"apply schema: {apply.input_schema}")
    expect(apply.input_schema.get("required") == ["manifest"], f"apply required: {apply.input_schema}")


async def check_resource_templates(run: Run) -> None:
    templates = {t.uri_template for t in (await run.client.list_resource_templates()).resource_templates}
    for t in ("univrs://{plural}", "univrs://{plural}/{namespace}/{name}", "univrs://{plural}/{name}"):
        expect(t in templates, f"template {t} missing from {templates}")
    resources = {r.uri for r in (await run.client.list_resources()).resources}
    expect("univrs://workloads" in resources and "univrs://approvals" in resources, f"{resources}")


async def check_explain(run: Run) -> None:
    kinds = await run.ok("explain", {})
    expect("Workload" in kinds and "wl" in kinds and "Cluster" in kinds, kinds)
    field = await run.ok("explain", {"kind": "wl", "field": "spec.replicas"})
    expect("spec.replicas <integer>" in field, field)
    wrong = await run.error("explain", {"kind": "workloads", "field": "spec.nope"})
    expect("its fields are" in wrong, wrong)
    unknown = await run.error("explain", {"kind": "pods"})
    expect("doesn't have a resource type" in unknown, unknown)


async def check_apply(run: Run) -> None:
    name = f"agent-{SUFFIX}"
    run.notes["workload"] = name
    created = await run.ok("apply", {"manifest": workload(name)})
    expect(f"workload.univrs.io/{name} created" in created, created)
    expect("(server dry run)" not in created, created)
    again = await run.ok("apply", {"manifest": workload(name)})
    expect(f"workload.univrs.io/{name} unchanged" in again, again)
    dry = await run.ok("apply", {"manifest": workload(name, replicas=2), "dry_run": True})
    expect("configured (server dry run)" in dry, dry)
    stored = json.loads(await run.ok("get", {"kind": "workload", "name": name, "format": "json"}))
    expect(stored["spec"]["replicas"] == 1, f"a dry run changed the object: {stored['spec']}")
    # A second workload, for paging.
    await run.ok("apply", {"manifest": workload(f"{name}-b", labels={"app": name})})


async def check_get(run: Run) -> None:
    name = run.notes["workload"]
    text = await run.ok("get", {"kind": "workloads", "name": name})
    expect(f"name: {name}" in text and "managedFields" not in text, text)
    missing = await run.error("get", {"kind": "workloads", "name": "no-such-workload"})
    expect("NotFound" in missing, missing)


async def check_list(run: Run) -> None:
    name = run.notes["workload"]
    page = await run.ok("list", {"kind": "wl", "label_selector": f"app={name}", "limit": 1})
    expect("NAME" in page and "continue:" in page, page)
    token = page.split("continue: ", 1)[1].split(" ", 1)[0]
    rest = await run.ok("list", {"kind": "wl", "label_selector": f"app={name}", "limit": 1, "continue": token})
    first = [line.split()[0] for line in page.splitlines()[1:] if line and not line.startswith("[")]
    second = [line.split()[0] for line in rest.splitlines()[1:] if line and not line.startswith("[")]
    expect(len(first) == 1 and len(second) == 1 and first != second, f"pages {first} then {second}")
    everywhere = await run.ok("list", {"kind": "workloads", "all_namespaces": True})
    expect("NAMESPACE" in everywhere, everywhere)
    bad = await run.error("list", {"kind": "workloads", "limit": 100000})
    expect("out of range" in bad, bad)


async def check_diff(run: Run) -> None:
    name = run.notes["workload"]
    same = await run.ok("diff", {"manifest": workload(name)})
    expect("no changes" in same, same)
    changed = await run.ok("diff", {"manifest": workload(name, replicas=4)})
    expect("-  replicas: 1" in changed and "+  replicas: 4" in changed, changed)
    new = await run.ok("diff", {"manifest": workload(f"brand-new-{SUFFIX}")})
    expect("new object" in new, new)


async def check_scale(run: Run) -> None:
    name = run.notes["workload"]
    scaled = await run.ok("scale", {"name": name, "replicas": 3})
    expect(f"scaled to 3 replicas" in scaled, scaled)
    stored = json.loads(await run.ok("get", {"kind": "workload", "name": name, "format": "json"}))
    expect(stored["spec"]["replicas"] == 3, f"{stored['spec']}")
    same = await run.ok("scale", {"name": name, "replicas": 3})
    expect("unchanged" in same, same)
    bad = await run.error("scale", {"name": name, "replicas": -1})
    expect("out of range" in bad, bad)


async def check_status(run: Run) -> None:
    name = run.notes["workload"]
    text = await run.ok("status", {"name": name})
    expect(f"default/{name}:" in text and "/3 ready" in text, text)


async def check_logs(run: Run) -> None:
    text = await run.error("logs", {"name": "no-such-replica"})
    expect("no replica or workload named no-such-replica" in text, text)
    bad = await run.error("logs", {"name": run.notes["workload"], "max_bytes": 10**9})
    expect("out of range" in bad, bad)


async def check_running_replica(run: Run) -> None:
    """With a node that runs replicas (`--with-node`): `status` shows one running and where,
    `logs` its latest lines, bounded by tail_lines and max_bytes."""
    if not run.args.with_node:
        print("skip running_replica: no --with-node")
        return
    name = f"talker-{SUFFIX}"
    manifest = workload(name).replace(
        "  replicas: 1\n",
        "  replicas: 1\n  command: [\"/bin/sh\", \"-c\", \"i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done\"]\n",
    )
    await run.ok("apply", {"manifest": manifest})
    text = ""
    for _ in range(60):
        text = await run.ok("status", {"name": name})
        if "  Running  on " in text:
            break
        await asyncio.sleep(1)
    expect(f"default/{name}: 1/1 ready, 1 replicas" in text and "  Running  on " in text, text)
    logs = ""
    for _ in range(30):
        logs = await run.ok("logs", {"name": name})
        if "line 5\n" in logs:
            break
        await asyncio.sleep(0.5)
    expect("line 0\n" in logs and "line 5\n" in logs, logs)
    two = await run.ok("logs", {"name": name, "tail_lines": 2})
    expect(len(two.splitlines()) == 2 and two.startswith("line "), two)
    cut = await run.ok("logs", {"name": name, "tail_lines": 2000, "max_bytes": 20})
    lines = cut.splitlines()
    expect("bytes left out; ask for fewer tail_lines" in lines[0] and lines[-1].startswith("line "), cut)
    expect(sum(len(line) + 1 for line in lines[1:]) <= 20, cut)
    await run.ok("delete", {"kind": "wl", "name": name})


async def check_balance_and_reputation(run: Run) -> None:
    balance = await run.ok("balance", {})
    expect("balance:" in balance and "did: did:key:" in balance, balance)
    bad = await run.error("balance", {"did": "not-a-did"})
    expect("not a did:key" in bad, bad)
    rep = await run.error("reputation", {"subject": "no-such-node"})
    expect("no reputation for node no-such-node" in rep, rep)


async def check_approval(run: Run) -> None:
    text = await run.error("approval", {"name": "no-such-approval"})
    expect("NotFound" in text or "not found" in text, text)
    bad = await run.error("approval", {"name": "x", "wait_seconds": 100000})
    expect("more than 600" in bad, bad)


async def check_approval_wait(run: Run) -> None:
    """`approval` with wait_seconds returns when the Approval is decided (here the control
    plane's member writes one and decides it, standing in for the apiserver's approval flow)."""
    if not run.args.member_kubeconfig:
        print("skip approval_wait: no --member-kubeconfig")
        return
    agent = _did(run.args.ui, run.args.agent_dir)
    owner = _did(run.args.ui, run.args.user_dir)
    name = f"apr-{SUFFIX}"
    approval = {
        "apiVersion": "univrs.io/v1", "kind": "Approval", "metadata": {"name": name},
        "spec": {
            "agent": agent, "owner": owner, "grant": "mcp-test", "rule": "create Workload in default: approval",
            "request": {"verb": "create", "kind": "Workload", "namespace": "default", "name": "held"},
            "diff": "+replicas: 1\n", "expires": "2099-01-01T00:00:00Z",
        },
    }
    kubectl = ["kubectl", "--kubeconfig", run.args.member_kubeconfig]
    subprocess.run([*kubectl, "apply", "-f", "-"], input=json.dumps(approval), text=True, check=True, capture_output=True)
    pending = await run.ok("approval", {"name": name})
    expect(pending.startswith(f"Approval {name}: Pending") and "request: create Workload default/held" in pending, pending)

    async def decide() -> None:
        await asyncio.sleep(1)
        patch = json.dumps({"status": {"phase": "Denied", "message": "the user said no"}})
        await asyncio.to_thread(
            subprocess.run,
            [*kubectl, "patch", "approval", name, "--subresource=status", "--type=merge", "-p", patch],
            check=True, capture_output=True,
        )

    decider = asyncio.create_task(decide())
    decided = await run.ok("approval", {"name": name, "wait_seconds": 30})
    await decider
    expect(decided.startswith(f"Approval {name}: Denied — the user said no"), decided)


def _did(ui: str, config_dir: str) -> str:
    out = subprocess.run([ui, "--config-dir", config_dir, "identity", "show", "-o", "json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["did"]


async def check_read_resource(run: Run) -> None:
    name = run.notes["workload"]
    one = await run.client.read_resource(f"univrs://workloads/default/{name}")
    text = one.contents[0].text
    expect(f"name: {name}" in text, text)
    listed = (await run.client.read_resource("univrs://workloads/default")).contents[0].text
    expect(name in listed and "NAME" in listed, listed)
    for bad in ("univrs://pods", "univrs://workloads/default/no-such-workload"):
        try:
            await run.client.read_resource(bad)
        except MCPError as e:
            expect(bool(e.error.message), f"{bad}: empty error")
        else:
            raise AssertionError(f"reading {bad} succeeded")


async def check_bad_input(run: Run) -> None:
    before = await run.ok("list", {"kind": "workloads", "limit": 500})
    # Malformed arguments: a protocol error naming what is wrong.
    for tool, arguments, needle in [
        ("get", {"kind": "workloads"}, "name"),
        ("scale", {"name": "x", "replicas": "three"}, "replicas"),
        ("apply", {"manifest": "x", "unknown_argument": True}, "unknown_argument"),
    ]:
        try:
            r = await run.call(tool, arguments)
        except MCPError as e:
            expect(needle in e.error.message or needle in json.dumps(e.error.data), f"{tool}: {e.error}")
        else:
            text = "".join(c.text for c in r.content if getattr(c, "text", None))
            expect(r.is_error and needle in text, f"{tool} {arguments} was accepted: {text}")
    # An unknown tool.
    try:
        await run.call("no_such_tool", {})
    except MCPError as e:
        expect("no_such_tool" in e.error.message or "not found" in e.error.message.lower(), f"{e.error}")
    else:
        raise AssertionError("an unknown tool was called")
    # An oversized manifest: refused before any request.
    big = workload(f"too-big-{SUFFIX}") + "# " + "x" * (300 * 1024) + "\n"
    text = await run.error("apply", {"manifest": big})
    expect("larger than the limit" in text and "nothing was sent" in text, text)
    # A manifest with a bad document among good ones: nothing is written.
    mixed = workload(f"good-{SUFFIX}") + "---\n" + workload(f"bad-{SUFFIX}").replace("replicas: 1", "replicas: 1\n  nonsense: 1")
    text = await run.error("apply", {"manifest": mixed})
    expect("nonsense" in text and "nothing was sent" in text, text)
    text = await run.error("apply", {"manifest": "kind: [unclosed"})
    expect("manifest" in text, text)
    after = await run.ok("list", {"kind": "workloads", "limit": 500})
    for n in (f"too-big-{SUFFIX}", f"good-{SUFFIX}", f"bad-{SUFFIX}"):
        expect(n not in after, f"{n} was created: {after}")
    expect(len(after.splitlines()) == len(before.splitlines()), f"{before}\n--- became ---\n{after}")


async def check_server_refusal_passes_through(run: Run) -> None:
    # Replicas are the control plane's to write (whatever a grant says): the apiserver's
    # refusal reaches the agent in its own words, and nothing is written.
    name = f"fake-replica-{SUFFIX}"
    replica = (
        f"apiVersion: univrs.io/v1\nkind: Replica\nmetadata:\n  name: {name}\n  namespace: default\n"
        "spec:\n  workload: x\n  container:\n    rootfs: busybox\n"
    )
    text = await run.error("apply", {"manifest": replica})
    expect("Error from server (Forbidden)" in text and "only the control plane may create it" in text, text)
    expect("nothing was written" in text, text)
    missing = await run.error("get", {"kind": "replicas", "name": name})
    expect("NotFound" in missing, missing)


async def check_subscription(run: Run) -> None:
    """A change made by someone else (the user, with `ui apply`) reaches the subscriber."""
    name = f"watched-{SUFFIX}"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(workload(name))
    run.user_ui("apply", "-f", f.name)
    uri = f"univrs://workloads/default/{name}"
    list_uri = "univrs://workloads/default"
    # The agent reads what the user wrote.
    text = (await run.client.read_resource(uri)).contents[0].text
    expect(f"name: {name}" in text, text)

    def change(replicas: int) -> None:
        with open(f.name, "w") as g:
            g.write(workload(name, replicas=replicas))
        run.user_ui("apply", "-f", f.name)

    def add() -> None:
        # Another of the user's workloads: the namespace's list changes.
        with open(f.name, "w") as g:
            g.write(workload(f"{name}-new"))
        run.user_ui("apply", "-f", f.name)

    if run.client.protocol_version >= "2026-07-28":
        async with run.client.listen(resource_subscriptions=[uri, list_uri], resources_list_changed=True) as sub:
            honored = set(sub.honored.resource_subscriptions or [])
            expect(uri in honored and list_uri in honored, f"subscription not honored: {sub.honored}")
            expect(sub.honored.resources_list_changed is True, f"list changes not honored: {sub.honored}")
            await asyncio.to_thread(change, 2)
            await asyncio.wait_for(_first(sub, lambda e: isinstance(e, ResourceUpdated) and e.uri == uri), 30)
            await asyncio.to_thread(add)
            await asyncio.wait_for(_first(sub, lambda e: isinstance(e, ResourcesListChanged)), 30)
    else:
        await run.client.subscribe_resource(uri)
        await asyncio.to_thread(change, 2)
        await asyncio.wait_for(_seen(run.updates, uri), 30)
        await run.client.unsubscribe_resource(uri)
        await run.client.subscribe_resource(list_uri)
        await asyncio.to_thread(add)
        await asyncio.wait_for(_seen(run.updates, "list_changed"), 30)
        await run.client.unsubscribe_resource(list_uri)
    run.user_ui("delete", "workload", name, f"{name}-new")
    os.unlink(f.name)


async def _first(sub, wanted) -> None:
    async for event in sub:
        if wanted(event):
            return
    raise AssertionError("the subscription ended before the event")


async def _seen(queue: asyncio.Queue, what: str) -> None:
    while (got := await queue.get()) != what:
        pass


async def check_delete(run: Run) -> None:
    name = run.notes["workload"]
    dry = await run.ok("delete", {"kind": "wl", "name": name, "dry_run": True})
    expect("would be deleted" in dry, dry)
    await run.ok("get", {"kind": "wl", "name": name})
    gone = await run.ok("delete", {"kind": "wl", "name": name})
    expect(f"workload.univrs.io/{name} deleted" in gone, gone)
    await run.ok("delete", {"kind": "wl", "name": f"{name}-b"})
    missing = await run.error("get", {"kind": "wl", "name": name})
    expect("NotFound" in missing, missing)


def check_http_guards(args: argparse.Namespace) -> None:
    """Raw HTTP: no token is 401; a foreign Host or Origin is refused even with the token."""
    token = open(args.token_file).read().strip()
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).encode()

    def post(headers: dict[str, str]) -> int:
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        h.update(headers)
        req = urllib.request.Request(args.url, data=body, headers=h, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    expect(post({}) == 401, "a request without the token was not refused with 401")
    expect(post({"Authorization": "Bearer wrong-token-wrong-token"}) == 401, "a wrong token was accepted")
    auth = {"Authorization": f"Bearer {token}"}
    expect(post({**auth, "Host": "evil.example:80"}) == 403, "a foreign Host was accepted")
    expect(post({**auth, "Origin": "http://evil.example"}) == 403, "a foreign Origin was accepted")


# ---- a grant that is not "everything" (--grant-file: the user's AgentGrant manifest) ---------
#
# Rules of the grant these checks expect: read everything; create, update and scale Workloads
# in `sandbox` on its own; create and update them in `default` only with the user's approval;
# never delete them in `sandbox` (rule 3).


def workload_in(name: str, namespace: str, replicas: int = 1) -> str:
    return (
        "apiVersion: univrs.io/v1\nkind: Workload\n"
        f"metadata:\n  name: {name}\n  namespace: {namespace}\n"
        f"spec:\n  rootfs: busybox\n  replicas: {replicas}\n"
    )


def user_get(run: Run, *argv: str) -> dict | None:
    """The object as the user reads it, or None when it does not exist."""
    env = dict(os.environ, UNIVRS_CONFIG_DIR=run.args.user_dir)
    p = subprocess.run([run.args.ui, "get", *argv, "-o", "json"], capture_output=True, text=True, env=env, timeout=60)
    if p.returncode != 0:
        expect("not found" in (p.stdout + p.stderr).lower(), f"ui get {argv}: {p.stdout}{p.stderr}")
        return None
    return json.loads(p.stdout)


async def check_grant_autonomous_write_is_the_users(run: Run) -> None:
    name = f"mine-{SUFFIX}"
    run.notes["mine"] = name
    out = await run.ok("apply", {"manifest": workload_in(name, "sandbox")})
    expect(f"workload.univrs.io/{name} created" in out, out)
    stored = user_get(run, "workload", name, "-n", "sandbox")
    expect(stored is not None, "the autonomous apply wrote nothing")
    ann = stored["metadata"]["annotations"]
    owner = _did(run.args.ui, run.args.user_dir)
    agent = _did(run.args.ui, run.args.agent_dir)
    expect(ann["univrs.io/signer"] == owner, f"the object is not the user's: {ann}")
    expect(ann["univrs.io/agent"] == agent and ann["univrs.io/grant"], f"no agent signature: {ann}")
    scaled = await run.ok("scale", {"name": name, "replicas": 2, "namespace": "sandbox"})
    expect("scaled to 2 replicas" in scaled, scaled)


async def check_grant_forbidden_delete_names_the_rule(run: Run) -> None:
    name = run.notes["mine"]
    text = await run.error("delete", {"kind": "workload", "name": name, "namespace": "sandbox"})
    expect("spec.rules[3]" in text and "forbids it" in text and "apply the grant again" in text, text)
    expect(user_get(run, "workload", name, "-n", "sandbox") is not None, "a forbidden delete deleted")
    # Not granted at all: forbidden, saying what rule would grant it.
    text = await run.error("apply", {"manifest": workload_in(f"other-{SUFFIX}", "elsewhere")})
    expect("grants it (forbidden unless granted)" in text, text)
    expect(user_get(run, "workload", f"other-{SUFFIX}", "-n", "elsewhere") is None, "a refused apply wrote")


def _held(text: str) -> str:
    expect("held for approval: Approval " in text, text)
    return text.split("held for approval: Approval ", 1)[1].split(" ", 1)[0]


async def _decide_later(run: Run, verb: str, approval: str) -> None:
    await asyncio.sleep(1)
    await asyncio.to_thread(run.user_ui, verb, approval)


async def check_grant_approval_then_exactly_that_request(run: Run) -> None:
    name = f"held-{SUFFIX}"
    approval = _held(await run.ok("apply", {"manifest": workload_in(name, "default", replicas=2)}))
    expect(user_get(run, "workload", name) is None, "a held write was written before its approval")
    pending = await run.ok("approval", {"name": approval})
    expect(pending.startswith(f"Approval {approval}: Pending"), pending)
    # The user approves with `ui approve` while the agent waits on the approval.
    decider = asyncio.create_task(_decide_later(run, "approve", approval))
    decided = await run.ok("approval", {"name": approval, "wait_seconds": 60})
    await decider
    expect(decided.startswith(f"Approval {approval}: Approved"), decided)
    stored = user_get(run, "workload", name)
    expect(stored is not None and stored["spec"]["replicas"] == 2, f"not as requested: {stored}")


async def check_grant_denied_never_happens(run: Run) -> None:
    name = f"nope-{SUFFIX}"
    approval = _held(await run.ok("apply", {"manifest": workload_in(name, "default")}))
    decider = asyncio.create_task(_decide_later(run, "deny", approval))
    decided = await run.ok("approval", {"name": approval, "wait_seconds": 60})
    await decider
    expect(decided.startswith(f"Approval {approval}: Denied"), decided)
    expect(user_get(run, "workload", name) is None, "a denied request was performed")


async def check_grant_expired_refuses(run: Run) -> None:
    text = open(run.args.grant_file).read()
    past = "\n".join(
        '  expires: "2000-01-01T00:00:00Z"' if line.startswith("  expires:") else line for line in text.splitlines()
    ) + "\n"
    run.user_ui("apply", "-f", "-", stdin=past)
    try:
        out = await run.error("apply", {"manifest": workload_in(f"late-{SUFFIX}", "sandbox")})
        expect("expired" in out and "spec.expires" in out, out)
        expect(user_get(run, "workload", f"late-{SUFFIX}", "-n", "sandbox") is None, "an expired grant wrote")
    finally:
        run.user_ui("apply", "-f", run.args.grant_file)


GRANT_CHECKS = [
    check_initialize,
    check_grant_autonomous_write_is_the_users,
    check_grant_forbidden_delete_names_the_rule,
    check_grant_approval_then_exactly_that_request,
    check_grant_denied_never_happens,
    check_grant_expired_refuses,
]


CHECKS = [
    check_initialize,
    check_list_tools,
    check_resource_templates,
    check_explain,
    check_apply,
    check_get,
    check_list,
    check_diff,
    check_scale,
    check_status,
    check_logs,
    check_running_replica,
    check_balance_and_reputation,
    check_approval,
    check_approval_wait,
    check_read_resource,
    check_bad_input,
    check_server_refusal_passes_through,
    check_subscription,
    check_delete,
]


# ---- connecting ------------------------------------------------------------------------------


@asynccontextmanager
async def connect(args: argparse.Namespace, updates: asyncio.Queue):
    async def on_message(message) -> None:
        root = getattr(message, "root", message)
        if isinstance(root, types.ResourceUpdatedNotification):
            await updates.put(root.params.uri)
        elif isinstance(root, types.ResourceListChangedNotification):
            await updates.put("list_changed")

    mode = "legacy" if args.protocol == "legacy" else "auto"
    if args.mode == "stdio":
        env = dict(os.environ)
        env.pop("UNIVRS_PASSPHRASE", None)
        server = StdioServerParameters(command=args.ui, args=["--config-dir", args.agent_dir, "mcp"], env=env)
        async with Client(server, mode=mode, message_handler=on_message, read_timeout_seconds=60) as client:
            yield client
    else:
        token = open(args.token_file).read().strip()
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(60, read=120))
        async with http:
            transport = streamable_http_client(args.url, http_client=http)
            async with Client(transport, mode=mode, message_handler=on_message, read_timeout_seconds=60) as client:
                yield client


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ui", required=True)
    p.add_argument("--agent-dir", required=True)
    p.add_argument("--user-dir", required=True)
    p.add_argument("--mode", choices=["stdio", "http"], required=True)
    p.add_argument("--url")
    p.add_argument("--token-file")
    p.add_argument("--protocol", choices=["auto", "legacy"], default="auto")
    p.add_argument("--member-kubeconfig", help="a control-plane member's kubeconfig (writes Approvals)")
    p.add_argument("--with-node", action="store_true", help="a node runs the user's replicas (ui up)")
    p.add_argument("--only", help="comma-separated check names (without check_)")
    p.add_argument("--grant-file", help="the user's AgentGrant (not everything): run GRANT_CHECKS")
    args = p.parse_args()
    if args.mode == "http" and not (args.url and args.token_file):
        p.error("--mode http needs --url and --token-file")
    selected = GRANT_CHECKS if args.grant_file else CHECKS
    if args.only:
        wanted = {f"check_{n}" for n in args.only.split(",")}
        selected = [c for c in CHECKS if c.__name__ in wanted]
    failed = 0
    if args.mode == "http" and not args.only and not args.grant_file:
        try:
            check_http_guards(args)
            print("ok http_guards")
        except Exception:
            failed += 1
            print("FAILED http_guards", file=sys.stderr)
            traceback.print_exc()
    updates: asyncio.Queue = asyncio.Queue()
    async with connect(args, updates) as client:
        run = Run(client=client, args=args, updates=updates)
        for check in selected:
            name = check.__name__.removeprefix("check_")
            try:
                await asyncio.wait_for(check(run), 90)
                print(f"ok {name}", flush=True)
            except Exception:
                failed += 1
                print(f"FAILED {name}", file=sys.stderr, flush=True)
                traceback.print_exc()
    if failed:
        print(f"{failed} checks failed", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
