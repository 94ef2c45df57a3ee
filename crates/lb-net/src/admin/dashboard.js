// lb dashboard: polls GET /stats and draws it; actions go through POST /command.
//
// Served by the admin endpoint itself under a Content-Security-Policy that allows only its own
// scripts, styles and requests. Everything read from /stats is written with textContent, never
// as HTML: backend names and failure reasons are data.
"use strict";

(() => {
  const POLL_MS = 2000;          // visible tab
  const HIDDEN_POLL_MS = 30000;  // hidden tab: keep the rate history going, cheaply
  const MAX_BACKOFF_MS = 30000;  // endpoint unreachable
  const HISTORY_S = 300;         // sparklines show the last five minutes

  const $ = (id) => document.getElementById(id);
  const nf = new Intl.NumberFormat("en-US");

  let token = "";                // memory only: never a cookie, never storage
  let failures = 0;
  let timer = null;
  let tokenRequired = false;
  const history = new Map();     // key -> [{t, total}] (t: server uptime in seconds)
  const rows = new Map();        // key -> { tr, cells }
  const poolCards = new Map();   // pool name -> card elements

  // ---- formatting --------------------------------------------------------------------------

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function count(n) {
    return typeof n === "number" ? nf.format(n) : "–";
  }

  function bytes(n) {
    if (typeof n !== "number") return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + units[i];
  }

  function rate(r) {
    if (r === null || r === undefined) return "–";
    return r >= 100 ? nf.format(Math.round(r)) : r.toFixed(r >= 10 ? 1 : 2);
  }

  function duration(s) {
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24;
    const m = Math.floor(s / 60) % 60, sec = s % 60;
    const two = (x) => String(x).padStart(2, "0");
    if (d > 0) return `${d}d ${two(h)}h ${two(m)}m`;
    if (h > 0) return `${h}h ${two(m)}m`;
    if (m > 0) return `${m}m ${two(sec)}s`;
    return `${sec}s`;
  }

  function latency(us) {
    if (typeof us !== "number") return "–";
    const ms = us / 1000;
    return (ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2)) + " ms";
  }

  function clock(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    const two = (x) => String(x).padStart(2, "0");
    return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  }

  // ---- rates and sparklines ----------------------------------------------------------------

  // Adds a sample of a cumulative total; returns the rate per second since the previous one.
  // Times are the server's uptime, so a throttled background tab does not skew them.
  function sample(key, t, total) {
    let h = history.get(key);
    if (!h || (h.length && (t < h[h.length - 1].t || total < h[h.length - 1].total))) {
      h = []; // first sight, or the balancer restarted
      history.set(key, h);
    }
    h.push({ t, total });
    while (h.length > 2 && t - h[0].t > HISTORY_S) h.shift();
    if (h.length < 2) return null;
    const a = h[h.length - 2], b = h[h.length - 1];
    return b.t > a.t ? (b.total - a.total) / (b.t - a.t) : null;
  }

  function sparkline(key) {
    const h = history.get(key) || [];
    const W = 64, H = 20;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("width", W);
    svg.setAttribute("height", H);
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("aria-hidden", "true");
    const base = document.createElementNS(svg.namespaceURI, "line");
    base.setAttribute("x1", 0); base.setAttribute("x2", W);
    base.setAttribute("y1", H - 0.5); base.setAttribute("y2", H - 0.5);
    svg.appendChild(base);
    const rates = [];
    for (let i = 1; i < h.length; i++) {
      const dt = h[i].t - h[i - 1].t;
      if (dt > 0) rates.push({ t: h[i].t, r: (h[i].total - h[i - 1].total) / dt });
    }
    if (rates.length >= 2) {
      // The x axis spans the samples held (up to HISTORY_S), so a new page fills it at once.
      const t0 = rates[0].t, span = Math.max(rates[rates.length - 1].t - t0, 1);
      const max = Math.max(...rates.map((p) => p.r), 0.001);
      const pts = rates.map((p) => {
        const x = ((p.t - t0) / span) * W;
        const y = H - 1 - (p.r / max) * (H - 3);
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      });
      const line = document.createElementNS(svg.namespaceURI, "polyline");
      line.setAttribute("points", pts.join(" "));
      svg.appendChild(line);
    }
    return svg;
  }

  function setSpark(container, key) {
    container.replaceChildren(sparkline(key));
  }

  // ---- drawing -----------------------------------------------------------------------------

  const COLUMNS = [
    ["backend", "Backend", ""],
    ["state", "State", ""],
    ["weight", "Weight", "num"],
    ["active", "Active", "num"],
    ["peak", "Peak", "num"],
    ["total", "Total", "num"],
    ["rate", "Conn/s", "num"],
    ["failures", "Failures", "num"],
    ["bytes_in", "In", "num"],
    ["bytes_out", "Out", "num"],
    ["check", "Check", "num"],
    ["actions", "", "act"],
  ];

  function poolCard(name) {
    let card = poolCards.get(name);
    if (card) return card;
    const section = el("section", "pool");
    section.dataset.pool = name;
    const head = el("div", "pool-head");
    const title = el("h2", "", "pool " + name);
    const algorithm = el("span", "muted");
    const available = el("span", "muted");
    head.append(title, algorithm, available);
    const wrap = el("div", "table-wrap");
    const table = el("table");
    const thead = el("thead");
    const tr = el("tr");
    for (const [, label, cls] of COLUMNS) tr.appendChild(el("th", cls, label));
    thead.appendChild(tr);
    const tbody = el("tbody");
    const tfoot = el("tfoot");
    table.append(thead, tbody, tfoot);
    wrap.appendChild(table);
    section.append(head, wrap);
    $("pools").appendChild(section);
    card = { section, algorithm, available, tbody, tfoot, totals: null };
    poolCards.set(name, card);
    return card;
  }

  function newRow(key, pool, backend) {
    const tr = el("tr");
    tr.dataset.key = key;
    tr.dataset.pool = pool;
    tr.dataset.backend = backend;
    const cells = {};
    for (const [name, label, cls] of COLUMNS) {
      const td = el("td", name === "backend" ? "backend addr" : cls);
      td.dataset.label = label;
      cells[name] = td;
      tr.appendChild(td);
    }
    cells.backend.textContent = backend;
    cells.rateText = el("span");
    cells.spark = el("span", "spark");
    cells.rate.append(cells.spark, " ", cells.rateText);
    cells.actions.appendChild(actionButtons(pool, backend));
    return { tr, cells };
  }

  function actionButtons(pool, backend) {
    const box = el("span");
    const target = `${pool}/${backend}`;
    const button = (label, command, title) => {
      const b = el("button", "", label);
      b.type = "button";
      b.title = title;
      b.dataset.command = command;
      b.addEventListener("click", () => send(`${command} ${target}`));
      return b;
    };
    const weight = el("input");
    weight.type = "number";
    weight.min = "1";
    weight.max = "1000";
    weight.title = "new weight (1-1000)";
    weight.setAttribute("aria-label", `weight of ${backend}`);
    const set = el("button", "", "Set");
    set.type = "button";
    set.dataset.command = "weight";
    set.title = "set the weight typed in the box";
    set.addEventListener("click", () => {
      const w = weight.value.trim();
      if (!/^[0-9]+$/.test(w)) {
        answer(`type a weight from 1 to 1000 for ${backend} first`, true);
        return;
      }
      send(`weight ${target} ${w}`);
    });
    box.append(
      button("Drain", "drain", "no new connections; open ones continue"),
      button("Maint", "maint", "maintenance: no new connections"),
      button("Enable", "enable", "ready: takes new connections again"),
      weight,
      set,
    );
    return box;
  }

  function badge(text, cls) {
    return el("span", "badge " + cls, text);
  }

  function fillRow(row, b, r, key) {
    const c = row.cells;
    row.tr.dataset.state = b.state;
    row.tr.classList.toggle("removed", b.state === "removed");
    const known = ["up", "down", "drain", "maint", "init"];
    const state = [badge(b.state, known.includes(b.state) ? "state-" + b.state : "")];
    // Later states (backup servers, slow start) are drawn if /stats carries them.
    if (b.backup === true) state.push(badge("backup", ""));
    if (b.slow_start !== undefined && b.slow_start !== null && b.slow_start !== false) {
      state.push(badge("slow start", "state-init"));
    }
    if (b.state === "down" && (b.reason || b.check_error)) {
      const why = b.check_error || b.reason;
      const reason = el("span", "reason", why);
      reason.title = b.reason && b.check_error ? `${b.reason} (last check: ${b.check_error})` : why;
      state.push(reason);
    }
    c.state.replaceChildren(...state);
    c.weight.textContent = count(b.weight);
    c.active.textContent = count(b.active);
    c.peak.textContent = count(b.peak);
    c.total.textContent = count(b.total);
    c.rateText.textContent = rate(r);
    setSpark(c.spark, key);
    c.failures.textContent = count(b.failures);
    c.bytes_in.textContent = bytes(b.bytes_in);
    c.bytes_out.textContent = bytes(b.bytes_out);
    c.check.textContent = latency(b.check_us);
    c.check.classList.toggle("check-failed", !!b.check_error);
    c.check.title = b.check_error ? "last check failed: " + b.check_error : "";
    for (const button of c.actions.querySelectorAll("button")) button.disabled = token === "";
  }

  function fillTotals(card, pool, r) {
    const t = pool.totals;
    const tr = el("tr");
    const cells = {
      backend: "total",
      state: `${t.available} of ${t.backends} available`,
      weight: "",
      active: count(t.active),
      peak: "",
      total: count(t.total),
      rate: rate(r),
      failures: count(t.failures),
      bytes_in: bytes(t.bytes_in),
      bytes_out: bytes(t.bytes_out),
      check: "",
      actions: "",
    };
    for (const [name, label, cls] of COLUMNS) {
      const td = el("td", name === "backend" ? "backend" : cls, cells[name]);
      td.dataset.label = label;
      if (name === "rate") {
        const spark = el("span", "spark");
        setSpark(spark, "pool:" + pool.name);
        td.replaceChildren(spark, " ", cells[name]);
      }
      tr.appendChild(td);
    }
    card.tfoot.replaceChildren(tr);
  }

  function drawEvents(events, uptime) {
    const list = $("events");
    if (!events || events.length === 0) {
      list.replaceChildren(el("li", "muted", "none yet"));
      return;
    }
    const items = events.slice().reverse().map((e) => {
      const li = el("li", "kind-" + e.kind);
      li.dataset.kind = e.kind;
      const time = el("time", "", clock(e.time));
      time.dateTime = e.time;
      time.title = `${e.time} (${duration(Math.max(0, uptime - e.uptime_seconds))} ago)`;
      const kind = el("span", "kind", e.kind.replace("-", " ") + (e.pool ? ` · ${e.pool}` : ""));
      li.append(time, kind, el("span", "text", e.text));
      return li;
    });
    list.replaceChildren(...items);
  }

  function draw(s) {
    tokenRequired = s.token_required === true;
    document.body.classList.toggle("readonly", !tokenRequired);
    document.body.classList.remove("loading");
    const t = s.uptime_seconds;
    $("algorithm").textContent = s.algorithm;
    $("uptime").textContent = duration(t);
    $("available").textContent = `${s.totals.available} of ${s.totals.backends}`;
    $("open").textContent = count(s.clients && s.clients.open);
    $("total").textContent = count(s.totals.total);
    $("rate").textContent = rate(sample("all", t, s.totals.total));
    setSpark($("rate-spark"), "all");

    const seenPools = new Set();
    const seenRows = new Set();
    for (const pool of s.pools || []) {
      const name = pool.name + (pool.removed ? " (removed)" : "");
      seenPools.add(name);
      const card = poolCard(name);
      card.algorithm.textContent = "algorithm " + pool.algorithm;
      card.available.textContent =
        `${pool.totals.available} of ${pool.totals.backends} backends available`;
      const wanted = [];
      pool.backends.forEach((b, i) => {
        // A removed backend and the one added again at its address are two rows.
        const key = `${name}/${b.backend}` + (b.state === "removed" ? "#removed" : "");
        seenRows.add(key);
        let row = rows.get(key);
        if (!row) {
          row = newRow(key, pool.name, b.backend);
          rows.set(key, row);
        }
        fillRow(row, b, sample(key, t, b.total), key);
        wanted.push(row.tr);
        if (card.tbody.children[i] !== row.tr) card.tbody.insertBefore(row.tr, card.tbody.children[i] || null);
      });
      while (card.tbody.children.length > wanted.length) card.tbody.lastChild.remove();
      fillTotals(card, pool, sample("pool:" + pool.name, t, pool.totals.total));
    }
    for (const [name, card] of poolCards) {
      if (!seenPools.has(name)) { card.section.remove(); poolCards.delete(name); }
    }
    for (const key of rows.keys()) {
      if (!seenRows.has(key)) { rows.delete(key); history.delete(key); }
    }
    drawEvents(s.events, t);
  }

  // ---- polling -----------------------------------------------------------------------------

  function status(text, error) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("error", !!error);
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }

  async function poll() {
    clearTimeout(timer);
    try {
      const r = await fetch("/stats", { cache: "no-store", headers: { Accept: "application/json" } });
      if (!r.ok) throw new Error(`${r.status} ${(await r.text()).trim()}`);
      draw(await r.json());
      failures = 0;
      status("Updated " + new Date().toLocaleTimeString());
    } catch (e) {
      failures++;
      status(`Cannot read /stats (${e.message}); retrying`, true);
    }
    const normal = document.visibilityState === "hidden" ? HIDDEN_POLL_MS : POLL_MS;
    schedule(failures ? Math.min(MAX_BACKOFF_MS, POLL_MS * 2 ** Math.min(failures, 5)) : normal);
  }

  // ---- actions -----------------------------------------------------------------------------

  function answer(text, error) {
    const a = $("answer");
    a.textContent = text;
    a.classList.toggle("error", !!error);
  }

  async function send(command) {
    if (token === "") {
      answer("Type the admin token first.", true);
      return;
    }
    answer(`Sending ${command}…`);
    try {
      // Same origin; X-LB-Admin is the header lb ctl sends, which a page of another origin
      // cannot send without a CORS preflight that the endpoint never approves.
      const r = await fetch("/command", {
        method: "POST",
        cache: "no-store",
        credentials: "omit",
        headers: {
          "Content-Type": "text/plain; charset=utf-8",
          "X-LB-Admin": "dashboard",
          Authorization: "Bearer " + token,
        },
        body: command,
      });
      const text = (await r.text()).trim();
      if (r.status === 401) answer("The admin token was not accepted: " + text, true);
      else answer(text || `${r.status}`, !r.ok);
    } catch (e) {
      answer(`${command} failed: ${e.message}`, true);
    }
    poll();
  }

  // ---- start -------------------------------------------------------------------------------

  window.addEventListener("error", (e) => status("Script error: " + e.message, true));
  $("host").textContent = location.host;
  $("actions-token").addEventListener("submit", (e) => e.preventDefault());
  $("token").addEventListener("input", (e) => {
    token = e.target.value.trim();
    for (const button of $("pools").querySelectorAll(".act button")) button.disabled = token === "";
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") poll();
  });
  poll();
})();
