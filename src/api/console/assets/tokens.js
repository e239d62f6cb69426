// The token tool (tokens.html). Server data goes into the page as text, never as HTML.
import { api, tokens, showError } from "/assets/common.js";
const form = document.getElementById("tok-form");
api("/v1/apps").then((r) => {
  const sel = document.getElementById("apps");
  sel.replaceChildren(...r.apps.map((a) => {
    const o = document.createElement("option");
    o.value = String(a.sdkappid);
    o.textContent = `${a.sdkappid} ${a.name}`;
    return o;
  }));
}).catch((e) => showError("error", e));
form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(form);
  try {
    const t = await tokens(f.get("sdkappid"), String(f.get("userid")).trim(), String(f.get("room")).trim(), Number(f.get("expire")));
    document.getElementById("usersig").textContent = t.usersig;
    document.getElementById("rtmp").textContent = `Server:     ${t.rtmp_server}\nStream Key: ${t.stream_key}`;
    document.getElementById("srt").textContent = t.srt_url ?? "(SRT is off on this gateway)";
    document.getElementById("whip").textContent = `Server:       ${t.whip_url}\nBearer Token: ${t.usersig}`;
    document.getElementById("ffmpeg").textContent = t.ffmpeg;
    document.getElementById("play").textContent = `${location.origin}${t.play_path}`;
    document.getElementById("share").textContent = `${location.origin}${t.share_path}`;
    document.getElementById("result").hidden = false;
    showError("error", null);
  } catch (e) { showError("error", e); }
});
document.getElementById("adm-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.setItem("roomgateAdminToken", new FormData(ev.target).get("token"));
});
