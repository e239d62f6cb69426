import { api, adminHeaders, showError, fmtDuration, esc } from "/assets/common.js";

const EVENTS = { 101: "room created", 102: "room dismissed", 103: "anchor entered", 104: "anchor left", 201: "video start", 202: "video stop", 203: "audio start", 204: "audio stop", 701: "ingest start", 702: "ingest stop" };
let appsLoaded = false;

function videoCell(v) {
  if (!v) return "—";
  const size = v.width ? `${v.width}×${v.height}` : "";
  return `${esc(v.source_codec || v.codec)} ${size}`;
}

function renderAnchors(rooms) {
  const rows = [];
  for (const r of rooms) {
    for (const a of r.anchors) {
      const play = `/play?sdkappid=${r.sdkappid}&room=${encodeURIComponent(r.room_id)}&anchor=${encodeURIComponent(a.userid)}`;
      const kbps = Math.round((a.video?.bitrate_kbps || 0) + (a.audio?.bitrate_kbps || 0));
      rows.push(`<tr data-anchor="${esc(a.userid)}" data-room="${esc(r.room_id)}">
        <td>${r.sdkappid}</td><td>${esc(r.room_id)}${r.room_id_type === "number" ? ' <span class="badge">numeric</span>' : ""}</td>
        <td>${esc(a.userid)}</td><td><span class="badge">${esc(a.source)}</span></td>
        <td>${videoCell(a.video)}</td><td>${a.video ? a.video.fps.toFixed(1) : "—"}</td><td>${kbps}</td>
        <td>${a.audio ? esc(a.audio.source_codec || "opus") : "—"}</td><td>${a.viewers ?? 0}</td>
        <td>${fmtDuration(Date.now() - a.started_at_ms)}</td>
        <td><a href="${play}">Play<span class="sr-only"> ${esc(a.userid)}</span></a></td></tr>`);
    }
  }
  document.getElementById("anchors").innerHTML = rows.join("") || '<tr><td colspan="11" class="muted">No anchors. Push RTMP or WHIP, or start a pull task below.</td></tr>';
}

function renderTasks(tasks) {
  const rows = tasks.map((t) => {
    const dur = t.Source?.DurationMs;
    const progress = dur ? `<progress max="${dur}" value="${t.PositionMs % dur}" aria-label="position"></progress> ${(t.PositionMs / 1000).toFixed(0)} / ${(dur / 1000).toFixed(0)} s` : `${(t.PositionMs / 1000).toFixed(0)} s`;
    const loops = t.RepeatNum < 0 ? "∞" : t.RepeatNum;
    return `<tr data-task="${esc(t.TaskId)}"><td title="${esc(t.TaskId)}"><code>${esc(t.TaskId.slice(0, 10))}…</code></td><td>${esc(t.RoomId)}</td><td>${esc(t.UserId)}${t.Node ? ` <span class="muted" title="the node that runs it">@${esc(t.Node)}</span>` : ""}</td>
      <td><span class="badge">${esc(t.State)}</span> ${esc(t.Reason)}</td><td>${progress} · loop ${t.LoopsDone + 1}/${loops}</td>
      <td class="muted">${esc(t.Source ? `${t.Source.VideoCodec ?? "-"}/${t.Source.AudioCodec ?? "-"}${t.Source.VideoPassthrough ? " passthrough" : ""}` : "")}</td>
      <td>${t.Restarts}</td><td><button class="secondary" data-stop="${esc(t.TaskId)}" data-app="${t.SdkAppId}">Stop</button></td></tr>`;
  });
  document.getElementById("tasks").innerHTML = rows.join("") || '<tr><td colspan="8" class="muted">No running tasks.</td></tr>';
}

function renderCallbacks(list) {
  const rows = list.map((c) => `<tr><td>${c.id}</td><td>${c.sdkappid}</td><td>${c.event_type} ${EVENTS[c.event_type] ?? ""}</td>
    <td class="${c.status === "delivered" ? "ok" : c.status === "failed" ? "bad" : ""}">${esc(c.status)}</td><td>${c.attempts}</td>
    <td class="muted">${esc(c.last_error)}</td><td>${c.status === "failed" ? `<button class="secondary" data-retry="${c.id}">Re-send</button>` : ""}</td></tr>`);
  document.getElementById("callbacks").innerHTML = rows.join("") || '<tr><td colspan="7" class="muted">No callbacks (configure callback_url on an app).</td></tr>';
}

function renderApps(apps) {
  document.getElementById("apps").innerHTML = apps.map((a) => `<li><strong>${a.sdkappid}</strong> ${esc(a.name)}
    ${a.public_playback ? '<span class="badge">public playback</span>' : ""} ${a.require_private_map_key ? '<span class="badge">PrivateMapKey</span>' : ""}
    ${a.callbacks ? '<span class="badge">callbacks</span>' : ""}</li>`).join("");
  const sel = document.getElementById("task-app");
  sel.innerHTML = apps.map((a) => `<option value="${a.sdkappid}">${a.sdkappid} ${esc(a.name)}</option>`).join("");
}

async function refresh() {
  try {
    // Rooms of private apps, task failure reasons and callbacks are shown to admin only; the rest to everyone.
    const admin = { headers: adminHeaders() };
    const [rooms, tasks, callbacks] = await Promise.all([
      api("/v1/rooms", admin), api("/v1/tasks", admin),
      api("/v1/callbacks?limit=15", admin).catch(() => ({ callbacks: [] })),
    ]);
    if (!appsLoaded) { renderApps((await api("/v1/apps")).apps); appsLoaded = true; }
    renderAnchors(rooms.rooms);
    renderTasks(tasks.tasks);
    renderCallbacks(callbacks.callbacks);
    showError("error", null);
    document.getElementById("live").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    showError("error", e);
  }
}

document.getElementById("task-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    await api("/v1/tasks", {
      method: "POST",
      headers: adminHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({ sdkappid: Number(f.get("sdkappid")), stream_url: f.get("url"), room: f.get("room"), userid: f.get("userid"), repeat: Number(f.get("repeat")) }),
    });
    showError("task-error", null);
    refresh();
  } catch (e) { showError("task-error", e); }
});

document.addEventListener("click", async (ev) => {
  const stop = ev.target.closest("[data-stop]");
  const retry = ev.target.closest("[data-retry]");
  try {
    if (stop) await api(`/v1/tasks/${encodeURIComponent(stop.dataset.stop)}`, { method: "DELETE", headers: adminHeaders({ "Content-Type": "application/json" }) });
    if (retry) await api(`/v1/callbacks/${retry.dataset.retry}/retry`, { method: "POST", headers: adminHeaders({ "Content-Type": "application/json" }), body: "{}" });
    if (stop || retry) refresh();
  } catch (e) { showError("error", e); }
});

refresh();
setInterval(refresh, 1000);
