import { param, tokens, exchange, showError } from "/assets/common.js";

const form = document.getElementById("play-form");
const video = document.getElementById("video");
const status = (t) => { document.getElementById("status").textContent = t; };
const set = (id, v) => { document.getElementById(id).textContent = v; };
let session = null; // {pc, location, timer}
let reconnects = 0;
let wanted = null;
let iceConfig = null; // relay mode: the TURN servers learnt from the gateway

for (const k of ["sdkappid", "room", "anchor", "token"]) form.elements[k].value = param(k);

async function viewerToken(sdkappid, viewer, room, given) {
  if (given) return given;
  try { return (await tokens(sdkappid, viewer, room)).usersig; } catch { return ""; /* public playback apps need none */ }
}

async function stop() {
  if (!session) return;
  clearInterval(session.timer);
  session.pc.close();
  if (session.location) fetch(session.location, { method: "DELETE" }).catch(() => {});
  session = null;
}

async function start() {
  await stop();
  const { sdkappid, room, anchor, token } = wanted;
  // A shared link names its viewer (the token is that viewer's UserSig); otherwise any id will do.
  const viewer = param("viewer") || `web_${Math.random().toString(36).slice(2, 10)}`;
  status("Connecting…");
  // `relay=1`: only through the TURN servers the gateway announces (as on a network that allows nothing else).
  // Their credentials come with an authenticated answer, so a first exchange learns them.
  const relay = param("relay") === "1";
  if (relay && !iceConfig) {
    try {
      const probe = new RTCPeerConnection();
      probe.addTransceiver("video", { direction: "recvonly" });
      probe.addTransceiver("audio", { direction: "recvonly" });
      const url0 = new URL(`/v2/sub/${encodeURIComponent(sdkappid)}/${encodeURIComponent(room)}`, location.href);
      url0.searchParams.set("SessionID", viewer);
      if (anchor) url0.searchParams.set("anchor", anchor);
      if (param("privatemapkey")) url0.searchParams.set("privatemapkey", param("privatemapkey"));
      const r = await exchange(url0.toString(), probe, await viewerToken(sdkappid, viewer, room, token));
      probe.close();
      fetch(r.location, { method: "DELETE" }).catch(() => {});
      iceConfig = { iceServers: r.iceServers, iceTransportPolicy: "relay" };
    } catch (e) {
      showError("error", e);
    }
  }
  const pc = new RTCPeerConnection(relay && iceConfig ? iceConfig : undefined);
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (e) => { stream.addTrack(e.track); video.srcObject = stream; };
  const url = new URL(`/v2/sub/${encodeURIComponent(sdkappid)}/${encodeURIComponent(room)}`, location.href);
  url.searchParams.set("SessionID", viewer);
  if (anchor) url.searchParams.set("anchor", anchor);
  if (param("privatemapkey")) url.searchParams.set("privatemapkey", param("privatemapkey"));
  const s = { pc, location: null, timer: null, last: { frames: 0, bytes: 0, t: performance.now() }, stalled: 0 };
  session = s;
  try {
    const tok = await viewerToken(sdkappid, viewer, room, token);
    s.location = (await exchange(url.toString(), pc, tok)).location;
    showError("error", null);
    status(`Playing ${anchor || "the room"} of ${room}`);
  } catch (e) {
    showError("error", e);
    status("Not playing; retrying in 2 s…");
    scheduleReconnect();
    return;
  }
  pc.onconnectionstatechange = () => {
    if (["failed", "closed", "disconnected"].includes(pc.connectionState) && session === s) {
      status(`Connection ${pc.connectionState}; reconnecting…`);
      scheduleReconnect();
    }
  };
  s.timer = setInterval(() => stats(s), 1000);
}

function scheduleReconnect() {
  const s = session;
  setTimeout(() => {
    if (session === s && wanted) {
      reconnects += 1;
      set("s-reconnects", reconnects);
      start();
    }
  }, 2000);
}

async function stats(s) {
  const report = await s.pc.getStats();
  let v = null, a = null, rtt = null;
  report.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") v = r;
    if (r.type === "inbound-rtp" && r.kind === "audio") a = r;
    if (r.type === "candidate-pair" && r.nominated && r.currentRoundTripTime !== undefined) rtt = r.currentRoundTripTime;
  });
  if (!v) return;
  const now = performance.now();
  const dt = (now - s.last.t) / 1000;
  const frames = v.framesDecoded || 0;
  const bytes = (v.bytesReceived || 0) + (a?.bytesReceived || 0);
  set("s-size", v.frameWidth ? `${v.frameWidth}×${v.frameHeight}` : "—");
  set("s-frames", frames);
  set("s-fps", ((frames - s.last.frames) / dt).toFixed(1));
  set("s-bitrate", `${Math.round(((bytes - s.last.bytes) * 8) / dt / 1000)} kbit/s`);
  const lost = (v.packetsLost || 0) + (a?.packetsLost || 0);
  const got = (v.packetsReceived || 0) + (a?.packetsReceived || 0);
  set("s-loss", got ? `${((100 * lost) / (lost + got)).toFixed(2)} %` : "—");
  if (v.jitterBufferEmittedCount) {
    const jb = (v.jitterBufferDelay / v.jitterBufferEmittedCount) * 1000;
    set("s-latency", `${Math.round(jb + (rtt ? (rtt * 1000) / 2 : 0))} ms`);
  }
  // No new frames for 5 s: the anchor went away; reconnect until it comes back.
  s.stalled = frames === s.last.frames ? s.stalled + 1 : 0;
  s.last = { frames, bytes, t: now };
  document.body.dataset.framesDecoded = frames;
  // Audio as the player's decoder saw it (read by the browser tests): packets in, samples out, how many made up.
  document.body.dataset.audioPackets = a?.packetsReceived || 0;
  document.body.dataset.audioSamples = a?.totalSamplesReceived || 0;
  document.body.dataset.audioConcealed = a?.concealedSamples || 0;
  if (s.stalled >= 5 && session === s) {
    status("No video for 5 s; reconnecting…");
    s.stalled = -1000;
    scheduleReconnect();
  }
}

form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = new FormData(form);
  wanted = Object.fromEntries(["sdkappid", "room", "anchor", "token"].map((k) => [k, String(f.get(k) || "").trim()]));
  const share = new URL(location.href);
  for (const k of ["sdkappid", "room", "anchor", "token"]) {
    if (wanted[k]) share.searchParams.set(k, wanted[k]); else share.searchParams.delete(k);
  }
  history.replaceState(null, "", share);
  start();
});

if (param("sdkappid") && param("room")) form.requestSubmit();
