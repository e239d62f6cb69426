#!/usr/bin/env python3
"""An event-callback receiver with only Python's standard library (http.server): checks each POST's `Sign` header
(base64(HMAC-SHA256(callback_key, raw body)), compared with hmac.compare_digest), drops duplicates by the
`X-Roomgate-Event-Id` header (delivery is at least once), prints each new event as one JSON line on stdout, and
answers 200 {"code":0} (401 to a bad Sign, so a forged callback is never acted on).

Run, then set the app's callback_url = "http://127.0.0.1:9000/trtc/callback" and the same callback_key:
    python3 examples/callback_receiver.py --listen 127.0.0.1:9000 --key <callback_key>
Each line: {"event_id": "...", "sdkappid": "...", "event": {EventGroupId, EventType, ..., EventInfo{...}}}.
Diagnostics (listening, duplicates, rejected signatures) go to stderr. CALLBACK_KEY may replace --key.
"""
import argparse
import base64
import collections
import hashlib
import hmac
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Seen:
    """The most recent event ids, oldest evicted first: a bounded set."""

    def __init__(self, capacity):
        self.ids = collections.OrderedDict()
        self.capacity = max(1, capacity)
        self.lock = threading.Lock()

    def insert(self, event_id):
        """True if event_id is new (and remember it)."""
        with self.lock:
            if event_id in self.ids:
                return False
            if len(self.ids) >= self.capacity:
                self.ids.popitem(last=False)
            self.ids[event_id] = True
            return True


def make_handler(key, seen):
    out_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            # 1. The signature over the exact bytes received (never over re-serialized JSON).
            expected = base64.b64encode(hmac.new(key, raw, hashlib.sha256).digest()).decode()
            if not hmac.compare_digest(expected.encode(), self.headers.get("Sign", "").encode()):
                print(f"rejected: bad Sign ({len(raw)} bytes of body)", file=sys.stderr, flush=True)
                return self.reply(401, {"code": 1, "message": "bad Sign"})
            try:
                event = json.loads(raw)
            except ValueError as e:
                print(f"rejected: body is not JSON: {e}", file=sys.stderr, flush=True)
                return self.reply(400, {"code": 1, "message": "not JSON"})

            # 2. Deduplicate: the same event is re-sent with the same id if our 200 got lost or came late.
            event_id = self.headers.get("X-Roomgate-Event-Id", "")
            if event_id and not seen.insert(event_id):
                print(f"duplicate {event_id} ignored", file=sys.stderr, flush=True)
                return self.reply(200, {"code": 0})

            # 3. Handle it: here, one JSON line on stdout.
            line = {"event_id": event_id, "sdkappid": self.headers.get("SdkAppId", ""), "event": event}
            with out_lock:
                print(json.dumps(line), flush=True)
            self.reply(200, {"code": 0})

        def log_message(self, *args):
            pass  # no access log on stderr

    return Handler


def main():
    p = argparse.ArgumentParser(description="Receive roomgate/TRTC event callbacks: check Sign, drop duplicates")
    p.add_argument("--listen", default="127.0.0.1:9000", help="host:port")
    p.add_argument("--key", default=os.environ.get("CALLBACK_KEY"), help="the app's callback_key")
    p.add_argument("--remember", type=int, default=10000, help="recent event ids kept for deduplication")
    a = p.parse_args()
    if not a.key:
        p.error("--key (or $CALLBACK_KEY) is required")
    host, _, port = a.listen.rpartition(":")
    try:
        server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), make_handler(a.key.encode(), Seen(a.remember)))
    except (OSError, ValueError) as e:
        sys.exit(f"error: cannot listen on {a.listen}: {e}")
    print(f"listening on http://{a.listen}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
