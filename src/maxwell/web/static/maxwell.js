// Maxwell's live page: polls the node's API and draws what it says.
//
// Rules:
// - Every URL is relative (the page works at / behind `ssh -L`, a socat bridge or a proxy).
// - Without a token the page reads only /metrics, which is public: the figures, the charts, the
//   agents' market figures and the cluster's prices. A token the user gives is kept in this
//   tab's sessionStorage and sent as `Authorization: Bearer` (never in a URL); with it the page
//   reads /agents (processes, users, how each ended), and for the admin /events and /status.
// - It asks only for what its token may read, so a working page makes no request that fails
//   (each failed request is an error in the browser's console).
// - Everything a client or an agent chose (names, ids, event details) is written with
//   textContent, never parsed as HTML.
"use strict";

(() => {
  const POLL_MS = 1000;
  const SLOW_EVERY = 5; // /status and the cluster: every fifth poll
  const WINDOW = 600; // samples kept for the charts: ten minutes at one a second
  const MAX_EVENTS_SHOWN = 300;
  const MAX_ENERGY_SERIES = 10; // the agents that used the most; the rest are summed as "others"
  const DISTRESS_BELOW_C = 5; // the daemon's default [gossip] distress_below_c
  const TOKEN_KEY = "maxwell.token";
  // Event details carry money as the ledger keeps it, integer µ$J: shown in $J. The same keys as
  // maxwell.node.eventtext.MONEY_KEYS (a test holds them equal).
  const MONEY_KEYS = new Set(["amount", "fund", "balance", "shortfall", "required", "bond",
    "clawback", "bounty", "fee"]);
  const PALETTE = ["#b45309", "#1d4ed8", "#047857", "#7c3aed", "#be123c", "#0e7490", "#4d7c0f",
    "#c2410c", "#6d28d9", "#0f766e", "#9ca3af"];

  const $ = (id) => document.getElementById(id);
  const page = {
    token: sessionStorage.getItem(TOKEN_KEY),
    role: null, // "admin", "agent" or "user" once a token is accepted
    metricsLocked: false, // /metrics needs the admin token on this node (public_metrics = false)
    polls: 0,
    lastSeq: null, // the last event shown; null until the log's end is found
    samples: [], // {t, spot, grid, temp, headroom, capacity, energy: Map(id -> J)}
    names: new Map(), // agent id -> name
    details: new Map(), // agent id -> the API's AgentInfo (with a token)
    charts: {},
    energyKey: "",
    energyOwn: [],
    lastMetrics: null,
    tickNote: "",
    // The banner shows the first of these that is set.
    failure: "", // the last poll's error
    locked: "", // /metrics needs a token
    notice: "", // what the last token action said
    lastError: "", // the node's last failed tick (/status)
  };

  // --- the wire ----------------------------------------------------------------------------

  function headers() {
    return page.token ? { Authorization: "Bearer " + page.token } : {};
  }

  async function get(path) {
    return fetch(path, { headers: headers(), cache: "no-store", credentials: "omit" });
  }

  async function getJson(path) {
    const response = await get(path);
    if (response.status === 401) {
      forgetToken("the node no longer knows that token");
      return null;
    }
    if (!response.ok) throw new Error(`${path}: ${response.status} ${await errorOf(response)}`);
    return response.json();
  }

  async function errorOf(response) {
    try {
      return (await response.json()).error || response.statusText;
    } catch {
      return response.statusText;
    }
  }

  // Prometheus text exposition format: `name{label="value",...} number`.
  function parseMetrics(text) {
    const samples = [];
    const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
    const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    for (const row of text.split("\n")) {
      if (!row || row.startsWith("#")) continue;
      const match = line.exec(row);
      if (!match) continue;
      const labels = {};
      for (const found of (match[2] || "").matchAll(label)) {
        labels[found[1]] = found[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
      }
      const raw = match[3];
      const value = raw === "+Inf" ? Infinity : raw === "-Inf" ? -Infinity : Number(raw);
      samples.push({ name: match[1], labels, value });
    }
    return samples;
  }

  function readMetrics(samples) {
    const one = (name) => samples.find((s) => s.name === name);
    const valueOf = (name) => (one(name) ? one(name).value : NaN);
    const agents = new Map();
    const agent = (s) => {
      const id = s.labels.agent;
      if (!agents.has(id)) agents.set(id, { id, name: s.labels.name || "" });
      return agents.get(id);
    };
    const fields = {
      maxwell_agent_balance_joule_tokens: "balance",
      maxwell_agent_bid_joule_tokens_per_joule: "bid",
      maxwell_agent_demand_cores: "demand",
      maxwell_agent_share_cores: "share",
      maxwell_agent_power_watts: "power",
      maxwell_agent_energy_joules_total: "energy",
    };
    const cluster = new Map();
    const nodeFields = {
      maxwell_cluster_node_price_joule_tokens_per_joule: "price",
      maxwell_cluster_node_headroom_celsius: "headroom",
      maxwell_cluster_node_free_cores: "free",
    };
    for (const s of samples) {
      if (fields[s.name] && s.labels.agent !== undefined) agent(s)[fields[s.name]] = s.value;
      if (s.name === "maxwell_agent_state" && s.value === 1) agent(s).state = s.labels.state;
      if (nodeFields[s.name]) {
        const node = cluster.get(s.labels.node) || { node: s.labels.node };
        node[nodeFields[s.name]] = s.value;
        cluster.set(s.labels.node, node);
      }
    }
    const temperature = one("maxwell_temperature_celsius");
    const info = one("maxwell_node_info");
    return {
      spot: valueOf("maxwell_spot_price_joule_tokens_per_joule"),
      grid: valueOf("maxwell_grid_price_joule_tokens_per_joule"),
      temp: temperature ? temperature.value : NaN,
      tempMeasured: temperature ? temperature.labels.measured === "true" : false,
      headroom: valueOf("maxwell_headroom_celsius"),
      capacity: valueOf("maxwell_capacity_cores"),
      power: valueOf("maxwell_node_power_watts"),
      ticks: valueOf("maxwell_ticks_total"),
      mechanism: info ? info.labels.mechanism : "?",
      cgroup: info ? info.labels.cgroup : "?",
      agents,
      gossip: samples.some((s) => s.name === "maxwell_gossip_distress_events_total"),
      distressEvents: valueOf("maxwell_gossip_distress_events_total"),
      cluster,
    };
  }

  // --- formatting ------------------------------------------------------------------------------

  function fmt(value, digits = 2) {
    return Number.isFinite(value) ? value.toFixed(digits) : "–";
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
  }

  function showBanner() {
    const text = page.failure || page.locked || page.notice || page.lastError;
    const banner = $("banner");
    banner.textContent = text;
    banner.hidden = !text;
  }

  // --- the figures and the charts --------------------------------------------------------------

  function showFigures(m) {
    $("fig-spot").textContent = fmt(m.spot, 4);
    $("fig-grid").textContent = fmt(m.grid, 4);
    $("fig-temp").textContent = fmt(m.temp, 1);
    $("fig-temp-unit").textContent = m.tempMeasured ? "°C, measured" : "°C, modelled";
    $("fig-headroom").textContent = fmt(m.headroom, 1);
    $("fig-capacity").textContent = fmt(m.capacity, 2);
    $("fig-power").textContent = fmt(m.power, 1);
    const all = [...m.agents.values()];
    const alive = all.filter((a) => a.state !== "dead" && a.state !== "exited").length;
    $("fig-alive").textContent = String(alive);
    $("fig-agents").textContent = `of ${all.length} known`;
    const ticks = Number.isFinite(m.ticks) ? `${m.ticks} ticks` : "";
    $("node-info").textContent = [`mechanism ${m.mechanism}`, `cgroup ${m.cgroup}`, ticks,
      page.tickNote || ""].filter(Boolean).join(" · ");
  }

  function record(m) {
    const energy = new Map();
    for (const a of m.agents.values()) {
      energy.set(a.id, a.energy || 0);
      page.names.set(a.id, a.name);
    }
    page.samples.push({ t: Date.now() / 1000, spot: m.spot, grid: m.grid, temp: m.temp,
      headroom: m.headroom, capacity: m.capacity, energy });
    if (page.samples.length > WINDOW) page.samples.shift();
  }

  function chartSize(element) {
    return { width: Math.max(element.clientWidth, 240), height: 220 };
  }

  function makeChart(key, element, series, axes, scales) {
    if (page.charts[key]) page.charts[key].destroy();
    const opts = { ...chartSize(element), series: [{}, ...series], axes, scales,
      legend: { live: true }, cursor: { drag: { x: false, y: false } } };
    const data = [[], ...series.map(() => [])];
    page.charts[key] = new uPlot(opts, data, element);
    return page.charts[key];
  }

  // A legend value: at the cursor, or the latest sample when the cursor is elsewhere.
  function legendValue(column, i, digits) {
    const at = i == null ? column.length - 1 : i;
    return at >= 0 && column[at] != null ? fmt(column[at], digits) : "–";
  }

  function line(label, color, scale, digits) {
    return { label, stroke: color, width: 2, scale, points: { show: false },
      value: (u, v, si, i) => legendValue(u.data[si], i, digits) };
  }

  function makeFixedCharts() {
    makeChart("price", $("chart-price"),
      [line("spot", PALETTE[0], "price", 4), line("grid", PALETTE[1], "price", 4)],
      [{ space: 80 }, { scale: "price", size: 60 }], { x: { time: true } });
    makeChart("heat", $("chart-heat"),
      [line("temperature °C", PALETTE[4], "c", 1), line("capacity cores", PALETTE[2], "cores", 2)],
      [{ space: 80 }, { scale: "c", size: 50 }, { scale: "cores", side: 1, size: 50, grid: { show: false } }],
      { x: { time: true }, cores: { range: (u, lo, hi) => [0, Math.max(hi, 1) * 1.1] } });
  }

  // The agents drawn: those that used the most energy by the last sample, and "others" summed.
  function energyGroups() {
    const last = page.samples[page.samples.length - 1];
    const ranked = [...last.energy.entries()].sort((a, b) => b[1] - a[1]).map(([id]) => id);
    const shown = ranked.slice(0, MAX_ENERGY_SERIES);
    const groups = shown.map((id) => ({ label: page.names.get(id) || id, ids: [id] }));
    if (ranked.length > shown.length) {
      groups.push({ label: `${ranked.length - shown.length} others`, ids: ranked.slice(shown.length) });
    }
    return groups;
  }

  function drawEnergy() {
    if (page.samples.length === 0) return;
    const groups = energyGroups();
    const own = groups.map((g) => page.samples.map((s) => g.ids.reduce((sum, id) => sum + (s.energy.get(id) || 0), 0)));
    // Stacked: series k is the sum of groups 0..k, drawn largest first so each fill shows its band.
    const stacked = own.map((_, k) => page.samples.map((_, i) => own.slice(0, k + 1).reduce((sum, g) => sum + g[i], 0)));
    const order = groups.map((_, k) => groups.length - 1 - k);
    const key = groups.map((g) => g.label + g.ids.join(",")).join("|");
    if (key !== page.energyKey || !page.charts.energy) {
      page.energyKey = key;
      const series = order.map((k) => ({
        label: groups[k].label, stroke: PALETTE[k % PALETTE.length], fill: PALETTE[k % PALETTE.length],
        width: 1, points: { show: false }, scale: "J",
        value: (u, v, s, i) => legendValue(page.energyOwn[k] || [], i, 1),
      }));
      makeChart("energy", $("chart-energy"), series, [{ space: 100 }, { scale: "J", size: 60 }],
        { x: { time: true }, J: { range: (u, lo, hi) => [0, Math.max(hi, 1) * 1.05] } });
    }
    page.energyOwn = own; // what the legend shows: each group's own energy, not the stack
    page.charts.energy.setData([page.samples.map((s) => s.t), ...order.map((k) => stacked[k])]);
  }

  function drawCharts() {
    const times = page.samples.map((s) => s.t);
    const column = (field) => page.samples.map((s) => (Number.isFinite(s[field]) ? s[field] : null));
    page.charts.price.setData([times, column("spot"), column("grid")]);
    page.charts.heat.setData([times, column("temp"), column("capacity")]);
    drawEnergy();
  }

  function resizeCharts() {
    const places = { price: "chart-price", heat: "chart-heat", energy: "chart-energy" };
    for (const [key, id] of Object.entries(places)) {
      if (page.charts[key]) page.charts[key].setSize(chartSize($(id)));
    }
  }

  // --- the agents --------------------------------------------------------------------------------

  function processText(detail) {
    if (!detail) return "";
    const parts = [];
    if (detail.pid != null) parts.push(`pid ${detail.pid}`);
    if (detail.user) parts.push(detail.user);
    if (detail.reason) parts.push(detail.reason);
    else if (detail.exit_code != null) parts.push(`exit ${detail.exit_code}`);
    return parts.join(" · ");
  }

  function showAgents(m) {
    const showEnded = $("show-ended").checked;
    const order = { running: 0, throttled: 1, frozen: 2, exited: 3, dead: 4 };
    const agents = [...m.agents.values()]
      .filter((a) => showEnded || (a.state !== "dead" && a.state !== "exited"))
      .sort((a, b) => (order[a.state] ?? 5) - (order[b.state] ?? 5) || a.name.localeCompare(b.name));
    const body = document.createElement("tbody");
    for (const a of agents) {
      const row = body.insertRow();
      row.dataset.agent = a.id;
      if (a.state === "dead" || a.state === "exited") row.className = "ended";
      cell(row, a.name);
      cell(row, a.id, "mono");
      cell(row, a.state || "?", `state state-${a.state}`);
      cell(row, fmt(a.balance, 6), "num");
      cell(row, fmt(a.bid, 4), "num");
      cell(row, `${fmt(a.share, 2)} / ${fmt(a.demand, 2)}`, "num");
      cell(row, fmt(a.power, 2), "num");
      cell(row, fmt(a.energy, 2), "num");
      cell(row, processText(page.details.get(a.id)));
    }
    $("agents").replaceChild(body, $("agents").tBodies[0]);
  }

  async function pollAgentDetails() {
    const body = await getJson("agents");
    if (!body) return;
    page.details = new Map(body.agents.map((a) => [a.id, a]));
    $("agents-note").textContent = "From /metrics and /agents.";
  }

  // --- the events ------------------------------------------------------------------------------

  async function anyEventAfter(seq) {
    const body = await getJson(`events?after=${seq}&limit=1`);
    return body !== null && body.events.length > 0;
  }

  // The log's last sequence number, by doubling then halving (a few dozen small requests once),
  // so a long log is not read from its start.
  async function lastSequence() {
    if (!(await anyEventAfter(0))) return 0;
    let low = 0;
    let high = 1;
    while (await anyEventAfter(high)) {
      low = high;
      high *= 2;
    }
    while (high - low > 1) {
      const middle = Math.floor((low + high) / 2);
      if (await anyEventAfter(middle)) low = middle;
      else high = middle;
    }
    return high;
  }

  function sentence(event) {
    const detail = event.detail || {};
    const parts = [];
    for (const [key, value] of Object.entries(detail)) {
      if (key === "agent" || key === "argv" || value === null || typeof value === "object") continue;
      const shown = MONEY_KEYS.has(key) && typeof value === "number" ? `${fmt(value / 1e6, 6)} $J` : String(value);
      parts.push(`${key} ${shown}`);
    }
    if (Array.isArray(detail.argv)) parts.push(`command ${detail.argv.join(" ")}`);
    return parts.join(", ");
  }

  function showEvent(event) {
    const item = document.createElement("li");
    item.dataset.seq = String(event.seq);
    const time = document.createElement("time");
    time.textContent = clock(event.at);
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = event.kind;
    const who = event.agent ? `${page.names.get(event.agent) || ""} ${event.agent}`.trim() + ": " : "";
    item.append(time, kind, document.createTextNode(who + sentence(event)));
    const list = $("events");
    list.insertBefore(item, list.firstChild);
    while (list.children.length > MAX_EVENTS_SHOWN) list.removeChild(list.lastChild);
  }

  async function pollEvents() {
    if (page.lastSeq === null) {
      const last = await lastSequence();
      page.lastSeq = Math.max(0, last - 50); // the last fifty, then everything as it happens
      $("events-note").textContent = "Newest first, as they happen.";
    }
    const body = await getJson(`events?after=${page.lastSeq}&limit=${MAX_EVENTS_SHOWN}`);
    if (!body) return;
    for (const event of body.events) {
      showEvent(event);
      page.lastSeq = event.seq;
    }
  }

  // --- the node's status and the cluster --------------------------------------------------------

  async function pollStatus() {
    const status = await getJson("status");
    if (!status) return;
    const tick = status.tick_ms_median == null ? "" :
      `a tick takes ${fmt(status.tick_ms_median, 1)} ms (p99 ${fmt(status.tick_ms_p99, 1)})`;
    const failures = status.tick_failures ? `${status.tick_failures} failed ticks` : "";
    page.tickNote = [tick, failures].filter(Boolean).join(" · ");
    page.lastError = status.last_error ? `The last failed tick: ${status.last_error}` : "";
  }

  async function pollCluster(m) {
    let members = null;
    if (page.role) {
      const body = await getJson("cluster/members");
      if (body) members = body.members;
    }
    const rows = members ? members.map((x) => ({ node: x.node, status: x.status, verified: x.verified,
      price: x.price, headroom: x.headroom_c, free: x.free_cores }))
      : [...m.cluster.values()].map((x) => ({ ...x, status: "", verified: true }));
    const body = document.createElement("tbody");
    for (const x of rows.sort((a, b) => a.node.localeCompare(b.node))) {
      const row = body.insertRow();
      row.dataset.node = x.node;
      cell(row, x.node, "mono");
      cell(row, x.status);
      cell(row, fmt(x.price ?? NaN, 4), "num");
      cell(row, fmt(x.headroom ?? NaN, 1), "num");
      cell(row, fmt(x.free ?? NaN, 2), "num");
      const state = !x.verified ? "unverified" : x.headroom < DISTRESS_BELOW_C ? "distress" : "ok";
      cell(row, state, `state state-${state}`);
    }
    $("cluster").replaceChild(body, $("cluster").tBodies[0]);
    $("cluster-note").textContent = `${rows.length} nodes; distress events received: ` +
      `${fmt(m.distressEvents, 0)}. Distress: headroom under ${DISTRESS_BELOW_C} °C.`;
  }

  // --- the loop ----------------------------------------------------------------------------------

  async function pollMetrics() {
    if (page.metricsLocked && !page.token) return null;
    const response = await get("metrics");
    if (response.status === 401 || response.status === 403) {
      page.metricsLocked = true;
      page.locked = "This node's /metrics needs the admin token: enter it above.";
      return null;
    }
    if (!response.ok) throw new Error(`metrics: ${response.status} ${await errorOf(response)}`);
    return readMetrics(parseMetrics(await response.text()));
  }

  async function poll() {
    const slow = page.polls % SLOW_EVERY === 0;
    page.polls += 1;
    try {
      const m = await pollMetrics();
      if (page.role && page.token) await pollAgentDetails();
      if (page.role === "admin") {
        await pollEvents();
        if (slow) await pollStatus();
      }
      if (m) {
        page.lastMetrics = m;
        record(m);
        showFigures(m);
        showAgents(m);
        drawCharts();
        $("cluster-section").hidden = !m.gossip;
        if (m.gossip && slow) await pollCluster(m);
      }
      page.failure = "";
    } catch (error) {
      page.failure = `The node did not answer: ${error.message}`;
    } finally {
      showBanner();
      setTimeout(poll, POLL_MS);
    }
  }

  // --- the token ---------------------------------------------------------------------------------

  async function useToken(token) {
    const response = await fetch("whoami", {
      headers: { Authorization: "Bearer " + token }, cache: "no-store", credentials: "omit",
    });
    if (!response.ok) {
      page.notice = response.status === 401 ? "The node does not know that token." :
        `whoami: ${response.status} ${await errorOf(response)}`;
      showBanner();
      return false;
    }
    const principal = await response.json();
    page.token = token;
    page.role = principal.role;
    page.metricsLocked = false;
    page.locked = "";
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-form").hidden = true;
    $("who").hidden = false;
    $("who").textContent = principal.agent ? `agent ${principal.agent}` : principal.role;
    $("forget").hidden = false;
    if (page.role !== "admin") $("events-note").textContent = "The event log needs the admin token.";
    page.notice = "";
    showBanner();
    return true;
  }

  function forgetToken(why) {
    sessionStorage.removeItem(TOKEN_KEY);
    page.token = null;
    page.role = null;
    page.lastSeq = null;
    page.details = new Map();
    page.tickNote = "";
    page.lastError = "";
    $("events").replaceChildren();
    $("events-note").textContent = "The event log needs the admin token.";
    $("agents-note").textContent = "From /metrics. The admin token adds each agent's process, user and end.";
    $("token-form").hidden = false;
    $("who").hidden = true;
    $("forget").hidden = true;
    page.notice = why || "";
    showBanner();
  }

  async function start() {
    makeFixedCharts();
    window.addEventListener("resize", resizeCharts);
    $("token-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const token = $("token-input").value.trim();
      $("token-input").value = "";
      if (token) await useToken(token);
    });
    $("forget").addEventListener("click", () => forgetToken(""));
    $("show-ended").addEventListener("change", () => {
      const last = page.lastMetrics;
      if (last) showAgents(last);
    });
    const stored = page.token;
    page.token = null;
    if (stored && !(await useToken(stored))) sessionStorage.removeItem(TOKEN_KEY);
    poll();
  }

  window.addEventListener("DOMContentLoaded", start);
})();
