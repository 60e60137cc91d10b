// The county page: everything comes from the API with the token kept in this tab's sessionStorage.
"use strict";

const TIERS = ["emergency", "county", "township", "village"];
const TIER_COLOURS = { emergency: "#b3261e", county: "#d9480f", township: "#e8a317", village: "#7a8793" };
const REFRESH_MS = 3000;
let labels = {};

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
};
const label = (key, fallback) => labels[key] || fallback || key;
const tierBadge = (tier) => el("span", { class: `badge tier-${tier}` }, label(`tier.${tier}`, tier));
const when = (iso) => (iso ? iso.replace("T", " ").slice(0, 16) : "");

async function api(path, options = {}) {
  const token = sessionStorage.getItem("county-token");
  const r = await fetch(path, { ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${token}`, "Content-Type": "application/json" } });
  if (r.status === 401) { showLogin("令牌不正确"); throw new Error("unauthorized"); }
  return [r.status, await r.json()];
}

function showLogin(msg) {
  sessionStorage.removeItem("county-token");
  $("#app").hidden = true; $("#logout").hidden = true; $("#login").hidden = false;
  $("#login-error").textContent = msg || "";
}

function ago(seconds) {
  if (seconds == null) return "从未";
  if (seconds < 90) return `${Math.round(seconds)} 秒前`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} 分钟前`;
  return `${Math.round(seconds / 3600)} 小时前`;
}

const OFFLINE_REASONS = { last_will: "连接中断（遗嘱消息）", status_overdue: "状态上报超时", reported_offline: "网关已停止", no_status: "尚未上报" };

async function refreshClinics() {
  const [, body] = await api("/api/clinics");
  const tbody = $("#clinics tbody");
  tbody.replaceChildren(...body.clinics.map((c) => {
    const state = c.online ? el("span", { class: "badge online" }, "在线")
      : el("span", {}, el("span", { class: "badge offline" }, "离线"), " ", el("span", { class: "muted" }, OFFLINE_REASONS[c.offline_reason] || ""));
    const backlog = c.backlog ? `告警 ${c.backlog.alerts} · 数据 ${c.backlog.telemetry}` : "—";
    const active = TIERS.filter((t) => c.active_alerts[t]).map((t) => el("span", {}, tierBadge(t), ` ${c.active_alerts[t]} `));
    return el("tr", { class: c.online ? "" : "offline-row" }, el("td", {}, c.clinic), el("td", {}, state),
      el("td", {}, ago(c.status_age_s)), el("td", {}, backlog), el("td", {}, ...(active.length ? active : ["—"])));
  }));
}

async function acknowledge(alertId, button) {
  button.disabled = true;
  const by = localStorage.getItem("county-who") || "county";
  const [status, body] = await api(`/api/alerts/${encodeURIComponent(alertId)}/ack`, { method: "POST", body: JSON.stringify({ by }) });
  button.textContent = status === 202 ? "已发送" : `失败：${body.error || status}`;
}

function alertRow(a, withAction) {
  const acked = (a.county_acks || []).length > 0;
  const action = withAction && a.state === "firing"
    ? el("button", { onclick: (ev) => acknowledge(a.alert_id, ev.target) }, acked ? "再次确认" : "确认")
    : (acked ? el("span", { class: "muted" }, `县中心已确认：${a.county_acks[a.county_acks.length - 1].by}`) : "");
  return el("tr", { "data-alert-id": a.alert_id, "data-tier": a.tier, "data-clinic": a.clinic }, el("td", {}, tierBadge(a.tier)), el("td", {}, a.clinic),
    el("td", {}, el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); showPatient(a.patient_id, ""); } }, a.patient_id)),
    el("td", {}, label(`cond.${a.condition}`, a.condition)), el("td", {}, label(`sev.${a.severity}`, a.severity)),
    el("td", { class: `state-${a.state}` }, label(`state.${a.state}`, a.state) + (a.acknowledged_by ? `（${a.acknowledged_by}）` : "")),
    el("td", {}, when(a.opened_at)), el("td", {}, action));
}

async function refreshAlerts() {
  const [, body] = await api("/api/alerts?state=active");
  $("#alerts tbody").replaceChildren(...body.alerts.map((a) => alertRow(a, true)));
  $("#alerts-none").hidden = body.alerts.length > 0;
}

