#!/usr/bin/env python3
"""Play a WHEP URL with aiortc (an independent WebRTC stack) and print what was decoded, as JSON.

usage: whep_play.py URL [BEARER_TOKEN] [SECONDS]
"""
import asyncio
import json
import sys
import urllib.error
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription


async def main(url: str, token: str, seconds: float) -> dict:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    result = {"video_frames": 0, "width": None, "height": None, "audio_samples": 0, "audio_rate": None}
    enough = asyncio.Event()

    @pc.on("track")
    def on_track(track):
        async def consume():
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                if track.kind == "video":
                    result["video_frames"] += 1
                    result["width"], result["height"] = frame.width, frame.height
                else:
                    result["audio_samples"] += frame.samples
                    result["audio_rate"] = frame.sample_rate
                if result["video_frames"] >= 30 and result["audio_samples"] >= 48000:
                    enough.set()

        asyncio.ensure_future(consume())

    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp"}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(url, data=pc.localDescription.sdp.encode(), headers=headers, method="POST")
    loop = asyncio.get_running_loop()
    try:
        resp = await loop.run_in_executor(None, lambda: urllib.request.urlopen(req, timeout=10))
    except urllib.error.HTTPError as e:
        # A refusal is a result too: its status and the gateway's JSON error.
        result["status"] = e.code
        result["error"] = e.read().decode(errors="replace")
        await pc.close()
        return result
    result["status"] = resp.status
    answer = resp.read().decode()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    try:
        await asyncio.wait_for(enough.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass
    await pc.close()
    return result


if __name__ == "__main__":
    url = sys.argv[1]
    token = sys.argv[2] if len(sys.argv) > 2 else ""
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 15.0
    print(json.dumps(asyncio.run(main(url, token, seconds))))
