"""The keeper's side of workflows/cli/keeper_client.py: the warm keeper of `ohlcv up` runs
ticks and candle queries for commands on this machine.

- `POST /tick`: what `ohlcv run` does (workflows/cli/runs.py `tick_report`), answered as JSON;
- `POST /candles`: what `ohlcv candles` reads (workflows/cli/data.py `query_candles`), answered
  as an Arrow IPC stream.

Each request runs in a thread of its own: a long tick does not hold up a candle query.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ohlcv.errors import OhlcvError
from ohlcv.settings import Settings
from workflows.cli.keeper_client import fingerprint
from workflows.local_ray import KEEPER_FILE

__all__ = ["serve", "open_endpoint"]

log = logging.getLogger(__name__)


def serve(settings: Settings, temp_dir: str) -> None:
    """Serve ticks and candle queries for callers with `settings` until the process ends."""
    open_endpoint(settings, temp_dir).serve_forever()


def open_endpoint(settings: Settings, temp_dir: str) -> ThreadingHTTPServer:
    """The endpoint, listening on a free loopback port; its address goes to `keeper.json`,
    which also tells `ohlcv up` that the keeper is ready."""
    own = fingerprint(settings)
    token = secrets.token_urlsafe(32)
    log_path = str(Path(temp_dir) / "keeper.log")
    routes = {"/tick": _tick, "/candles": _candles}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            if not secrets.compare_digest(self.headers.get("Authorization", ""), f"Bearer {token}"):
                return self._json(403, {"error": {"kind": "PermissionError", "message": "wrong token"}})
            route = routes.get(self.path)
            if route is None:
                return self._json(404, {"error": {"kind": "NotFound", "message": self.path}})
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if body.get("fingerprint") != own:
                return self._json(409, {"error": {"kind": "NotServed", "message": "other settings than the keeper's"}})
            try:
                kind, payload = route(settings, body)
            except OhlcvError as exc:
                return self._json(400, {"error": {"kind": type(exc).__name__, "message": str(exc)}})
            except Exception as exc:  # noqa: BLE001 - one line to the caller, the traceback here
                log.exception("request %s failed", self.path)
                return self._json(500, {"error": {"kind": type(exc).__name__, "message": str(exc), "log": log_path}})
            self._send(200, kind, payload)

        def _json(self, status: int, body: dict) -> None:
            self._send(status, "application/json", json.dumps(body).encode())

        def _send(self, status: int, kind: str, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:
            pass  # one line per request would grow the keeper's log without bound

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    record = {"port": server.server_address[1], "token": token, "pid": os.getpid(), "fingerprint": own}
    partial = Path(temp_dir) / f".{KEEPER_FILE}"
    with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        json.dump(record, out)
    partial.rename(Path(temp_dir) / KEEPER_FILE)
    return server


def _tick(settings: Settings, body: dict) -> tuple[str, bytes]:
    from datetime import datetime

    from ohlcv import timeframes
    from ohlcv.windows import as_utc
    from workflows.cli.runs import tick_report

    tfs = timeframes.resolve(body["timeframe"])
    tick = as_utc(datetime.fromisoformat(body["as_of"]))
    report = tick_report(settings, tfs, tick, rerun=bool(body.get("rerun")))
    return "application/json", json.dumps(report.to_json()).encode()


def _candles(settings: Settings, body: dict) -> tuple[str, bytes]:
    import pyarrow as pa

    from workflows.cli.data import query_candles

    result = query_candles(settings, body["timeframe"], body["symbol"], body.get("exchange"),
                           body.get("start"), body.get("end"), body.get("limit"))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, result.schema) as writer:
        writer.write_table(result)
    return "application/vnd.apache.arrow.stream", sink.getvalue().to_pybytes()
