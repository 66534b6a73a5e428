// streamrec dashboard: polls the dashboard's own JSON endpoints and draws them. Read-only; no external requests.
// Every value from the server is written with textContent (never as HTML): dead letters hold arbitrary bytes.
"use strict";

(() => {
  const REFRESH_MS = 2000;
  const CHART_HEIGHT = 190;
  const PALETTE = ["#2f6fed", "#e8743b", "#1a8f4c", "#c9372c", "#8e44ad", "#16a2b8", "#b8860b", "#d63384", "#6c757d", "#20c997"];
  const charts = {};
  const state = { overview: null, deadLetters: null, catalogue: null, user: null, errors: 0 };
  window.streamrec = { charts, state };

  const num = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const num1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  const num3 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });
  const fmt = (v, f = num) => (v === null || v === undefined || Number.isNaN(v) ? "–" : f.format(v));
  const when = (ts) => (ts ? new Date(ts * 1000).toLocaleTimeString() : "–");
  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fillRows(tbody, rows) {
    tbody.replaceChildren(...rows.map((cells) => el("tr", null, ...cells.map((c) => (c instanceof Node ? c : el("td", { text: c === null || c === undefined ? "–" : String(c) }))))));
  }
  const td = (text, cls) => el("td", { text: text === null || text === undefined ? "–" : String(text), class: cls || "" });

  // --- charts -----------------------------------------------------------------------------------------------
  function countPoints(data) {
    let n = 0;
    for (let i = 1; i < data.length; i++) for (const v of data[i]) if (v !== null && v !== undefined) n++;
    return n;
  }

  function draw(id, labels, data, extra) {
    const target = $(id);
    if (typeof uPlot === "undefined" || !target) return;
    const key = labels.join("\u0000");
    const width = Math.max(target.clientWidth, 240);
    let chart = charts[id];
    if (chart && chart._key !== key) {
      chart.destroy();
      chart = null;
    }
    if (!chart) {
      const series = [{}].concat(labels.map((label, i) => Object.assign({
        label, stroke: PALETTE[i % PALETTE.length], width: 1.5, points: { show: false },
      }, (extra && extra.series) || {})));
      const opts = Object.assign({ width, height: CHART_HEIGHT, series, legend: { live: false } }, (extra && extra.opts) || {});
      chart = new uPlot(opts, data, target);
      chart._key = key;
      charts[id] = chart;
    } else {
      chart.setData(data);
    }
    target.dataset.points = String(countPoints(data));
  }

  // spanGaps: join the points across polls without a value (quality comes with /stats, read less often).
  function timeChart(id, t, named, unit, spanGaps) {
    const labels = Object.keys(named);
    const data = [t].concat(labels.map((l) => named[l]));
    draw(id, labels, data, { opts: { axes: [{}, { size: 56, label: unit || "" }] }, series: { spanGaps: !!spanGaps } });
  }

  function latencyBars(hist) {
    const short = (le) => (Number(le) >= 1000 ? `${Number(le) / 1000}s` : le);
    const labels = hist.le.map((le) => (le === "+Inf" ? "more" : "≤" + short(le)));
    const xs = labels.map((_, i) => i);
    const target = $("chart-latency-hist");
    const key = "latency:" + labels.join(",");
    if (charts["chart-latency-hist"] && charts["chart-latency-hist"]._key !== key) {
      charts["chart-latency-hist"].destroy();
      delete charts["chart-latency-hist"];
    }
    if (!charts["chart-latency-hist"] && typeof uPlot !== "undefined" && xs.length) {
      const chart = new uPlot({
        width: Math.max(target.clientWidth, 240),
        height: CHART_HEIGHT,
        legend: { show: false },
        scales: { x: { time: false, range: () => [-0.5, xs.length - 0.5] } },
        axes: [
          { splits: () => xs, values: (u, splits) => splits.map((i) => labels[i] || ""), size: 36 },
          { size: 56, label: "events" },
        ],
        series: [{}, { label: "events", fill: "rgba(47,111,237,0.55)", stroke: "#2f6fed", paths: uPlot.paths.bars({ size: [0.8, 64] }), points: { show: false } }],
      }, [xs, hist.counts], target);
      chart._key = key;
      charts["chart-latency-hist"] = chart;
    } else if (charts["chart-latency-hist"]) {
      charts["chart-latency-hist"].setData([xs, hist.counts]);
    }
    target.dataset.points = String(hist.counts.filter((c) => c > 0).length);
    target.dataset.events = String(hist.events || 0);
  }

  window.addEventListener("resize", () => {
    for (const [id, chart] of Object.entries(charts)) chart.setSize({ width: Math.max($(id).clientWidth, 240), height: CHART_HEIGHT });
  });

  // --- sections -----------------------------------------------------------------------------------------------
  function shortUrl(url) {
    return url.replace(/^https?:\/\//, "");
  }

  function renderOverview(o) {
    const t = o.totals;
    $("kpi-events-per-s").textContent = fmt(t.events_per_s, num1);
    $("kpi-events").textContent = fmt(t.events);
    $("kpi-lag").textContent = fmt(t.lag);
    $("kpi-latency").textContent = o.latency.p50 === null ? "–" : `${fmt(o.latency.p50, num1)} / ${fmt(o.latency.p99, num1)} ms`;
    $("kpi-recommendations").textContent = fmt(t.recommendations);
    $("kpi-dead-letters").textContent = fmt(t.dead_letters);
    $("kpi-items").textContent = fmt(t.items_indexed);
    $("kpi-users").textContent = fmt(t.users);
    $("kpi-steps").textContent = fmt(t.model_steps);
    $("kpi-workers").textContent = `${t.workers_up} / ${t.workers}`;

    const s = o.series;
    const throughput = {};
    for (const [url, ys] of Object.entries(s.events_per_s)) throughput[shortUrl(url)] = ys;
    throughput["published to events"] = s.published_per_s;
    timeChart("chart-throughput", s.t, throughput, "events/s");

    const lag = {};
    for (const [url, ys] of Object.entries(s.lag)) lag[shortUrl(url)] = ys;
    timeChart("chart-lag", s.t, lag, "events");
    const lagRows = [];
    for (const w of o.workers) for (const [p, v] of Object.entries(w.lag)) lagRows.push([td(shortUrl(w.url)), td(p), td(fmt(v), "num")]);
    fillRows($("lag-table").tBodies[0], lagRows);

    $("latency-window").textContent = `Events per latency bucket (ms), ${o.latency.window}: ${fmt(o.latency.events)} events.`;
    latencyBars(o.latency);
    timeChart("chart-latency-q", s.t, { p50: s.p50, p99: s.p99 }, "ms");

    const q = o.quality;
    $("quality-waiting").hidden = q.available;
    $("chart-quality").hidden = !q.available;
    $("quality-k").textContent = q.k ? `k = ${q.k}` + (q.overall ? ` · since start: Recall ${fmt(q.overall.recall, num3)}, NDCG ${fmt(q.overall.ndcg, num3)} over ${fmt(q.overall.scored)} events` : "") : "";
    $("chart-quality").dataset.state = q.available ? "live" : "waiting";
    if (q.available) timeChart("chart-quality", q.t, { [`Recall@${q.k}`]: q.recall, [`NDCG@${q.k}`]: q.ndcg }, "", true);

    const w = o.weights;
    $("weights-source").textContent = w.source === "stats"
      ? "The fusion ranker's learned θ per feature, from the workers' /stats."
      : w.source === "snapshots"
        ? "The fusion ranker's learned θ per feature, from the model-snapshots topic (each worker's view of the one model)."
        : "The fusion ranker's learned θ per feature: waiting for a first snapshot.";
    if (w.features.length) timeChart("chart-weights", w.t, w.values, "θ");

    $("workers-discovery").textContent = o.discovery === "list"
      ? "Workers from STREAMREC_DASHBOARD_WORKERS."
      : "Workers discovered from model-snapshots keys (a worker shows up after its first snapshot).";
    fillRows($("workers").tBodies[0], o.workers.map((wk) => [
      el("td", { title: wk.worker_id || "", text: shortUrl(wk.url) }),
      el("td", { class: wk.up ? "up" : "down", title: wk.error || "", text: wk.up ? "up" : "down" }),
      td(fmt(wk.events), "num"), td(fmt(wk.events_per_s, num1), "num"), td(fmt(wk.lag_total), "num"),
      td(wk.assigned_partitions.join(", ")), td(fmt(wk.users), "num"), td(wk.model_version),
    ]));
    fillRows($("topics").tBodies[0], o.topics.map((tp) => [td(tp.name), td(fmt(tp.partitions), "num"), td(fmt(tp.end_offsets), "num")]));
  }

  function renderDeadLetters(d) {
    fillRows($("dl-reasons").tBodies[0], d.by_reason.map((r) => [td(r.reason), td(fmt(r.count), "num")]));
    $("dl-recent").replaceChildren(...d.recent.map((m) => el("li", null,
      el("span", { class: "meta", text: `${when(m.ts)} · ${m.source_topic}` + (m.partition !== null && m.partition !== undefined ? ` [${m.partition}@${m.offset}]` : "") + " · " }),
      el("span", { class: "reason", text: m.reason }),
      el("br"),
      el("code", { text: m.value === null ? "(no value)" : m.value }),
    )));
    $("dl-recent").dataset.count = String(d.recent.length);
  }

  function renderCatalogue(c) {
    const indexed = Object.values(c.items_indexed).filter((v) => v !== null);
    $("cat-indexed").textContent = indexed.length ? fmt(Math.max(...indexed)) : "–";
    $("cat-known").textContent = fmt(c.embeddings_read);
    timeChart("chart-encoder", c.encoder_rate.t, { "items/s": c.encoder_rate.per_s }, "items/s");
    fillRows($("cat-newest").tBodies[0], c.newest.map((it) => [
      el("td", { title: it.item_id, text: it.title || it.item_id }), td(it.category), td(when(it.embedded_at)),
    ]));
  }

  // --- user lookup ----------------------------------------------------------------------------------------------
  function whyBars(contributions) {
    const entries = Object.entries(contributions || {}).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
    const top = Math.max(1e-9, ...entries.map(([, v]) => Math.abs(v)));
    const box = el("div", { class: "why" });
    for (const [feature, v] of entries) {
      const bar = el("div", { class: v < 0 ? "bar neg" : "bar" });
      bar.style.width = `${Math.round((100 * Math.abs(v)) / top)}%`;
      box.append(el("span", { text: feature }), el("div", null, bar), el("span", { class: "num", text: num3.format(v) }));
    }
    return box;
  }

  function renderUser(u) {
    const out = $("lookup-result");
    const parts = [];
    const rec = u.recommendation;
    const explain = u.explain || {};
    const why = {};
    for (const it of explain.items || []) if (it && it.item_id) why[it.item_id] = it.contributions;
    if (!rec) {
      parts.push(el("p", { class: "note", text: `No recommendations for ${u.user_id} yet.` }));
    } else {
      parts.push(el("p", { class: "hint", text: `${rec.kind} list for ${u.user_id}${rec.query ? ` (search “${rec.query}”)` : ""} · model ${rec.model_version} · generated ${when(rec.generated_at)} · reflects events up to ${when(rec.event_ts)}` + (u.worker ? ` · held by ${shortUrl(u.worker)}, partition ${u.partition}` : "") }));
      const rows = rec.items.map((it, i) => {
        const whyCell = el("td");
        if (why[it.item_id]) whyCell.append(el("details", null, el("summary", { text: "why this item" }), whyBars(why[it.item_id])));
        return el("tr", { "data-item": it.item_id },
          td(i + 1, "num"),
          el("td", { title: it.item_id }, el("span", { text: it.title || it.item_id }), it.title ? el("span", { class: "meta mono", text: ` ${it.item_id}` }) : null),
          td(it.category), td(num3.format(it.score), "num"), td((it.reasons || []).join("; ")), whyCell);
      });
      const table = el("table", { class: "compact", id: "user-list" },
        el("thead", null, el("tr", null, ...["#", "item", "category", "score", "reasons", ""].map((h) => el("th", { text: h })))),
        el("tbody", null, ...rows));
      parts.push(table);
    }
    const side = el("div");
    if (u.explain_status === "ok") {
      side.append(el("h3", { text: "Top categories" }),
        el("ol", null, ...(explain.top_categories || []).map((c) => el("li", { text: `${c.category} (${num3.format(c.weight)})` }))),
        el("h3", { text: "Recent items" }),
        el("ol", null, ...(explain.recent_items || []).map((it) => el("li", { title: it.item_id, text: `${it.title || it.item_id}` + (it.type ? ` — ${it.type}` : "") + (it.ts ? ` at ${when(it.ts)}` : "") }))));
    } else {
      side.append(el("p", { class: "note", "data-explain": u.explain_status, text: `Top categories, recent items and “why this item”: ${u.explain_message}.` }));
    }
    out.replaceChildren(el("div", { class: "user-cols" }, el("div", null, ...parts), side));
    out.dataset.state = rec ? "list" : "none";
    out.dataset.items = String(rec ? rec.items.length : 0);
  }

  async function lookup(event) {
    event.preventDefault();
    const id = $("lookup-user").value.trim();
    if (!id) return;
    const out = $("lookup-result");
    out.dataset.state = "loading";
    out.replaceChildren(el("p", { class: "hint", text: `Reading ${id}'s latest list…` }));
    try {
      const resp = await fetch(`/api/user?id=${encodeURIComponent(id)}`, { cache: "no-store" });
      const body = await resp.json();
      if (!resp.ok) throw new Error(body.error || resp.statusText);
      state.user = body;
      renderUser(body);
    } catch (err) {
      out.dataset.state = "error";
      out.replaceChildren(el("p", { class: "error", text: `Lookup failed: ${err.message}` }));
    }
  }

  // --- refresh loop ------------------------------------------------------------------------------------------------
  async function getJson(path) {
    const resp = await fetch(path, { cache: "no-store" });
    if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
    return resp.json();
  }

  async function refresh() {
    const status = $("status");
    try {
      const [o, d, c] = await Promise.all([getJson("/api/overview"), getJson("/api/dead-letters"), getJson("/api/catalogue")]);
      state.overview = o;
      state.deadLetters = d;
      state.catalogue = c;
      renderOverview(o);
      renderDeadLetters(d);
      renderCatalogue(c);
      status.dataset.state = o.broker_error ? "error" : "ok";
      status.textContent = `updated ${new Date().toLocaleTimeString()}` + (o.broker_error ? ` · broker: ${o.broker_error}` : "");
      status.dataset.updates = String(Number(status.dataset.updates || 0) + 1);
    } catch (err) {
      state.errors += 1;
      status.dataset.state = "error";
      status.textContent = `dashboard unreachable: ${err.message}`;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("lookup").addEventListener("submit", lookup);
    refresh();
    setInterval(refresh, REFRESH_MS);
  });
})();
