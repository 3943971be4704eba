"""The warm local mode: `ohlcv up` starts a Ray head in the background (with the Spark service
warm in it), and every later command on this machine joins it instead of starting its own Ray
and Spark (25 to 45 s each). `ohlcv down` stops it.

The head is `ray start --head --block` in a process group of its own, with its own temp dir and
free ports, so stopping it touches no other Ray on the machine (`ray stop` would stop them all).
What commands need to find it is one small file, `$XDG_STATE_HOME/ohlcv/local-ray.json`
(`~/.local/state/ohlcv/...` by default). A head that crashed, or whose file outlived a reboot,
is stale: commands say so and go on without it, and `ohlcv up` replaces it.

Beside the head runs a keeper (`python -m workflows.local_ray keep TEMP_DIR PORT`): a driver
that creates Ray Workflows' actors and the Spark service, then lives as long as the head. Tasks
those actors submit belong to their creator's job, and Ray kills the workers of a finished job:
created by a command, they would start fresh workers (seconds of imports) for every step of
every later command. The keeper's job never finishes, so its workers stay warm. Once Spark is
warm the keeper also runs ticks and candle queries for commands (workflows/cli/keeper_server.py),
so that `ohlcv run` and `ohlcv candles` need not become Ray drivers themselves.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ohlcv.errors import ServiceUnavailable

__all__ = [
    "KEEPER_FILE", "PORT_FLAGS", "SLOW_MACHINE_ENVIRONMENT", "WARM_WORKERS", "WARM_WORKERS_ENVIRONMENT", "LocalRay", "free_ports", "head_command", "log_tail",
    "processes_naming", "state_file", "find", "start",
    "keeper_alive", "start_keeper", "wait_keeper", "stop", "forget",
]

PORT_FLAGS = (
    "--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port",
    "--node-manager-port", "--object-manager-port",
)
_START_SECONDS = 90
_START_ATTEMPTS = 3
_PICK_RANGE = (20000, 32768)  # see free_ports
_keepers: dict[str, subprocess.Popen] = {}  # keepers this process launched, by head temp dir
# In a head's temp dir: the keeper's endpoint (workflows/cli/keeper_server.py), written when it is ready.
KEEPER_FILE = "keeper.json"
# Ray's dashboard gives each of its modules 30 s to start and takes the whole head down when
# one is late: on a busy 2-core machine (a Spark job running) that happens. Give them longer.
SLOW_MACHINE_ENVIRONMENT = {"RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT": "180"}
# Ray keeps idle workers only up to a soft limit, the CPU count by default, and counts the
# long-lived actors (workflow manager, Spark service and master) against it: on 2 cores every
# step's worker was killed a second after it went idle, and the next command started it afresh.
# A process's own local Ray (runtime.ensure_ray) keeps as many, through Ray's system config.
WARM_WORKERS = 12
WARM_WORKERS_ENVIRONMENT = {"RAY_num_workers_soft_limit": str(WARM_WORKERS)}


@dataclass(frozen=True)
class LocalRay:
    address: str  # host:port of the GCS, what RAY_ADDRESS would say
    dashboard: str
    pid: int  # the `ray start --block` process, leader of the head's process group
    temp_dir: str
    storage: str  # the workflow storage URI the head was started with
    log: str
    node_manager_port: int = 0  # 0 in state files written before it was recorded

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        host, port = self.address.rsplit(":", 1)
        return _accepts(host, int(port))


def state_file() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ohlcv" / "local-ray.json"


def find() -> LocalRay | None:
    """The head `ohlcv up` started, as its state file says (alive or not), or None."""
    try:
        return LocalRay(**json.loads(state_file().read_text()))
    except (OSError, ValueError, TypeError):
        return None


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports for a head, below the kernel's ephemeral range.

    A port picked with bind(0) comes from the ephemeral range, which every outgoing connection
    on the machine also draws from: between the pick and Ray's bind, a busy machine (another
    Ray's workers connecting) can take one, and the head dies at start. Ports between Ray's
    worker range (10002-19999) and the ephemeral range are only ever taken on purpose."""
    low, high = _PICK_RANGE
    ephemeral_low = _ephemeral_low()
    if ephemeral_low is not None and ephemeral_low > low + 10 * count:
        high = min(high, ephemeral_low)
    candidates = random.sample(range(low, high), k=min(high - low, 50 * count))
    sockets: list[socket.socket] = []
    try:
        for port in candidates:
            if len(sockets) == count:
                break
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            sockets.append(s)
        if len(sockets) < count:
            raise ServiceUnavailable(f"no {count} free ports between {low} and {high} on 127.0.0.1")
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _ephemeral_low() -> int | None:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def start(storage_uri: str, num_cpus: int | None = None, keeper: bool = False) -> LocalRay:
    """Start a head in the background and wait until it takes drivers; record it.
    A head that exits while starting is tried again on fresh ports, up to three times in all.
    `keeper`: launch the head's keeper at once, so that its imports overlap the head's start
    (it connects when the head is up); `wait_keeper` waits for it."""
    for attempt in range(1, _START_ATTEMPTS + 1):
        head, process = _launch(storage_uri, num_cpus)
        if keeper:
            _keepers[head.temp_dir] = _launch_keeper(head)
        deadline = time.monotonic() + _START_SECONDS
        # Up means the raylet takes connections too, not only the GCS: Ray starts the raylet after
        # the dashboard, and a driver that connects before it is refused.
        while not _takes_drivers(head):
            exited = process.poll() is not None
            if exited or time.monotonic() > deadline:
                stop(head)  # its keeper too: it names the temp dir
                if exited and attempt < _START_ATTEMPTS:
                    break
                raise ServiceUnavailable(f"the local Ray head did not start: {log_tail(head.log)} (log: {head.log})")
            time.sleep(0.25)
        else:
            state_file().parent.mkdir(parents=True, exist_ok=True)
            state_file().write_text(json.dumps(asdict(head)))
            return head
    raise AssertionError("unreachable")


