"""A callback receiver as an app backend would write it: verifies TRTC's `Sign` header with Python's own hmac
(independent of roomgate's code) and records every POST, in arrival order, as one JSON line in OUT.

usage: receiver.py PORT KEY OUT [DELAY_SECONDS]
Each line: {"sign_ok": bool, "sdkappid": "<SdkAppId header>", "content_type": "...", "body": <parsed JSON>}.
Answers 200 {"code":0}, as TRTC recommends.
"""
import base64
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, KEY, OUT = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
DELAY = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0  # a slow backend


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        time.sleep(DELAY)
        expected = base64.b64encode(hmac.new(KEY, raw, hashlib.sha256).digest()).decode()
        record = {
            "sign_ok": hmac.compare_digest(expected, self.headers.get("Sign", "")),
            "sdkappid": self.headers.get("SdkAppId"),
            "content_type": self.headers.get("Content-Type"),
            "body": json.loads(raw),
        }
        with open(OUT, "a") as f:
            f.write(json.dumps(record) + "\n")
        reply = b'{"code":0}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
