"""A callback receiver as an app backend would write it: verifies TRTC's `Sign` header with Python's own hmac
(independent of roomgate's code), checks the `X-Roomgate-Event-Id` header (what a backend deduplicates on) and
records every POST, in arrival order, as one JSON line in OUT.

usage: receiver.py PORT KEY OUT [DELAY_SECONDS [FAIL_FIRST]]
Each line: {"sign_ok": bool, "sdkappid": "<SdkAppId header>", "content_type": "...", "event_id": "<header or null>",
"event_id_ok": bool, "answered": <HTTP status>, "body": <parsed JSON>}.
Answers 200 {"code":0}, as TRTC recommends; with FAIL_FIRST=1, answers 500 to the first POST of each event id (or
of each body, when a POST has no id), so the test sees the retry.
"""
import base64
import hashlib
import hmac
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, KEY, OUT = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
DELAY = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0  # a slow backend
FAIL_FIRST = len(sys.argv) > 5 and sys.argv[5] == "1"
EVENT_ID = re.compile(r"^[0-9a-f-]{8,64}$")
seen = set()
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        time.sleep(DELAY)
        expected = base64.b64encode(hmac.new(KEY, raw, hashlib.sha256).digest()).decode()
        event_id = self.headers.get("X-Roomgate-Event-Id")
        status = 200
        with lock:
            key = event_id or hashlib.sha256(raw).hexdigest()
            if FAIL_FIRST and key not in seen:
                status = 500
            seen.add(key)
            record = {
                "sign_ok": hmac.compare_digest(expected, self.headers.get("Sign", "")),
                "sdkappid": self.headers.get("SdkAppId"),
                "content_type": self.headers.get("Content-Type"),
                "event_id": event_id,
                "event_id_ok": bool(event_id and EVENT_ID.match(event_id)),
                "answered": status,
                "body": json.loads(raw),
            }
            with open(OUT, "a") as f:
                f.write(json.dumps(record) + "\n")
        reply = b'{"code":0}' if status == 200 else b'{"code":1}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
