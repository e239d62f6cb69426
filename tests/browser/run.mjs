// Drives Debian's chromium with playwright-core through one console scenario and prints JSON lines the Rust test
// (tests/browser.rs) reads. usage: node run.mjs <scenario> <base-url> <artifacts-dir> [key=value ...]
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [scenario, base, artifacts, ...rest] = process.argv.slice(2);
const args = Object.fromEntries(rest.map((kv) => kv.split(/=(.*)/s).slice(0, 2)));
mkdirSync(artifacts, { recursive: true });
const say = (obj) => console.log(JSON.stringify(obj));

// resolve=<host> 127.0.0.1: a host name that is not loopback (as a remote machine's would be) reaching the test
// gateway; spki=<base64 SHA-256>: the one certificate key trusted besides the system's (a development certificate).
const extra = [];
if (args.resolve) extra.push(`--host-resolver-rules=MAP ${args.resolve}`);
if (args.spki) extra.push(`--ignore-certificate-errors-spki-list=${args.spki}`);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required", ...extra],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const shot = (name) => page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });
page.on("pageerror", (e) => say({ pageerror: String(e) }));

try {
  if (scenario === "play") {
    await page.goto(`${base}/play?sdkappid=${args.sdkappid}&room=${args.room}&anchor=${args.anchor}`);
    await page.waitForFunction(() => Number(document.body.dataset.framesDecoded || 0) > 30, null, { timeout: 30000 });
    const size = await page.evaluate(() => { const v = document.getElementById("video"); return { width: v.videoWidth, height: v.videoHeight, frames: Number(document.body.dataset.framesDecoded) }; });
    await page.waitForTimeout(1500); // let the stats fill in for the screenshot
    await shot("player");
    // Two more seconds of audio, then what the decoder made of it.
    await page.waitForTimeout(2000);
    const audio = await page.evaluate(() => ({ audio_packets: Number(document.body.dataset.audioPackets || 0), audio_samples: Number(document.body.dataset.audioSamples || 0), audio_concealed: Number(document.body.dataset.audioConcealed || 0) }));
    say({ ok: true, ...size, ...audio, latency: await page.textContent("#s-latency"), bitrate: await page.textContent("#s-bitrate") });
  } else if (scenario === "share") {
    // A link from the token tool, opened by someone who is not admin: it must play with its own viewer token.
    await page.goto(`${base}${args.path}`);
    await page.waitForFunction(() => Number(document.body.dataset.framesDecoded || 0) > 30, null, { timeout: 30000 });
    const size = await page.evaluate(() => { const v = document.getElementById("video"); return { width: v.videoWidth, height: v.videoHeight, frames: Number(document.body.dataset.framesDecoded) }; });
    await page.waitForTimeout(1000); // let the stats fill in for the screenshot
    await shot(args.shot ?? "share-link");
    say({ ok: true, ...size });
  } else if (scenario === "reconnect") {
    await page.goto(`${base}/play?sdkappid=${args.sdkappid}&room=${args.room}&anchor=${args.anchor}`);
    await page.waitForFunction(() => Number(document.body.dataset.framesDecoded || 0) > 30, null, { timeout: 30000 });
    say({ ok: true, playing: true });
    // The test stops the anchor and starts it again: the page must come back by itself.
    await page.waitForFunction(() => Number(document.getElementById("s-reconnects").textContent) > 0, null, { timeout: 60000 });
    await page.waitForFunction(() => Number(document.body.dataset.framesDecoded || 0) > 30 && document.getElementById("video").videoWidth > 0, null, { timeout: 60000 });
    await shot("player-reconnected");
    say({ ok: true, recovered: true, reconnects: Number(await page.textContent("#s-reconnects")), status: await page.textContent("#status") });
  } else if (scenario === "phone") {
    // Every page at a phone's width: nothing wider than the screen, every form control labelled.
    await page.setViewportSize({ width: 390, height: 844 });
    const report = {};
    for (const path of ["/", "/play", "/publish", "/tokens"]) {
      await page.goto(`${base}${path}`);
      await page.waitForTimeout(700);
      report[path] = await page.evaluate(() => ({
        overflow: document.documentElement.scrollWidth - window.innerWidth,
        unlabelled: [...document.querySelectorAll("input, select")].filter((el) => !el.closest("label") && !el.getAttribute("aria-label")).length,
        // Actions (Play, Stop) stay on screen without scrolling sideways.
        hiddenActions: [...document.querySelectorAll("td a[href^='/play'], td button")].filter((el) => { const r = el.getBoundingClientRect(); return r.width === 0 || r.right > window.innerWidth; }).length,
      }));
      await shot(`phone${path === "/" ? "-dashboard" : path.replace("/", "-")}`);
    }
    say({ ok: true, report });
  } else if (scenario === "publish") {
    await page.goto(`${base}/publish?sdkappid=${args.sdkappid}&room=${args.room}&userid=${args.userid}&autostart=1`);
    await page.waitForFunction(() => document.body.dataset.publishing === "1", null, { timeout: 30000 });
    await shot("publish");
    say({ ok: true, publishing: true });
    await page.waitForTimeout(Number(args.hold || 15) * 1000);
  } else if (scenario === "dashboard") {
    await page.goto(`${base}/`);
    const row = `tr[data-anchor="${args.anchor}"][data-room="${args.room}"]`;
    await page.waitForSelector(row, { timeout: 30000 });
    await page.waitForTimeout(1200);
    await shot("dashboard");
    say({ ok: true, listed: true, row: (await page.textContent(row)).replace(/\s+/g, " ").trim() });
    await page.waitForSelector(row, { state: "detached", timeout: 30000 });
    say({ ok: true, removed: true });
  } else if (scenario === "tokens") {
    await page.goto(`${base}/tokens`);
    await page.waitForSelector(`#apps option[value="${args.sdkappid}"]`, { state: "attached" });
    await page.getByLabel("User id").fill(args.userid);
    await page.getByLabel("Room").fill(args.room);
    await page.getByRole("button", { name: "Make tokens" }).click();
    await page.waitForSelector("#result:not([hidden])");
    await shot("tokens");
    say({ ok: true, ffmpeg: await page.textContent("#ffmpeg"), usersig: await page.textContent("#usersig") });
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
} catch (e) {
  await shot(`${scenario}-failure`).catch(() => {});
  say({ ok: false, error: String(e) });
  process.exitCode = 1;
} finally {
  await browser.close();
}
