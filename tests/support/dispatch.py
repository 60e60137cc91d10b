"""Helpers for the dispatcher's end-to-end tests: config, HTTP client, a local webhook receiver."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from stream.models import CHINA_TZ

CLINIC = "c1"
TOKEN = "test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(
    tmp: Path,
    broker_port: int,
    extra: str = "",
    http_port: int | None = None,
    escalation: str = "{village: 4h, township: 30m, county: 10m}",
    escalation_more: str = "",
) -> Path:
    http = f"http: {{bind: 127.0.0.1, port: {http_port}, token: {TOKEN}}}\n" if http_port else ""
    cfg = tmp / "gateway.yaml"
    cfg.write_text(f"""\
clinic: {CLINIC}
broker: {{host: 127.0.0.1, port: {broker_port}}}
storage: {{path: {tmp / "var"}}}
status: {{interval: 1s}}
patients:
  - id: p-0001
    labels: {{frail: true, village: dongcun}}
    devices:
      - {{id: bp-0001, kind: blood_pressure}}
      - {{id: glu-0001, kind: glucose}}
  - id: p-0002
    labels: {{village: xicun}}
    devices:
      - {{id: bp-0002, kind: blood_pressure}}
      - {{id: glu-0002, kind: glucose}}
escalation:
  ack_timeout: {escalation}
{escalation_more}{http}{extra}""")
    return cfg


def now() -> datetime:
    return datetime.now(CHINA_TZ).replace(microsecond=0)


def glucose(ts: datetime, mmol: float, seq: int) -> str:
    return json.dumps({"kind": "glucose", "ts": ts.isoformat(), "seq": seq, "mmol_l": mmol})


def bp(ts: datetime, sys_: int, dia: int, seq: int) -> str:
    return json.dumps(
        {
            "kind": "blood_pressure",
            "ts": ts.isoformat(),
            "seq": seq,
            "systolic": sys_,
            "diastolic": dia,
            "pulse": 80,
            "unit": "mmHg",
        }
    )


def api(port: int, method: str, path: str, body: dict | None = None, token: str | None = TOKEN) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method, data=json.dumps(body).encode() if body is not None else None
    )
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_api(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if api(port, "GET", "/api/status")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("HTTP API did not come up")


class WebhookReceiver:
    """A real local HTTP server standing in for the 120 bridge or an SMS gateway.

    Fails the first `fail_first` requests with 503; records every request
    (monotonic time, headers, JSON body, status answered)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = 503 if len(outer.requests) < outer.fail_first else 200
                outer.requests.append(
                    {"t": time.monotonic(), "headers": dict(self.headers), "status": status, "body": json.loads(body)}
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}' if status == 200 else b'{"error": "busy"}')

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/alerts"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, pred, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in list(self.requests):
                if pred(r):
                    return r
            time.sleep(0.05)
        raise AssertionError(f"webhook got no matching request in {timeout}s: {[r['status'] for r in self.requests]}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
