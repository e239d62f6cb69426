"""Drive roomgate's Cloud API with Tencent's official Python SDK (tencentcloud-sdk-python-trtc), unchanged except
for the endpoint: StartStreamIngest -> DescribeStreamIngest -> StopStreamIngest -> DescribeStreamIngest, then the
errors a backend sees (FailedOperation.TaskFinished, AuthFailure.SignatureFailure).

Environment: ROOMGATE_ENDPOINT (host:port), SECRET_ID, SECRET_KEY, SDKAPPID, ROOM, USERID, USERSIG, STREAM_URL.
Prints one JSON object with what happened; exits non-zero on an unexpected result.
"""
import json
import os
import sys
import time

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.trtc.v20190722 import models, trtc_client


def client(secret_key):
    http = HttpProfile(endpoint=os.environ["ROOMGATE_ENDPOINT"], protocol="http", reqTimeout=30)
    profile = ClientProfile(httpProfile=http)  # TC3-HMAC-SHA256, POST JSON: the SDK defaults
    cred = credential.Credential(os.environ["SECRET_ID"], secret_key)
    return trtc_client.TrtcClient(cred, "ap-guangzhou", profile)


def main():
    out = {}
    c = client(os.environ["SECRET_KEY"])
    sdkappid = int(os.environ["SDKAPPID"])

    start = models.StartStreamIngestRequest()
    start.SdkAppId = sdkappid
    start.RoomId = os.environ["ROOM"]
    start.RoomIdType = 0
    start.UserId = os.environ["USERID"]
    start.UserSig = os.environ["USERSIG"]
    start.StreamUrl = os.environ["STREAM_URL"]
    start.RepeatNum = -1
    start.Volume = 100
    resp = c.StartStreamIngest(start)
    out["TaskId"] = resp.TaskId
    out["StartRequestId"] = resp.RequestId

    describe = models.DescribeStreamIngestRequest()
    describe.SdkAppId = sdkappid
    describe.TaskId = resp.TaskId
    out["StatusRunning"] = c.DescribeStreamIngest(describe).Status

    update = models.UpdateStreamIngestRequest()
    update.SdkAppId = sdkappid
    update.TaskId = resp.TaskId
    update.Volume = 50
    out["UpdateStatus"] = c.UpdateStreamIngest(update).Status

    # Give the test time to see the anchor in the room and a viewer to watch it.
    time.sleep(float(os.environ.get("HOLD_SECONDS", "3")))

    stop = models.StopStreamIngestRequest()
    stop.SdkAppId = sdkappid
    stop.TaskId = resp.TaskId
    out["StopRequestId"] = c.StopStreamIngest(stop).RequestId

    deadline = time.time() + 10
    while True:
        status = c.DescribeStreamIngest(describe).Status
        if status == "NotExist" or time.time() > deadline:
            break
        time.sleep(0.1)
    out["StatusAfterStop"] = status

    try:
        c.StopStreamIngest(stop)
        out["SecondStop"] = "no error"
    except TencentCloudSDKException as e:
        out["SecondStop"] = e.get_code()

    try:
        client("wrong-key").DescribeStreamIngest(describe)
        out["WrongKey"] = "no error"
    except TencentCloudSDKException as e:
        out["WrongKey"] = e.get_code()

    print(json.dumps(out))
    ok = (
        out["StatusRunning"] == "InProgress"
        and out["StatusAfterStop"] == "NotExist"
        and out["SecondStop"] == "FailedOperation.TaskFinished"
        and out["WrongKey"] == "AuthFailure.SignatureFailure"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