def _takes_drivers(head: LocalRay) -> bool:
    return head.alive() and _accepts("127.0.0.1", head.node_manager_port)


def head_command(storage_uri: str, temp_dir: str, num_cpus: int, ports: dict[str, int]) -> list[str]:
    """`ray start --head --block` on the given ports, dashboard on loopback (tests use it too)."""
    return [
        str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--num-cpus={num_cpus}",
        f"--storage={storage_uri}", f"--temp-dir={temp_dir}", "--include-dashboard=true",
        "--dashboard-host=127.0.0.1", "--disable-usage-stats",
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]


def log_tail(path: str | Path, lines: int = 3) -> str:
    """The last lines of a log, on one line, for an error message."""
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(line.strip() for line in text[-lines:]) or "no output"


def _launch(storage_uri: str, num_cpus: int | None) -> tuple[LocalRay, subprocess.Popen]:
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    # Short: Ray puts unix sockets in it, and socket paths are limited to about 100 bytes.
    temp_dir = tempfile.mkdtemp(prefix="ohlcv-ray-", dir="/tmp")
    log_path = Path(temp_dir) / "head.log"
    environment = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    environment.update(SLOW_MACHINE_ENVIRONMENT)
    environment.update(WARM_WORKERS_ENVIRONMENT)
    command = head_command(storage_uri, temp_dir, num_cpus or os.cpu_count() or 1, ports)
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    head = LocalRay(f"127.0.0.1:{ports['--port']}", f"http://127.0.0.1:{ports['--dashboard-port']}", process.pid,
                    temp_dir, storage_uri, str(log_path), ports["--node-manager-port"])
    return head, process


