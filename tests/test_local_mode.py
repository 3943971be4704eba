"""The warm local mode: `ohlcv up` starts a local Ray head and the Spark service in the
background, later commands find it without RAY_ADDRESS and say so once, `run` and `candles`
go through its keeper (and without it when it died, until `ohlcv up` replaces it), a crashed
head is detected and left alone, and `ohlcv down` stops it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from headnode import BIN

USING = "using the local Ray started by `ohlcv up`"
THROUGH_KEEPER = "through its warm keeper"


def ohlcv(env: dict[str, str], *args: str, expect: int = 0) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([str(BIN / "ohlcv"), *args], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == expect, f"ohlcv {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.own_cluster(seconds=90)
def test_up_warms_ray_and_spark_for_later_commands_and_down_stops_them(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OHLCV_", "RAY_ADDRESS"))}
    env.update(OHLCV_WAREHOUSE=str(tmp_path / "warehouse"), XDG_STATE_HOME=str(tmp_path / "state"),
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    ohlcv(env, "init")
    ohlcv(env, "generate", "--out", str(tmp_path / "day.parquet"), "--start", "2024-06-03", "--end", "2024-06-04",
          "--symbols", "2", "--exchanges", "1", "--trades-per-day", "4000")
    ohlcv(env, "ingest", str(tmp_path / "day.parquet"))

    up, up_seconds = ohlcv(env, "up")
    assert "Spark service ready" in up.stdout, up.stdout
    state = tmp_path / "state" / "ohlcv" / "local-ray.json"
    head = json.loads(state.read_text())
    assert head["storage"] == (tmp_path / "warehouse" / "workflow-storage").as_uri() or "workflow-storage" in head["storage"]
    try:
        tick, tick_seconds = ohlcv(env, "run", "--timeframe", "1m", "--as-of", "2024-06-03T12:00Z")
        assert tick.stderr.count(USING) == 1, tick.stderr  # said once
        assert THROUGH_KEEPER in tick.stderr, tick.stderr  # the keeper ran it: this command joined no Ray
        assert "gold_ohlcv_1m" in tick.stdout
        window = ("--start", "2024-06-03T11:50Z", "--end", "2024-06-03T12:00Z", "--format", "csv")
        shown, candles_seconds = ohlcv(env, "candles", "--symbol", "BTC-USDT", "--timeframe", "1m", *window)
        assert THROUGH_KEEPER in shown.stderr and shown.stdout.count("\n") > 1
        # The same query without the keeper (RAY_ADDRESS names the head: the command reads itself).
        direct, _ = ohlcv({**env, "RAY_ADDRESS": head["address"]}, "candles", "--symbol", "BTC-USDT", "--timeframe", "1m", *window)
        assert THROUGH_KEEPER not in direct.stderr and direct.stdout == shown.stdout

        # A keeper that died: commands join the head as drivers themselves; `ohlcv up` replaces it.
        keeper_file = Path(head["temp_dir"]) / "keeper.json"
        os.kill(json.loads(keeper_file.read_text())["pid"], signal.SIGKILL)
        alone, _ = ohlcv(env, "run", "--timeframe", "1m", "--as-of", "2024-06-03T12:01Z")
        assert alone.stderr.count(USING) == 1 and THROUGH_KEEPER not in alone.stderr, alone.stderr
        assert "ohlcv-1m-20240603T1201Z" in alone.stdout
        again, _ = ohlcv(env, "up")
        assert "already up" in again.stdout and "keeper is gone" in again.stdout, again.stdout
        assert json.loads(state.read_text()) == head
        served, _ = ohlcv(env, "run", "--timeframe", "1m", "--as-of", "2024-06-03T12:02Z")
        assert THROUGH_KEEPER in served.stderr and "ohlcv-1m-20240603T1202Z" in served.stdout
        print(f"up {up_seconds:.1f}s, run 1m {tick_seconds:.1f}s, candles {candles_seconds:.1f}s")

        # A head that crashed: commands say so once, do without it, and forget it.
        os.killpg(head["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{head['pid']}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        listed, _ = ohlcv(env, "workflows", "list")
        assert "is gone: this command starts its own" in listed.stderr and USING not in listed.stderr
        assert "ohlcv-1m-20240603T1200Z" in listed.stdout  # the runs live in the storage, not the head
        assert not state.exists()
    finally:
        down, _ = ohlcv(env, "down")
    assert "no local Ray" in down.stdout or "stopped" in down.stdout
    leftovers = subprocess.run(["pgrep", "-f", head["temp_dir"]], capture_output=True, text=True).stdout.split()
    assert not leftovers, leftovers
    # A head that crashed keeps its temp dir, for its logs (`ohlcv down` removes a live head's).
    assert (Path(head["temp_dir"]) / "head.log").exists()
    shutil.rmtree(head["temp_dir"])


def test_a_head_s_ports_are_distinct_free_and_outside_the_range_outgoing_connections_use():
    import socket

    from workflows.local_ray import free_ports

    ports = free_ports(9)
    assert len(set(ports)) == 9
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(20000 <= port < ephemeral_low for port in ports), ports
    for port in ports:  # free: each can be bound now
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
