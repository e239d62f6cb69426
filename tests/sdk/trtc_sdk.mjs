// Drive roomgate's Cloud API with Tencent's official Node.js SDK (tencentcloud-sdk-nodejs-common's CommonClient,
// the generic client every product package is built on), unchanged except for the endpoint:
// StartStreamIngest -> DescribeStreamIngest -> UpdateStreamIngest -> StopStreamIngest -> DescribeStreamIngest,
// then the errors a backend sees (FailedOperation.TaskFinished, AuthFailure.SignatureFailure).
//
// Two things this SDK does differently from the Python one, both of which roomgate must accept: it puts the
// first DNS label of the endpoint in the credential scope as the service ("127" for 127.0.0.1:port), and it
// signs the host without the port.
//
// Environment: ROOMGATE_ENDPOINT (host:port), SECRET_ID, SECRET_KEY, SDKAPPID, ROOM, USERID, USERSIG,
// STREAM_URL, HOLD_SECONDS. Prints one JSON object with what happened; exits non-zero on an unexpected result.
import tencentcloud from "tencentcloud-sdk-nodejs-common";

const { CommonClient } = tencentcloud;
const env = process.env;

function client(secretKey) {
  return new CommonClient("trtc.tencentcloudapi.com", "2019-07-22", {
    credential: { secretId: env.SECRET_ID, secretKey },
    region: "ap-guangzhou",
    profile: { httpProfile: { endpoint: env.ROOMGATE_ENDPOINT, protocol: "http://", reqTimeout: 30 } },
  });
}

const code = async (p) => {
  try {
    await p;
    return "no error";
  } catch (e) {
    return e.code ?? String(e);
  }
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const c = client(env.SECRET_KEY);
const sdkappid = Number(env.SDKAPPID);
const out = {};
const start = await c.request("StartStreamIngest", {
  SdkAppId: sdkappid,
  RoomId: env.ROOM,
  RoomIdType: 0,
  UserId: env.USERID,
  UserSig: env.USERSIG,
  StreamUrl: env.STREAM_URL,
  RepeatNum: -1,
  Volume: 100,
});
out.TaskId = start.TaskId;
const ref = { SdkAppId: sdkappid, TaskId: start.TaskId };
out.StatusRunning = (await c.request("DescribeStreamIngest", ref)).Status;
out.UpdateStatus = (await c.request("UpdateStreamIngest", { ...ref, Volume: 50 })).Status;
await sleep(Number(env.HOLD_SECONDS ?? "3") * 1000);
await c.request("StopStreamIngest", ref);
const deadline = Date.now() + 10_000;
let status;
do {
  status = (await c.request("DescribeStreamIngest", ref)).Status;
  if (status !== "NotExist") await sleep(100);
} while (status !== "NotExist" && Date.now() < deadline);
out.StatusAfterStop = status;
// A second Stop a second later is a new request (signed anew), not a replay.
await sleep(1100);
out.SecondStop = await code(c.request("StopStreamIngest", ref));
out.WrongKey = await code(client("wrong-key").request("DescribeStreamIngest", ref));
console.log(JSON.stringify(out));
const ok =
  out.StatusRunning === "InProgress" &&
  out.StatusAfterStop === "NotExist" &&
  out.SecondStop === "FailedOperation.TaskFinished" &&
  out.WrongKey === "AuthFailure.SignatureFailure";
process.exit(ok ? 0 : 1);
