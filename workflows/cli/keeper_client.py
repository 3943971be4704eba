"""How commands hand a tick or a candle query to the warm keeper of `ohlcv up`, instead of
becoming Ray drivers themselves (the keeper's side: workflows/cli/keeper_server.py).

A command that joins the local Ray pays its own start-up before any work: Ray, pyiceberg and
pandas imports, a Ray connection, the catalog (about 3 s of a 4.3 s warm `ohlcv run` on 2
cores). The keeper (workflows/local_ray.py) holds all of that already, and answers on a loopback
port once Spark is up.

Who may call: the port, a random token and the keeper's pid are in `keeper.json` in the head's
temp dir, readable by its owner only. A request also carries a fingerprint of the caller's
settings and storage credentials, and the keeper acts only for callers whose fingerprint equals
its own: a command with another warehouse or other keys goes the usual way (it joins the head
as a driver). Answers are JSON or Arrow, never pickles.

This module imports neither Ray nor pyiceberg: that is its point.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ohlcv import errors as error_types
from ohlcv.errors import OhlcvError
from ohlcv.settings import Settings
from workflows import local_ray

__all__ = ["Keeper", "NotServed", "find", "say_used", "error_from", "fingerprint"]

_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
_CONNECT_SECONDS = 2.0


def fingerprint(settings: Settings) -> str:
    """What must match for the keeper to act for a command: its resolved settings (where the
    warehouse, catalog and runs are) and the storage credentials of its environment, hashed.
    The Ray address is left out: the keeper is a driver of the head, the command not yet."""
    fields = dataclasses.asdict(dataclasses.replace(settings, ray_address=None))
    resolved = [settings.warehouse_uri, settings.resolved_catalog_uri, settings.ray_storage_uri]
    credentials = [os.environ.get(name, "") for name in _CREDENTIALS]
    text = json.dumps([fields, resolved, credentials], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class NotServed(Exception):
    """The keeper cannot act for this command (gone, or other settings): go the usual way."""


@dataclass(frozen=True)
class Keeper:
    port: int
    token: str
    pid: int
    fingerprint: str
    head_address: str
    dashboard: str

    def request(self, path: str, body: dict) -> tuple[str, bytes]:
        """POST `body` to the keeper; (content type, payload) of a 200 answer. A domain error in
        the keeper is raised here with its own type; NotServed when the keeper cannot serve."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=_CONNECT_SECONDS)
        try:
            try:
                connection.connect()
            except OSError as exc:
                raise NotServed(f"the keeper does not answer: {exc}") from None
            connection.sock.settimeout(None)  # a tick takes as long as it takes
            payload = json.dumps({**body, "fingerprint": self.fingerprint}).encode()
            connection.request("POST", path, body=payload, headers={
                "Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
            })
            answer = connection.getresponse()
            data = answer.read()
            kind = answer.getheader("Content-Type", "")
        except (ConnectionError, http.client.HTTPException) as exc:
            raise NotServed(f"the keeper dropped the request: {exc}") from None
        finally:
            connection.close()
        if answer.status == 200:
            return kind, data
        try:
            error = json.loads(data)["error"]
        except (ValueError, KeyError, TypeError):
            error = {"kind": f"HTTP {answer.status}", "message": data[:200].decode(errors="replace")}
        if answer.status == 409:
            raise NotServed(error["message"])
        raise error_from(error)


def find(settings: Settings) -> Keeper | None:
    """The warm keeper of `ohlcv up` when one lives and acts for these settings, else None.
    Nothing is said here: the caller says once on stderr what it used."""
    if settings.ray_address:
        return None  # RAY_ADDRESS names a cluster: commands use that one
    head = local_ray.find()
    if head is None or not head.alive():
        return None
    try:
        recorded = json.loads((Path(head.temp_dir) / local_ray.KEEPER_FILE).read_text())
        keeper = Keeper(int(recorded["port"]), recorded["token"], int(recorded["pid"]), recorded["fingerprint"],
                        head.address, head.dashboard)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if keeper.fingerprint != fingerprint(settings):
        return None
    try:
        os.kill(keeper.pid, 0)
    except OSError:
        return None
    return keeper


def say_used(keeper: Keeper) -> None:
    print(f"using the local Ray started by `ohlcv up` at {keeper.head_address} (dashboard {keeper.dashboard}), "
          "through its warm keeper; `ohlcv down` stops it", file=sys.stderr)


def error_from(error: dict) -> OhlcvError:
    """The keeper's error as the same exception type it was there (ohlcv/errors.py)."""
    kind = getattr(error_types, str(error.get("kind")), None)
    if isinstance(kind, type) and issubclass(kind, OhlcvError):
        return kind(error["message"])
    where = f" (traceback in {error['log']})" if error.get("log") else ""
    return OhlcvError(f"unexpected {error.get('kind')} in the keeper of `ohlcv up`: {error.get('message')}{where}")
