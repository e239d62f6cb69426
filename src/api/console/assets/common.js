// roomgate console helpers (plain ES module, no build step).

/** Query-string parameter. */
export function param(name, fallback = "") {
  return new URLSearchParams(location.search).get(name) ?? fallback;
}

/** Headers with the admin token the user saved (Tokens page), when any. */
export function adminHeaders(extra = {}) {
  const t = localStorage.getItem("roomgateAdminToken");
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

/** fetch + JSON, turning the server's JSON errors into Error("code: message"). */
export async function api(path, opts = {}) {
  const resp = await fetch(path, opts);
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!resp.ok) {
    const e = body?.error;
    throw new Error(e ? `${e.message} (${e.code})` : `HTTP ${resp.status}: ${text.slice(0, 200)}`);
  }
  return body;
}

/** Ask the server for tokens (needs the admin credential; from loopback by default). */
export function tokens(sdkappid, userid, room, expire = 86400) {
  return api("/v1/tokens", {
    method: "POST",
    headers: adminHeaders({ "Content-Type": "application/json" }),
    body: JSON.stringify({ sdkappid: Number(sdkappid), userid, room, expire }),
  });
}

/** Show `err` (or clear with null) in the element with id `id`, announced to screen readers. */
export function showError(id, err) {
  const el = document.getElementById(id);
  if (el) el.textContent = err ? String(err.message ?? err) : "";
}

export function fmtDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${r}s` : `${r}s`;
}

export function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

/** Wait for ICE gathering (bounded) so the offer carries candidates (WHIP/WHEP servers may not trickle). */
export async function gathered(pc, ms = 1500) {
  if (pc.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(t); resolve(); }
    });
  });
}

/** POST an SDP offer (WHIP or WHEP); returns {answer, location}. */
export async function exchange(url, pc, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const headers = { "Content-Type": "application/sdp" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const resp = await fetch(url, { method: "POST", headers, body: pc.localDescription.sdp });
  const text = await resp.text();
  if (resp.status !== 201 && resp.status !== 200) {
    let msg = text;
    try { const e = JSON.parse(text).error; msg = `${e.message} (${e.code})`; } catch { /* plain text */ }
    throw new Error(`HTTP ${resp.status}: ${msg}`);
  }
  await pc.setRemoteDescription({ type: "answer", sdp: text });
  // After a cluster's 307 the session lives on the node that answered: resolve against that URL.
  const base = resp.url || url;
  return { location: new URL(resp.headers.get("Location"), base).toString(), iceServers: iceServers(resp.headers.get("Link")) };
}

/// The ICE servers of a WHIP/WHEP answer's `Link: <url>; rel="ice-server"; username=..; credential=..` headers.
export function iceServers(link) {
  const out = [];
  for (const part of (link || "").split(/,(?=\s*<)/)) {
    const m = part.match(/<([^>]+)>\s*;(.*)/);
    if (!m || !/rel="ice-server"/.test(m[2])) continue;
    const attr = (k) => (m[2].match(new RegExp(`${k}="([^"]*)"`)) || [])[1];
    const s = { urls: m[1] };
    if (attr("username") !== undefined) { s.username = attr("username"); s.credential = attr("credential"); }
    out.push(s);
  }
  return out;
}
