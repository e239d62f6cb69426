#!/usr/bin/env node
// A pull task with Tencent's official Node.js SDK, unchanged except for the endpoint: StartStreamIngest,
// DescribeStreamIngest until InProgress and playing, hold, StopStreamIngest, and a last Describe (NotExist).
// Each response is printed as `<Action>: <JSON>`, as examples/start_pull_task.py does.
//
// It uses the SDK's CommonClient (package tencentcloud-sdk-nodejs-common), the generic client every product
// package of the SDK is built on; with tencentcloud-sdk-nodejs-trtc the calls are the same methods
// (client.StartStreamIngest(...)) and the same `profile.httpProfile.endpoint` change.
//
// The robot's UserSig must be made by your backend with the app's secret key (`cargo run --example usersig --
// ...` prints one, or Tencent's `tls-sig-api-v2` package).
//
// Run (against `make run`):
//   npm install tencentcloud-sdk-nodejs-common
//   node examples/start_pull_task.js --endpoint 127.0.0.1:8080 --secret-id AKID... --secret-key ... \
//       --sdkappid 1400000001 --room room1 --userid robot1 --usersig <UserSig of robot1> \
//       --url https://example.com/show.mp4 --hold-seconds 10
// SECRET_ID / SECRET_KEY / USERSIG may come from the environment instead. Exits 1 with the API's error code and
// message when a call fails or the task never plays.
"use strict";

const { parseArgs } = require("node:util");
const { CommonClient } = require("tencentcloud-sdk-nodejs-common");

const { values: a } = parseArgs({
  options: {
    endpoint: { type: "string", default: "127.0.0.1:8080" }, // the gateway's host:port
    protocol: { type: "string", default: "http" }, // or https behind a TLS front
    "secret-id": { type: "string", default: process.env.SECRET_ID },
    "secret-key": { type: "string", default: process.env.SECRET_KEY },
    sdkappid: { type: "string" },
    room: { type: "string" }, // string room the robot enters
    userid: { type: "string", default: "robot1" },
    usersig: { type: "string", default: process.env.USERSIG }, // UserSig of --userid
    url: { type: "string" }, // source: http(s) file or HLS, or rtmp
    "hold-seconds": { type: "string", default: "5" },
    "timeout-seconds": { type: "string", default: "30" },
  },
});
for (const name of ["secret-id", "secret-key", "usersig", "sdkappid", "room", "url"]) {
  if (!a[name]) fail(`--${name} is required`);
}

function fail(message) {
  console.error(`error: ${message}`);
  process.exit(1);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The SDK's defaults (TC3-HMAC-SHA256, POST JSON); only the endpoint and protocol change.
const client = new CommonClient("trtc.tencentcloudapi.com", "2019-07-22", {
  credential: { secretId: a["secret-id"], secretKey: a["secret-key"] },
  region: "ap-guangzhou",
  profile: { httpProfile: { endpoint: a.endpoint, protocol: `${a.protocol}://`, reqTimeout: 30 } },
});

async function call(action, params, print = true) {
  const reply = await client.request(action, params);
  if (print) console.log(`${action}: ${JSON.stringify(reply)}`);
  return reply;
}

async function main() {
  const sdkappid = Number(a.sdkappid);
  const started = await call("StartStreamIngest", {
    SdkAppId: sdkappid,
    RoomId: a.room,
    RoomIdType: 0, // 0: string room, 1: numeric room
    UserId: a.userid,
    UserSig: a.usersig,
    StreamUrl: a.url,
    RepeatNum: -1, // loop until stopped
  });
  const task = { SdkAppId: sdkappid, TaskId: started.TaskId };

  // TRTC's Status says InProgress as soon as the task exists; roomgate's extra `State` says when it plays.
  let deadline = Date.now() + Number(a["timeout-seconds"]) * 1000;
  let last = "";
  for (;;) {
    const d = await call("DescribeStreamIngest", task, false);
    const now = `${d.Status}/${d.State}`;
    if (now !== last) console.log(`DescribeStreamIngest: ${JSON.stringify(d)}`);
    last = now;
    if (d.Status === "InProgress" && d.State === "playing") break;
    if (d.Status === "NotExist" || d.State === "failed" || d.State === "finished") {
      fail(`the task ended before playing: ${d.Reason ?? "no reason given"}`);
    }
    if (Date.now() > deadline) fail(`the task is not playing after ${a["timeout-seconds"]} s`);
    await sleep(200);
  }
  console.error(`robot ${a.userid} is playing ${a.url} in room ${a.room}; stopping in ${a["hold-seconds"]} s`);
  await sleep(Number(a["hold-seconds"]) * 1000);

  await call("StopStreamIngest", task);
  // The answer means the stop is recorded; the robot leaves the room a moment later, and until it has Describe
  // may still say InProgress. Poll until NotExist and print that last reply.
  deadline = Date.now() + 10_000;
  for (;;) {
    const d = await call("DescribeStreamIngest", task, false);
    if (d.Status === "NotExist") {
      console.log(`DescribeStreamIngest: ${JSON.stringify(d)}`);
      break;
    }
    if (Date.now() > deadline) fail(`the task still runs 10 s after Stop: ${JSON.stringify(d)}`);
    await sleep(100);
  }
}

main().catch((e) => fail(e.code ? `${e.code}: ${e.message}` : String(e)));