async function showPatient(patient, clinic) {
  $("#p-id").value = patient; $("#p-clinic").value = clinic;
  const since = new Date(Date.now() - 30 * 86400e3).toISOString();
  const q = `patient=${encodeURIComponent(patient)}${clinic ? `&clinic=${encodeURIComponent(clinic)}` : ""}`;
  const [, r] = await api(`/api/readings?${q}&since=${encodeURIComponent(since)}`);
  const [, a] = await api(`/api/alerts?${q}&state=all`);
  const value = (x) => x.kind === "blood_pressure" ? `${x.systolic}/${x.diastolic} mmHg` : x.kind === "glucose" ? `${x.mmol_l ?? x.range} mmol/L`
    : x.kind === "spo2" ? `${x.spo2}%` : x.kind === "ecg_summary" ? `${x.hr_bpm} 次/分 ${x.rhythm}` : x.kind === "heart_rate" ? `${x.bpm} 次/分` : "";
  const rows = r.readings.slice(-50).reverse().map((x) => el("tr", {}, el("td", {}, when(x.ts)), el("td", {}, x.clinic),
    el("td", {}, x.device_id), el("td", {}, x.kind), el("td", {}, value(x))));
  $("#patient").replaceChildren(
    el("h3", {}, `${patient}：近 30 天读数 ${r.readings.length} 条，告警 ${a.alerts.length} 条`),
    el("table", {}, el("thead", {}, el("tr", {}, ...["时间", "诊所", "设备", "类型", "数值"].map((h) => el("th", {}, h)))), el("tbody", {}, ...rows)),
    el("table", {}, el("tbody", {}, ...a.alerts.map((x) => alertRow(x, false)))));
}

function barChart(groups, keys, colours, width = 520, barH = 18, names = null) {
  // groups: [[name, {key: value}]]; stacked horizontal bars, plain SVG; names: what each key is (default: tiers)
  const keyName = (k) => (names ? names[k] : label(`tier.${k}`, k));
  const max = Math.max(1, ...groups.map(([, v]) => keys.reduce((s, k) => s + (v[k] || 0), 0)));
  const left = 110, h = groups.length * (barH + 6) + 10;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", width); svg.setAttribute("height", h); svg.setAttribute("role", "img");
  groups.forEach(([name, v], i) => {
    const y = 5 + i * (barH + 6);
    const t = document.createElementNS(svg.namespaceURI, "text");
    t.setAttribute("x", 0); t.setAttribute("y", y + barH - 5); t.textContent = name; svg.append(t);
    let x = left;
    for (const k of keys) {
      const w = ((v[k] || 0) / max) * (width - left - 40);
      if (w > 0) {
        const r = document.createElementNS(svg.namespaceURI, "rect");
        r.setAttribute("x", x); r.setAttribute("y", y); r.setAttribute("width", w); r.setAttribute("height", barH);
        r.setAttribute("fill", colours[k]); const tip = document.createElementNS(svg.namespaceURI, "title");
        tip.textContent = `${keyName(k)}: ${v[k]}`; r.append(tip); svg.append(r); x += w;
      }
    }
    const total = document.createElementNS(svg.namespaceURI, "text");
    total.setAttribute("x", x + 4); total.setAttribute("y", y + barH - 5);
    total.textContent = keys.reduce((s, k) => s + (v[k] || 0), 0); svg.append(total);
  });
  return svg;
}

async function refreshWeekly() {
  const [, w] = await api("/api/weekly?days=7");
  $("#week-range").textContent = `（近 ${w.days} 天）`;
  const byClinic = {};
  for (const row of w.alerts_by_clinic_tier) (byClinic[row.clinic] ||= {})[row.tier] = row.alerts;
  $("#chart-alerts").replaceChildren(barChart(Object.entries(byClinic), TIERS, TIER_COLOURS));
  $("#legend").replaceChildren(...TIERS.map((t) => el("span", {}, el("i", { style: `background:${TIER_COLOURS[t]}` }), label(`tier.${t}`, t))));
  const tta = w.time_to_ack_by_tier;
  const minutes = Object.fromEntries(TIERS.filter((t) => tta[t]).map((t) => [t, { [t]: tta[t].median_s / 60 }]));
  $("#chart-ack").replaceChildren(barChart(TIERS.filter((t) => tta[t]).map((t) => [label(`tier.${t}`, t), minutes[t]]), TIERS, TIER_COLOURS, 360));
  $("#ack-table tbody").replaceChildren(...TIERS.filter((t) => tta[t]).map((t) => el("tr", {}, el("td", {}, tierBadge(t)),
    el("td", {}, tta[t].acknowledged), el("td", {}, `${(tta[t].median_s / 60).toFixed(1)} 分`), el("td", {}, `${(tta[t].p90_s / 60).toFixed(1)} 分`))));
  renderPlaces(w);
}

const UNLABELLED = "未标注村";
const AF_KEYS = ["alert", "strip", "both"];
const AF_NAMES = { alert: "房颤告警", strip: "筛查心电图为房颤", both: "两者都有" };
const AF_COLOURS = { alert: "#d9480f", strip: "#6f42c1", both: "#8e3b5c" };
const percent = (rate) => (rate == null ? "—" : `${(100 * rate).toFixed(rate === 1 ? 0 : 1)}%`);

