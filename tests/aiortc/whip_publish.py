#!/usr/bin/env python3
"""Publish to a WHIP URL with aiortc (synthetic 640x480 video + audio) for SECONDS, then DELETE the session.

usage: whip_publish.py URL BEARER_TOKEN SECONDS
Prints one JSON line when published ({"status": 201, "location": ...}) and another when done.
"""
import asyncio
import json
import sys
import urllib.parse
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack


async def main(url: str, token: str, seconds: float) -> None:
    pc = RTCPeerConnection()
    pc.addTrack(VideoStreamTrack())
    pc.addTrack(AudioStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    req = urllib.request.Request(
        url,
        data=pc.localDescription.sdp.encode(),
        headers={"Content-Type": "application/sdp", "Authorization": "Bearer " + token},
        method="POST",
    )
    loop = asyncio.get_running_loop()
    resp = await loop.run_in_executor(None, lambda: urllib.request.urlopen(req, timeout=10))
    location = urllib.parse.urljoin(url, resp.headers["Location"])
    answer = resp.read().decode()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    print(json.dumps({"status": resp.status, "location": location}), flush=True)
    await asyncio.sleep(seconds)
    delete = urllib.request.Request(location, method="DELETE")
    status = await loop.run_in_executor(None, lambda: urllib.request.urlopen(delete, timeout=10).status)
    await pc.close()
    print(json.dumps({"deleted": status}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
