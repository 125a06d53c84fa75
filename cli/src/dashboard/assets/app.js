// The univrs dashboard: renders the view `ui dashboard` pushes as Server-Sent Events
// (/api/events). Plain JavaScript, no build step, no library. Every text comes from the
// cluster, where any key is a user, so nothing is ever parsed as HTML: elements are made with
// createElement and filled with text nodes.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  // h("div", {class: "x", "data-y": 1}, child, "text", [more]) — an element.
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else el.setAttribute(k, String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function fill(id, ...children) {
    $(id).replaceChildren(...children.flat(Infinity).filter((c) => c));
  }

  const short = (did) =>
    did && did.length > 26 ? did.slice(0, 14) + "…" + did.slice(-6) : did || "";

  let me = null;
  function who(did) {
    if (!did) return h("span", { class: "did faint" }, "unsigned");
    if (did === me) return h("span", { class: "did you", title: did }, "you");
    return h("span", { class: "did", title: did }, short(did));
  }

  function clock(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function ago(iso) {
    if (!iso) return "";
    const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }

  const empty = (text) => h("p", { class: "empty" }, text);
  // Before a kind's first list, an empty list means nothing yet.
  const listing = (what) => h("p", { class: "empty listing", "data-listing": "true" }, "listing " + what + "…");
  // "and 12 more (not yours)" under a bounded list.
  const more = (n, what) =>
    n > 0 ? h("p", { class: "faint small more", "data-more": n }, "and " + n + " more " + what + " not shown (yours are listed first)") : null;

  // A meter of used/total: by default (use) fuller is worse; for "progress" fuller is better;
  // a "score" has no good or bad.
  function bar(used, total, label, kind) {
    const pct = total > 0 ? Math.min(100, Math.round((used / total) * 100)) : 0;
    const level = kind === "progress"
      ? (pct >= 100 ? "low" : "mid")
      : kind === "score" ? "neutral" : (pct >= 90 ? "high" : pct >= 70 ? "mid" : "low");
    return h(
      "div",
      { class: "meter", title: label },
      h("div", { class: "meter-fill " + level, "data-pct": pct }),
    );
  }

  // Widths are set through the CSSOM (allowed by the Content-Security-Policy, unlike inline
  // style attributes).
  function sizeMeters(root) {
    for (const m of root.querySelectorAll(".meter-fill")) {
      m.style.width = m.getAttribute("data-pct") + "%";
    }
  }

  function score(x) {
    return x === undefined || x === null ? "–" : x.toFixed(2);
  }

  function scoreBar(x) {
    if (x === undefined || x === null) return h("span", { class: "faint" }, "none yet");
    return h("span", { class: "score" }, bar(x, 1, score(x), "score"), h("span", { class: "num" }, score(x)));
  }

  // — Summary —
  function summary(v) {
    const s = v.summary;
    const leader = v.members.items.find((m) => m.leader);
    const tile = (label, value, sub, cls) =>
      h("div", { class: "tile " + (cls || "") }, h("div", { class: "value" }, value), h("div", { class: "label" }, label), sub ? h("div", { class: "sub" }, sub) : null);
    fill(
      "summary",
      v.listed.workloads ? tile("workloads", s.workloads, s.desired + " replicas wanted") : tile("workloads", "…", "listing"),
      v.listed.workloads ? tile("running", s.running, "replicas", s.running > 0 ? "good" : "") : tile("running", "…", "listing"),
      v.listed.workloads ? tile("pending", s.pending, "replicas", s.pending > 0 ? "warn" : "") : tile("pending", "…", "listing"),
      v.listed.nodes
        ? tile("nodes ready", s.nodesReady + "/" + s.nodes, "", s.nodes > 0 && s.nodesReady < s.nodes ? "warn" : "")
        : tile("nodes ready", "…", "listing"),
      tile("members", s.members, leader ? "leader #" + leader.id : "no leader seen", leader ? "" : "warn"),
    );
  }

  // — Workloads —
  function replicaChip(r) {
    const title = [r.name, r.phase + (r.ready ? ", ready" : ""), r.node ? "on " + r.node : "not placed",
      r.restarts ? r.restarts + " restarts" : "", r.whyPending ? "why pending: " + r.whyPending : "",
      r.reason && !r.whyPending ? r.reason + (r.message ? ": " + r.message : "") : ""].filter(Boolean).join("\n");
    return h(
      "span",
      {
        class: "chip phase-" + r.phase.toLowerCase() + (r.deleting ? " deleting" : ""),
        "data-replica": r.name,
        "data-phase": r.phase,
        "data-ready": r.ready,
        "data-node": r.node || "",
        title,
      },
      h("span", { class: "pip" }),
      "#" + r.name.split("-").slice(-1)[0],
      h("span", { class: "chip-node" }, r.node || "unplaced"),
      r.restarts ? h("span", { class: "restarts", title: r.restarts + " restarts" }, "↻" + r.restarts) : null,
    );
  }

  function workloads(v) {
    if (!v.listed.workloads) return fill("workloads", listing("workloads"));
    if (v.workloads.length === 0) {
      return fill("workloads", empty("No workloads yet. Apply one: ui apply -f manifests/"));
    }
    const rows = v.workloads.map((w) => {
      const ok = w.ready >= w.desired;
      // Available=False is what the ready count says; ReplicaFailure, what whyPending says.
      const bad = w.conditions.filter((c) => c.bad && c.type !== "Available" && !(w.whyPending && c.type === "ReplicaFailure"));
      return h(
        "tr",
        {
          "data-workload": w.namespace + "/" + w.name,
          "data-desired": w.desired,
          "data-replicas": w.replicas,
          "data-ready": w.ready,
          class: w.mine ? "mine" : "",
        },
        h("td", {}, h("div", { class: "name" }, w.name), h("div", { class: "faint small" }, w.namespace + " · ", who(w.owner))),
        h("td", { class: "small" }, w.image || "–", w.trustPolicy ? h("div", { class: "faint" }, "policy " + w.trustPolicy) : null),
        h(
          "td",
          { class: "count" },
          h("div", { class: "ratio " + (ok ? "good" : "warn") }, h("span", { class: "ready-count" }, w.ready), "/", h("span", { class: "desired-count" }, w.desired)),
          bar(w.ready, Math.max(w.desired, 1), w.ready + " of " + w.desired + " ready", "progress"),
        ),
        h("td", { class: "chips" }, w.items.length ? w.items.map(replicaChip) : h("span", { class: "faint" }, "no replicas"),
          w.moreItems ? h("span", { class: "faint small" }, " and " + w.moreItems + " more") : null),
        h(
          "td",
          { class: "why small" },
          w.whyPending ? h("div", { class: "pending-why" }, w.whyPending) : null,
          bad.map((c) => h("div", { class: "bad" }, (c.reason || c.type) + (c.message ? ": " + c.message : ""))),
          !w.whyPending && bad.length === 0 ? h("span", { class: "faint" }, ok ? "all running" : "starting") : null,
        ),
      );
    });
    fill(
      "workloads",
      h(
        "table",
        { class: "table" },
        h("thead", {}, h("tr", {}, ["workload", "image", "ready", "replicas", "why pending / problems"].map((t) => h("th", {}, t)))),
        h("tbody", {}, rows),
      ),
      more(v.more.workloads, "workloads"),
    );
  }

  // — Nodes —
  function nodes(v) {
    if (!v.listed.nodes) return fill("nodes", listing("nodes"));
    if (v.nodes.length === 0) return fill("nodes", empty("No nodes registered. `ui up` brings one; operators join theirs with `ui node run`."));
    fill(
      "nodes",
      v.nodes.map((n) => {
        const o = n.offer;
        const cap = n.offered.cpuMillicores ? n.offered : n.capacity;
        return h(
          "div",
          { class: "card node " + (n.ready ? "" : "down"), "data-node": n.name, "data-ready": n.ready },
          h(
            "div",
            { class: "card-head" },
            h("span", { class: "name" }, n.name),
            h("span", { class: "badge " + (n.ready ? "good" : "bad"), title: n.readyMessage || "" }, n.ready ? "Ready" : "NotReady"),
            n.unschedulable ? h("span", { class: "badge warn" }, "drained") : null,
            n.runtime ? h("span", { class: "badge" }, n.runtime) : null,
          ),
          h("div", { class: "small" }, "operator ", who(n.operator), n.operatorIsMember ? h("span", { class: "badge" }, "member") : null),
          o
            ? h("div", { class: "small" }, "offer ", h("b", {}, o.jurisdiction + (o.region ? " · " + o.region : "")), " · ",
                o.price.free ? "free" : o.price.cpu + " cr/core-h, " + o.price.memory + " cr/GiB-h", o.phase ? " · " + o.phase : "")
            : h("div", { class: "small warn-text" }, "no offer signed by its operator: takes no replicas"),
          h(
            "div",
            { class: "usage" },
            h("div", { class: "small" }, "cpu ", h("b", {}, n.used.cpu), " of " + cap.cpu),
            bar(n.used.cpuMillicores, cap.cpuMillicores, "cpu"),
            h("div", { class: "small" }, "memory ", h("b", {}, n.used.memory), " of " + cap.memory),
            bar(n.used.memoryBytes, cap.memoryBytes, "memory"),
          ),
          h(
            "div",
            { class: "small rep" },
            h("span", {}, "reputation ", h("b", {}, n.reputation ? score(n.reputation.composite) : "–")),
            h("span", {}, "operator ", h("b", {}, n.operatorReputation ? score(n.operatorReputation.composite) : "–")),
            h("span", {}, n.replicas + " replica" + (n.replicas === 1 ? "" : "s")),
          ),
          h("div", { class: "faint small", title: "since its Ready condition last changed" },
            n.readySince ? (n.ready ? "ready since " : "not ready since ") + ago(n.readySince) : "no heartbeat yet"),
        );
      }),
      more(v.more.nodes, "nodes"),
    );
  }

  // — Trust policies —
  function policies(v) {
    if (!v.listed.policies) return fill("policies", listing("trust policies"));
    if (v.policies.length === 0) {
      return fill("policies", empty("No trust policies. Without one, a workload runs only on your own nodes and the control plane's."));
    }
    fill(
      "policies",
      v.policies.map((p) =>
        h(
          "div",
          { class: "policy", "data-policy": p.namespace + "/" + p.name },
          h("div", { class: "card-head" }, h("span", { class: "name" }, p.name), h("span", { class: "faint small" }, p.namespace + " · ", who(p.owner))),
          h("div", { class: "small" }, p.constraints.join(" · ")),
          h(
            "div",
            { class: "small" },
            "admits ",
            h("b", { "data-admitted": p.admitted }, p.admitted + " of " + p.considered),
            " nodes",
            p.admits.length ? ": " : "",
            p.admits.map((n) => h("span", { class: "chip phase-running", "data-admits": n }, n)),
            p.admitted > p.admits.length ? h("span", { class: "faint" }, " and " + (p.admitted - p.admits.length) + " more") : null,
          ),
          p.rejected.length
            ? h(
                "div",
                { class: "small" },
                "not: ",
                p.rejected.map((r) => h("span", { class: "chip phase-failed", "data-rejected": r.reason }, r.reason, h("span", { class: "chip-node" }, r.count + " node" + (r.count === 1 ? "" : "s")))),
              )
            : null,
          p.workloads.length
            ? h("div", { class: "faint small" }, "used by " + p.workloads.join(", ") + (p.moreWorkloads ? " and " + p.moreWorkloads + " more" : ""))
            : null,
          p.spending ? h("div", { class: "faint small" }, p.spending) : null,
        ),
      ),
      more(v.more.policies, "trust policies"),
    );
  }

  // — Control plane —
  function members(v) {
    const m = v.members;
    if (m.error) return fill("members", h("p", { class: "bad" }, m.error));
    if (m.items.length === 0) return fill("members", empty("reading the members…"));
    fill(
      "members",
      h(
        "table",
        { class: "table compact" },
        h("thead", {}, h("tr", {}, ["id", "member", "role", "state", "applied"].map((t) => h("th", {}, t)))),
        h(
          "tbody",
          {},
          m.items.map((x) =>
            h(
              "tr",
              { "data-member": x.id, class: x.leader ? "leader" : "" },
              h("td", {}, x.leader ? h("span", { class: "crown", title: "leader" }, "★ ") : "", "#" + x.id),
              h("td", {}, x.did ? who(x.did) : h("span", { class: "faint" }, "did unknown"), h("div", { class: "faint small" }, x.api || x.address || "")),
              h("td", {}, x.role),
              h("td", {}, h("span", { class: "badge " + (x.state === "Unreachable" ? "bad" : x.leader ? "good" : "") }, x.state)),
              h("td", { class: "num" }, x.lastApplied ?? "?"),
            ),
          ),
        ),
      ),
      h("div", { class: "faint small", "data-members-read": m.readAt || "" }, "membership is Raft's, not an object: read every 10 s" + (m.readAt ? " (last " + clock(m.readAt) + ")" : "")),
    );
  }

  // — Credits —
  function credits(v) {
    const c = v.credits;
    if (!v.listed.credits) return fill("credits", listing("accounts and credit lines"));
    if (c.accounts.length === 0 && c.grants.length === 0) {
      return fill("credits", empty("No credits have moved yet. Balances appear once a priced replica runs or someone sends credits."));
    }
    fill(
      "credits",
      c.accounts.length
        ? h(
            "table",
            { class: "table compact" },
            h("thead", {}, h("tr", {}, ["account", "balance", "with", "transfers"].map((t) => h("th", {}, t)))),
            h(
              "tbody",
              {},
              c.accounts.map((a) =>
                h(
                  "tr",
                  { "data-account": a.owner },
                  h("td", {}, who(a.owner)),
                  h("td", { class: "num " + (a.negative ? "bad" : "good") }, a.balance),
                  h("td", { class: "small" }, a.lines.map((l) => h("div", {}, who(l.counterparty), " " + l.balance))),
                  h("td", { class: "num" }, a.transfers),
                ),
              ),
            ),
          )
        : null,
      c.grants.length
        ? h(
            "div",
            { class: "small" },
            h("h3", {}, "Credit lines"),
            c.grants.map((g) =>
              h("div", { "data-grant": g.name }, who(g.granter), " → ", who(g.grantee), ": ", h("b", {}, g.limit), g.used ? " (" + g.used + " used)" : "", g.expires ? h("span", { class: "faint" }, " until " + g.expires) : null),
            ),
          )
        : null,
      more(v.more.accounts, "accounts"),
      more(v.more.grants, "credit lines"),
    );
  }

  // — Reputation —
  function reputations(v) {
    if (!v.listed.reputations) return fill("reputations", listing("reputations"));
    if (v.reputations.length === 0) return fill("reputations", empty("No reputations computed yet."));
    fill(
      "reputations",
      h(
        "table",
        { class: "table compact" },
        h("thead", {}, h("tr", {}, ["subject", "composite", "uptime", "reliability", "honesty"].map((t) => h("th", {}, t)))),
        h(
          "tbody",
          {},
          v.reputations.map((r) =>
            h(
              "tr",
              { "data-reputation": r.subjectKind + "/" + r.subject },
              h("td", {}, h("span", { class: "faint small" }, r.subjectKind.toLowerCase() + " "), r.subjectKind === "Operator" ? who(r.subject) : r.subject),
              h("td", {}, scoreBar(r.scores && r.scores.composite)),
              h("td", { class: "num" }, score(r.scores && r.scores.uptime)),
              h("td", { class: "num" }, score(r.scores && r.scores.reliability)),
              h("td", { class: "num" }, score(r.scores && r.scores.honesty)),
            ),
          ),
        ),
      ),
      more(v.more.reputations, "reputations"),
    );
  }

  // — Events —
  function events(v) {
    if (!v.listed.events) return fill("events", listing("events"));
    if (v.events.length === 0) return fill("events", empty("Nothing has happened yet."));
    fill(
      "events",
      h(
        "table",
        { class: "table compact events" },
        h(
          "tbody",
          {},
          v.events.map((e) =>
            h(
              "tr",
              { class: (e.warning ? "warning" : "") + (e.mine ? " mine" : "") },
              h("td", { class: "time", title: e.time }, clock(e.time)),
              h("td", {}, h("span", { class: "badge" }, e.kind)),
              h("td", { class: "name" }, e.object),
              h("td", { class: e.warning ? "bad" : "" }, e.reason),
              h("td", { class: "small" }, e.message),
            ),
          ),
        ),
      ),
    );
  }

  function sources(v) {
    fill(
      "sources",
      v.sources.map((s) =>
        h("span", { class: "source " + s.state.toLowerCase(), title: s.error || s.state, "data-source": s.kind }, s.kind),
      ),
    );
  }

  // A banner over the page: what is wrong with what it shows (failing watches, members that
  // cannot be read, a lost connection, a section that could not be drawn).
  let connectionTrouble = null;
  let sectionTrouble = [];
  let dataTrouble = [];
  function banner() {
    const lines = [connectionTrouble, ...dataTrouble, ...sectionTrouble].filter(Boolean);
    const el = $("banner");
    el.hidden = lines.length === 0;
    el.replaceChildren(...lines.map((l) => h("div", {}, l)));
  }

  function troubles(v) {
    const failing = v.sources.filter((s) => s.state === "Failing");
    dataTrouble = failing.map((s) =>
      "cannot follow " + s.kind + (s.listed ? " (shown as last seen)" : " (not listed yet)") + ": " + (s.error || "failing"),
    );
    if (v.members.error) dataTrouble.push(v.members.error);
  }

  let lastChange = null;
  function stamp() {
    if ($("live").getAttribute("data-connected") !== "true") return;
    const el = $("updated");
    if (!lastChange) {
      el.textContent = "listing…";
      return;
    }
    el.textContent = "last update " + clock(lastChange) + " · " + ago(lastChange);
    el.setAttribute("data-last-change", lastChange);
  }

  function render(v) {
    // Before the first view is made the process has nothing to say yet.
    if (!v.summary) return;
    me = v.me;
    lastChange = v.lastChange;
    fill("who", v.me ? h("span", {}, "as ", h("span", { class: "did", title: v.me }, short(v.me))) : null, v.server ? h("span", { class: "faint" }, " · " + v.server) : null, h("span", { class: "faint" }, v.namespace ? " · namespace " + v.namespace : " · every namespace"));
    // One section that cannot be drawn does not stop the others, nor the next view.
    sectionTrouble = [];
    for (const [name, draw] of [["summary", summary], ["workloads", workloads], ["nodes", nodes], ["policies", policies],
      ["members", members], ["credits", credits], ["reputations", reputations], ["events", events], ["sources", sources],
      ["banner", troubles]]) {
      try {
        draw(v);
      } catch (err) {
        sectionTrouble.push("cannot draw " + name + ": " + err);
      }
    }
    banner();
    sizeMeters(document);
    stamp();
  }

  function connected(yes, why) {
    $("live").setAttribute("data-connected", yes ? "true" : "false");
    connectionTrouble = yes ? null : why;
    if (!yes) $("updated").textContent = "reconnecting…";
    banner();
  }

  // The view comes whole with every change. EventSource reconnects by itself after a dropped
  // connection, but not after an answer that is not a stream (401, 403, 503): then it is
  // opened again on a timer, and the banner says why.
  let source = null;
  let retry = null;
  function open() {
    retry = null;
    source = new EventSource("/api/events");
    source.addEventListener("view", (e) => {
      connected(true);
      let v;
      try {
        v = JSON.parse(e.data);
      } catch (err) {
        return connected(false, "the dashboard sent a view that is not JSON: " + err);
      }
      render(v);
    });
    source.addEventListener("open", () => connected(true));
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) {
        return connected(false, "lost the connection to ui dashboard; reconnecting…");
      }
      source.close();
      // Why: the same request, answered as text (401: no cookie, 403, 503: too many tabs).
      fetch("/api/view", { credentials: "same-origin" })
        .then((r) => (r.ok ? "the event stream was refused" : r.text().then((t) => "HTTP " + r.status + ": " + t.trim())))
        .catch(() => "ui dashboard is not answering (stopped?)")
        .then((why) => connected(false, why + " — trying again in 5 s"));
      if (!retry) retry = setTimeout(open, 5000);
    });
  }
  open();
  // Only the "… s ago" text moves with the clock; nothing is fetched.
  setInterval(stamp, 1000);
})();