function rateChart(rows, nameOf, width = 420, barH = 18) {
  // One bar per place: the share of its assessed patients whose home BP is controlled (0-100 %).
  const left = 110, right = 90, h = Math.max(1, rows.length) * (barH + 6) + 10;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", width); svg.setAttribute("height", h); svg.setAttribute("role", "img");
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(svg.namespaceURI, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    svg.append(e); return e;
  };
  rows.forEach((row, i) => {
    const y = 5 + i * (barH + 6), full = width - left - right;
    add("text", { x: 0, y: y + barH - 5 }, nameOf(row));
    add("rect", { x: left, y, width: full, height: barH, fill: "#e4e8ec" });
    if (row.bp_control_rate != null) {
      const bar = add("rect", { x: left, y, width: row.bp_control_rate * full, height: barH, fill: "#2f8f46", "data-place": nameOf(row), "data-rate": row.bp_control_rate });
      const tip = document.createElementNS(svg.namespaceURI, "title");
      tip.textContent = `${row.bp_controlled}/${row.bp_patients} 控制达标`; bar.append(tip);
    }
    add("text", { x: left + full + 4, y: y + barH - 5 },
      row.bp_patients ? `${row.bp_controlled}/${row.bp_patients}（${percent(row.bp_control_rate)}）` : "无足够读数");
  });
  return svg;
}

function afGroups(rows, nameOf) {
  return rows.map((r) => {
    const both = r.af_by_alert + r.af_by_strip - r.af_found;
    return [nameOf(r), { alert: r.af_by_alert - both, strip: r.af_by_strip - both, both }];
  });
}

function renderPlaces(w) {
  const bp = w.bp_control;
  $("#bp-rule").textContent = `血压控制：近 ${w.days} 天家庭血压均值 < ${bp.systolic_below_mmhg}/${bp.diastolic_below_mmhg} mmHg`
    + `（至少 ${bp.min_readings} 次有效测量；体动、袖带松、姿势不当的读数不计）。发现房颤：房颤告警，或筛查心电图判读为房颤的患者。`;
  const village = (r) => r.village || UNLABELLED, clinic = (r) => r.clinic;
  $("#chart-bp-village").replaceChildren(rateChart(w.by_village, village));
  $("#chart-bp-clinic").replaceChildren(rateChart(w.by_clinic, clinic));
  $("#chart-af-village").replaceChildren(barChart(afGroups(w.by_village, village), AF_KEYS, AF_COLOURS, 420, 18, AF_NAMES));
  $("#chart-af-clinic").replaceChildren(barChart(afGroups(w.by_clinic, clinic), AF_KEYS, AF_COLOURS, 420, 18, AF_NAMES));
  $("#af-legend").replaceChildren(...AF_KEYS.map((k) => el("span", {}, el("i", { style: `background:${AF_COLOURS[k]}` }), AF_NAMES[k])));
  $("#village-table tbody").replaceChildren(...w.by_village.map((r) => el("tr", { "data-village": village(r) },
    el("td", {}, village(r)), el("td", {}, r.clinics.join(" ")), el("td", {}, r.patients ?? "—"), el("td", {}, r.bp_patients),
    el("td", {}, r.bp_controlled), el("td", {}, percent(r.bp_control_rate)), el("td", {}, r.bp_too_few_readings),
    el("td", {}, `${r.af_found}（${r.af_by_alert} / ${r.af_by_strip}）`))));
}

async function downloadReport() {
  const token = sessionStorage.getItem("county-token");
  const r = await fetch("/api/weekly?days=7&format=csv", { headers: { Authorization: `Bearer ${token}` } });
  const url = URL.createObjectURL(await r.blob());
  const a = el("a", { href: url, download: `county-weekly-${new Date().toISOString().slice(0, 10)}.csv` });
  document.body.append(a); a.click(); a.remove(); URL.revokeObjectURL(url);
}

async function refresh() {
  try {
    await Promise.all([refreshAlerts(), refreshClinics()]);
    $("#live").textContent = `实时 · ${new Date().toLocaleTimeString("zh-CN")}`;
  } catch (e) {
    if (e.message !== "unauthorized") $("#live").textContent = "连接中断，正在重试…";
  }
}

async function start() {
  $("#login").hidden = true; $("#app").hidden = false; $("#logout").hidden = false;
  const [, h] = [0, await (await fetch("/healthz")).json()];
  $("#county").textContent = h.county || "";
  await refresh();
  await refreshWeekly();
  setInterval(refresh, REFRESH_MS);
  setInterval(refreshWeekly, 60000);
}

document.addEventListener("DOMContentLoaded", async () => {
  labels = await (await fetch("/labels.json")).json();
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("county-token", $("#token").value);
    localStorage.setItem("county-who", $("#who").value);
    const r = await fetch("/api/clinics", { headers: { Authorization: `Bearer ${$("#token").value}` } });
    if (r.status === 200) start(); else showLogin("令牌不正确");
  });
  $("#patient-form").addEventListener("submit", (ev) => { ev.preventDefault(); showPatient($("#p-id").value.trim(), $("#p-clinic").value.trim()); });
  $("#logout").addEventListener("click", () => showLogin(""));
  $("#download").addEventListener("click", downloadReport);
  if (sessionStorage.getItem("county-token")) start(); else showLogin("");
});