def keeper_alive(head: LocalRay) -> bool:
    """Whether the head's keeper lives (its endpoint file names its pid)."""
    try:
        pid = int(json.loads((Path(head.temp_dir) / KEEPER_FILE).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return _pid_alive(pid)


def start_keeper(head: LocalRay, timeout: float = 300.0) -> None:
    """Start a keeper for a head that lives without one (it crashed), and wait until it is ready."""
    _keepers[head.temp_dir] = _launch_keeper(head)
    wait_keeper(head, timeout)


def wait_keeper(head: LocalRay, timeout: float = 300.0) -> None:
    """Wait until the head's keeper has the workflow actors and a warm Spark, and serves."""
    ready = Path(head.temp_dir) / KEEPER_FILE
    log_path = Path(head.temp_dir) / "keeper.log"
    keeper = _keepers.pop(head.temp_dir)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if keeper.poll() is not None or time.monotonic() > deadline:
            keeper.kill()
            raise ServiceUnavailable(f"the local Ray's keeper did not start: {log_tail(log_path, 1)} (log: {log_path})")
        time.sleep(0.2)


def _launch_keeper(head: LocalRay) -> subprocess.Popen:
    ready = Path(head.temp_dir) / KEEPER_FILE
    ready.unlink(missing_ok=True)
    environment = {**os.environ, "RAY_ADDRESS": head.address}
    with open(Path(head.temp_dir) / "keeper.log", "w") as log:
        # The temp dir in its command line: `stop` finds it there, as it finds the head's processes.
        return subprocess.Popen(
            [sys.executable, "-m", "workflows.local_ray", "keep", head.temp_dir, str(head.node_manager_port)],
            env=environment, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )


def _keep(temp_dir: str, node_manager_port: int) -> None:
    # Imported before the head is up: this is what overlaps its start.
    from ohlcv.settings import from_environment
    from workflows.cli import keeper_server
    from workflows.orchestration.runs import connect
    from workflows.spark.service import spark_service, start_service

    settings = from_environment()
    host, port = settings.ray_address.rsplit(":", 1)
    deadline = time.monotonic() + _START_SECONDS
    while not (_accepts(host, int(port)) and _accepts("127.0.0.1", node_manager_port)):
        if time.monotonic() > deadline:
            sys.exit(f"the head at {settings.ray_address} did not take drivers within {_START_SECONDS} s")
        time.sleep(0.25)
    start_service(settings)  # RayDP's start (about 14 s) overlaps the workflow actors' creation
    connect(settings)  # Ray Workflows' actors, created by this job
    service = spark_service(settings)  # waits until Spark is up
    # Ready now; the first commands need not also pay for the first compilations and imports.
    threading.Thread(target=_warm_up, args=(service, temp_dir), name="warm-up", daemon=True).start()
    # Until `ohlcv down` kills it; if the head goes first, Ray ends this driver.
    keeper_server.serve(settings, temp_dir)


def _warm_up(service, temp_dir: str) -> None:
    """After `ohlcv up` returns: Spark's first aggregations (JIT), and workers of this job with
    the steps' modules imported (pandera alone is about 0.8 s in a fresh worker). A tick typed
    10 s after `up` then took 3.6 to 4.2 s instead of 12.5 s; one typed at once shares the cores
    with this and gains nothing (measured on 2 cores)."""
    import ray

    try:
        workers = [ray.remote(num_cpus=0)(_import_step_modules).remote() for _ in range(2)]
        seconds = ray.get(service.warm_up.remote(temp_dir))
        ray.get(workers)
        print(f"warmed up in {seconds:.1f} s", flush=True)
    except Exception as exc:  # noqa: BLE001 - a cold first command is slower, not wrong
        print(f"warm-up failed (the first command will be slower): {exc}", flush=True)


def _import_step_modules() -> None:
    import ohlcv.candle_model  # noqa: F401 - pandera
    import workflows.orchestration.steps  # noqa: F401


def stop(head: LocalRay, remove_files: bool = False) -> None:
    """Stop the head's process group and anything still running from its temp dir.
    `remove_files`: also remove that temp dir (its logs, the keeper's token, and the 34 MB copy
    of Ray's Java library each session makes); a head that failed keeps it, for its logs."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _pid_alive(head.pid):
            time.sleep(0.3)
    except (ProcessLookupError, PermissionError):
        pass
    _kill_leftovers(head)
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    forget(head)
    if remove_files:
        shutil.rmtree(head.temp_dir, ignore_errors=True)


def forget(head: LocalRay) -> None:
    """Remove the state file, if it still names `head`, and end what is left of a dead head
    (its keeper, workers) rather than leave them waiting for Ray to time out."""
    if find() == head:
        state_file().unlink(missing_ok=True)
    if not head.alive():
        _kill_leftovers(head)


def _kill_leftovers(head: LocalRay) -> None:
    """SIGKILL every process that names the head's temp dir: raylet, GCS, workers, keeper."""
    for pid in processes_naming(head.temp_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def processes_naming(text: str) -> list[int]:
    """Processes whose command line names `text` (the head's temp dir: its raylet, GCS, workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "keep":
        _keep(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("usage: python -m workflows.local_ray keep TEMP_DIR NODE_MANAGER_PORT (started by `ohlcv up`)")
