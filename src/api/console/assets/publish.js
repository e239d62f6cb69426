import { param, tokens, exchange, showError } from "/assets/common.js";

const form = document.getElementById("pub-form");
const status = (t) => { document.getElementById("status").textContent = t; };
let session = null;

for (const k of ["sdkappid", "room", "userid", "token"]) if (param(k)) form.elements[k].value = param(k);

async function stop() {
  if (!session) return;
  session.stream.getTracks().forEach((t) => t.stop());
  session.pc.close();
  if (session.location) await fetch(session.location, { method: "DELETE" }).catch(() => {});
  session = null;
  document.getElementById("start").disabled = false;
  document.getElementById("stop").disabled = true;
  status("Stopped.");
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  await stop();
  const f = new FormData(form);
  const sdkappid = String(f.get("sdkappid")).trim(), room = String(f.get("room")).trim(), userid = String(f.get("userid")).trim();
  try {
    status("Opening the device…");
    const stream = f.get("source") === "screen"
      ? await navigator.mediaDevices.getDisplayMedia({ video: true, audio: true })
      : await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: true });
    document.getElementById("preview").srcObject = stream;
    const pc = new RTCPeerConnection();
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    session = { pc, stream, location: null };
    const token = String(f.get("token") || "").trim() || (await tokens(sdkappid, userid, room)).usersig;
    const url = new URL(`/v2/pub/${encodeURIComponent(sdkappid)}/${encodeURIComponent(room)}`, location.href);
    url.searchParams.set("SessionID", userid);
    status("Connecting…");
    session.location = (await exchange(url.toString(), pc, token)).location;
    pc.onconnectionstatechange = () => status(`Publishing as ${userid} in ${room}: ${pc.connectionState}`);
    status(`Publishing as ${userid} in ${room}`);
    document.body.dataset.publishing = "1";
    document.getElementById("start").disabled = true;
    document.getElementById("stop").disabled = false;
    document.getElementById("watch").href = `/play?sdkappid=${sdkappid}&room=${encodeURIComponent(room)}&anchor=${encodeURIComponent(userid)}`;
    showError("error", null);
  } catch (e) {
    showError("error", e);
    status("Not publishing.");
    await stop();
  }
});

document.getElementById("stop").addEventListener("click", stop);
if (param("autostart")) form.requestSubmit();
