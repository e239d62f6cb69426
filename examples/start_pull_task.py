#!/usr/bin/env python3
"""A pull task with Tencent's official Python SDK (tencentcloud-sdk-python-trtc), unchanged except for the
endpoint: StartStreamIngest, DescribeStreamIngest until InProgress and playing, hold, StopStreamIngest, and a last
Describe (NotExist). Each response is printed as `<Action>: <JSON>` (the SDK's own to_json_string()).

The robot's UserSig must be made by your backend with the app's secret key (`cargo run --example usersig -- ...`
prints one, or Tencent's `tls-sig-api-v2` package).

Run (against `make run`):
    pip install tencentcloud-sdk-python-trtc
    python3 examples/start_pull_task.py --endpoint 127.0.0.1:8080 --secret-id AKID... --secret-key ... \
        --sdkappid 1400000001 --room room1 --userid robot1 --usersig <UserSig of robot1> \
        --url https://example.com/show.mp4 --hold-seconds 10
SECRET_ID / SECRET_KEY / USERSIG may come from the environment instead. Exits 1 with the API's error code and
message when a call fails or the task never plays.
"""
import argparse
import json
import os
import sys
import time

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.trtc.v20190722 import models, trtc_client


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", default="127.0.0.1:8080", help="the gateway's host:port")
    p.add_argument("--protocol", default="http", help="http, or https behind a TLS front")
    p.add_argument("--secret-id", default=os.environ.get("SECRET_ID"))
    p.add_argument("--secret-key", default=os.environ.get("SECRET_KEY"))
    p.add_argument("--sdkappid", type=int, required=True)
    p.add_argument("--room", required=True, help="string room the robot enters")
    p.add_argument("--userid", default="robot1")
    p.add_argument("--usersig", default=os.environ.get("USERSIG"), help="UserSig of --userid")
    p.add_argument("--url", required=True, help="source: http(s) file or HLS, or rtmp")
    p.add_argument("--hold-seconds", type=float, default=5.0)
    p.add_argument("--timeout-seconds", type=float, default=30.0)
    a = p.parse_args()
    for name in ("secret_id", "secret_key", "usersig"):
        if not getattr(a, name):
            p.error(f"--{name.replace('_', '-')} (or ${name.upper()}) is required")

    # The SDK's defaults (TC3-HMAC-SHA256, POST JSON); only the endpoint and protocol change.
    http = HttpProfile(endpoint=a.endpoint, protocol=a.protocol, reqTimeout=30)
    client = trtc_client.TrtcClient(
        credential.Credential(a.secret_id, a.secret_key), "ap-guangzhou", ClientProfile(httpProfile=http)
    )

    start = models.StartStreamIngestRequest()
    start.SdkAppId = a.sdkappid
    start.RoomId = a.room
    start.RoomIdType = 0  # 0: string room, 1: numeric room
    start.UserId = a.userid
    start.UserSig = a.usersig
    start.StreamUrl = a.url
    start.RepeatNum = -1  # loop until stopped
    started = client.StartStreamIngest(start)
    print("StartStreamIngest:", started.to_json_string(), flush=True)

    describe = models.DescribeStreamIngestRequest()
    describe.SdkAppId = a.sdkappid
    describe.TaskId = started.TaskId
    # The SDK's model knows only TRTC's fields (Status); roomgate's extra `State` ("playing"...) is in the raw
    # reply, which call_json returns.
    deadline = time.time() + a.timeout_seconds
    last = None
    while True:
        raw = client.call_json("DescribeStreamIngest", describe._serialize())["Response"]
        now = (raw.get("Status"), raw.get("State"))
        if now != last:
            print("DescribeStreamIngest:", json.dumps(raw), flush=True)
            last = now
        if now == ("InProgress", "playing"):
            break
        if raw.get("Status") == "NotExist" or raw.get("State") in ("failed", "finished"):
            sys.exit(f"error: the task ended before playing: {raw.get('Reason', 'no reason given')}")
        if time.time() > deadline:
            sys.exit(f"error: the task is not playing after {a.timeout_seconds} s")
        time.sleep(0.2)
    print(f"robot {a.userid} is playing {a.url} in room {a.room}; stopping in {a.hold_seconds} s",
          file=sys.stderr, flush=True)
    time.sleep(a.hold_seconds)

    stop = models.StopStreamIngestRequest()
    stop.SdkAppId = a.sdkappid
    stop.TaskId = started.TaskId
    print("StopStreamIngest:", client.StopStreamIngest(stop).to_json_string(), flush=True)
    # The answer means the stop is recorded; the robot leaves the room a moment later, and until it has Describe
    # may still say InProgress. Poll until NotExist and print that last reply.
    deadline = time.time() + 10
    while True:
        after = client.DescribeStreamIngest(describe)
        if after.Status == "NotExist":
            print("DescribeStreamIngest:", after.to_json_string(), flush=True)
            break
        if time.time() > deadline:
            sys.exit(f"error: the task still runs 10 s after Stop: {after.to_json_string()}")
        time.sleep(0.1)

if __name__ == "__main__":
    try:
        main()
    except TencentCloudSDKException as e:
        sys.exit(f"error: {e.get_code()}: {e.get_message()}")
