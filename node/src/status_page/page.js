// The status page: polls api/status every second (each poll starts a
// second after the last one started, however long that took) and redraws. Rates are
// computed here from successive totals; nothing is fetched from elsewhere.
"use strict";
(function () {
  const POLL_MS = 1000;
  const KEEP = 60;
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  // Per backend ("pool address"): the last totals and the recent rates.
  const series = new Map();

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, String(value));
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function pill(text, tone) {
    return el("span", { class: "pill " + tone }, text);
  }

  function fill(tbody, rows, columns, emptyText) {
    tbody.replaceChildren(...rows);
    if (rows.length === 0) {
      tbody.append(el("tr", {}, el("td", { class: "empty", colSpan: columns }, emptyText)));
    }
  }

  const stateTone = { leader: "good", follower: "idle", learner: "idle", candidate: "warn", shutdown: "bad" };
  const healthTone = { up: "good", down: "bad", ejected: "warn", unknown: "idle" };
  const adminTone = { enabled: "good", drain: "warn", maintenance: "idle" };

  function certificate(notAfter) {
    if (!notAfter) return el("span", { class: "muted" }, "none");
    const days = Math.floor((notAfter * 1000 - Date.now()) / 86400000);
    const when = new Date(notAfter * 1000).toISOString().slice(0, 10);
    const tone = days < 0 ? "bad" : days < 14 ? "warn" : "good";
    return el("span", { title: when }, pill(days < 0 ? "expired" : days + " d", tone), " ", el("span", { class: "muted" }, when));
  }

  function members(status) {
    const rows = status.members.map((m) => {
      const state = m.reachable ? m.state : "unreachable";
      const tr = el("tr", {
        class: m.reachable ? (m.state === "leader" ? "leader" : "") : "unreachable",
        "data-node": m.id,
        "data-state": state,
        "data-reachable": m.reachable,
        title: m.error || "",
      },
        el("td", {}, "node " + m.id, m.id === status.served_by ? el("span", { class: "muted" }, " (this page)") : null),
        el("td", { class: "mono" }, m.address),
        el("td", {}, m.role),
        el("td", {}, pill(state, m.reachable ? stateTone[state] || "idle" : "bad"),
          m.reachable ? null : el("span", { class: "muted" }, " " + (m.error || ""))),
        el("td", { class: "num" }, m.term ?? "–"),
        el("td", { class: "num" }, m.applied ?? "–"),
        el("td", { class: "num" }, m.lag ?? "–"),
        el("td", {}, m.reachable ? certificate(m.certificate_not_after) : "–"),
        el("td", { class: "num" }, m.pid ?? "–"),
        el("td", {}, m.version ?? "–"));
      return tr;
    });
    fill(document.querySelector("#members tbody"), rows, 10, "no members");
  }

  function sparkline(values, errors) {
    const ns = "http://www.w3.org/2000/svg";
    const width = 120, height = 22;
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const top = Math.max(1, ...values);
    const line = (points, cls) => {
      if (points.length < 2) return;
      const step = width / (KEEP - 1);
      const start = width - step * (points.length - 1);
      const p = document.createElementNS(ns, "polyline");
      if (cls) p.setAttribute("class", cls);
      p.setAttribute("points", points.map((v, i) =>
        `${(start + i * step).toFixed(1)},${(height - 1 - (v / top) * (height - 3)).toFixed(1)}`).join(" "));
      svg.append(p);
    };
    line(values);
    line(errors, "errors");
    return svg;
  }

  // Turns the totals of this reading into rates, per backend.
  function rates(key, backend, atMs) {
    let s = series.get(key);
    if (!s) {
      s = { at: atMs, requests: backend.requests, errors: backend.errors, rps: [], eps: [] };
      series.set(key, s);
      return { rps: 0, eps: 0, s };
    }
    const seconds = (atMs - s.at) / 1000;
    if (seconds <= 0) return { rps: s.rps.at(-1) || 0, eps: s.eps.at(-1) || 0, s };
    // Totals fall when a member stops answering: no rate for that step.
    const rps = Math.max(0, (backend.requests - s.requests) / seconds);
    const eps = Math.max(0, (backend.errors - s.errors) / seconds);
    s.rps.push(rps);
    s.eps.push(eps);
    if (s.rps.length > KEEP) { s.rps.shift(); s.eps.shift(); }
    s.at = atMs; s.requests = backend.requests; s.errors = backend.errors;
    return { rps, eps, s };
  }

  function pools(status) {
    const nodes = status.members.map((m) => m.id);
    const seen = new Set();
    const blocks = status.pools.map((pool) => {
      const head = el("tr", {},
        el("th", {}, "Backend"), el("th", {}, "Admin"), el("th", { class: "num" }, "Weight"),
        ...nodes.map((id) => el("th", {}, "node " + id)),
        el("th", { class: "num" }, "Active"), el("th", { class: "num" }, "Req/s"),
        el("th", { class: "num" }, "Errors"), el("th", {}, "Last minute"));
      const rows = pool.backends.map((b) => {
        const key = pool.name + " " + b.address;
        seen.add(key);
        const { rps, eps, s } = rates(key, b, status.at_ms);
        const errorRate = rps > 0 ? (100 * eps) / rps : 0;
        return el("tr", { "data-pool": pool.name, "data-backend": b.address, "data-admin": b.admin_state, "data-rps": rps.toFixed(2) },
          el("td", { class: "mono" }, b.address),
          el("td", {}, pill(b.admin_state, adminTone[b.admin_state] || "idle")),
          el("td", { class: "num" }, b.weight),
          ...nodes.map((id) => {
            const h = b.health[id] || "unknown";
            return el("td", { "data-health-node": id }, pill(h, healthTone[h] || "idle"));
          }),
          el("td", { class: "num" }, b.active),
          el("td", { class: "num" }, rps.toFixed(1)),
          el("td", { class: "num" }, pill(errorRate.toFixed(1) + " %", errorRate > 5 ? "bad" : errorRate > 0 ? "warn" : "idle")),
          el("td", {}, sparkline(s.rps, s.eps)));
      });
      const sticky = pool.sticky
        ? " · sticky entries: " + Object.entries(pool.sticky).map(([id, n]) => `node ${id} ${n}`).join(", ")
        : "";
      return el("div", { "data-pool": pool.name },
        el("h3", {}, pool.name + " ", el("span", { class: "muted" }, pool.algorithm + sticky)),
        el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
    });
    for (const key of series.keys()) if (!seen.has(key)) series.delete(key);
    const box = document.getElementById("pools");
    box.replaceChildren(...blocks);
    if (blocks.length === 0) box.append(el("p", { class: "empty" }, "no pools"));
  }

  function render(status) {
    document.getElementById("cluster").textContent =
      `cluster ${status.cluster_id || "?"} · served by node ${status.served_by}`;
    const leader = document.getElementById("leader");
    leader.dataset.leader = status.leader ?? "";
    leader.textContent = status.leader ? "leader: node " + status.leader : "no leader";
    leader.className = "pill " + (status.leader ? "good" : "bad");
    members(status);
    fill(document.querySelector("#vips tbody"), status.vips.map((v) =>
      el("tr", { "data-vip": v.vip }, el("td", { class: "mono" }, v.vip),
        el("td", {}, v.holders.map((id) => "node " + id).join(", ")))), 2, "no VIP held");
    fill(document.querySelector("#listeners tbody"), status.listeners.map((l) =>
      el("tr", {}, el("td", {}, l.name), el("td", {}, l.protocol), el("td", { class: "mono" }, l.bind),
        el("td", {}, l.pool ?? "–"))), 4, "no listeners");
    pools(status);
    fill(document.querySelector("#events tbody"), status.events.map((e) =>
      el("tr", { "data-kind": e.kind },
        el("td", { class: "mono" }, new Date(e.at_ms).toLocaleTimeString()),
        el("td", {}, "node " + e.node),
        el("td", {}, pill(e.kind, e.kind === "admin" ? "warn" : "idle")),
        el("td", { class: "wide" }, e.text))), 4, "nothing yet");
    document.getElementById("updated").textContent = "updated " + new Date(status.at_ms).toLocaleTimeString();
  }

  function problem(text) {
    const box = document.getElementById("problem");
    box.textContent = text;
    box.hidden = !text;
  }

  async function poll() {
    const started = Date.now();
    try {
      const headers = token ? { Authorization: "Bearer " + token } : {};
      const response = await fetch("/api/status", { headers, cache: "no-store" });
      if (!response.ok) {
        problem(`${response.status}: ${(await response.text()).trim()}`);
      } else {
        render(await response.json());
        problem("");
      }
    } catch (e) {
      problem("cannot reach this node: " + e.message);
    } finally {
      setTimeout(poll, Math.max(0, POLL_MS - (Date.now() - started)));
    }
  }

  poll();
})();
