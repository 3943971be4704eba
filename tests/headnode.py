"""A real Ray head node started with `ray start --head`, for tests of cluster restarts and jobs.

`ray stop` would stop every Ray process on the machine (the test session's own cluster too),
so a head here runs `ray start --block` in its own process group with its own temp dir, and
stopping it ends that group and any process still naming its temp dir: what `ray stop` does,
for one cluster only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from workflows.local_ray import PORT_FLAGS, SLOW_MACHINE_ENVIRONMENT, free_ports, head_command, log_tail, processes_naming

BIN = Path(sys.executable).parent


_KEEPER = """
import time
from ohlcv.settings import from_environment
from workflows.orchestration import runs
runs.connect(from_environment())
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


# (first port, ports per block): ten blocks in 3000-9999, a head's chosen by its GCS port.
WORKER_PORT_BLOCKS = (3000, 700)


class HeadNode:
    def __init__(self, storage_uri: str, log_dir: Path, num_cpus: int = 2) -> None:
        self.storage_uri, self.log_dir, self.num_cpus = storage_uri, log_dir, num_cpus
        self.process: subprocess.Popen | None = None
        self.temp_dir = ""

    def start(self) -> "HeadNode":
        """Start the head and wait until it takes jobs; a head that exits while starting is
        tried again on fresh ports (as `ohlcv up` does), three times in all."""
        for _ in range(3):
            if self._launch_and_wait():
                return self
            failure = f"ray start exited with {self.process.returncode}: {log_tail(self.log.name)} (log: {self.log.name})"
            self.stop()
        raise RuntimeError(failure)

    def _launch_and_wait(self) -> bool:
        ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
        self.gcs_port, self.dashboard_port = ports["--port"], ports["--dashboard-port"]
        self.metrics_port = ports["--metrics-export-port"]
        self.agent_port = ports["--dashboard-agent-listen-port"]
        # Short: Ray puts unix sockets in it, and socket paths are limited to ~100 bytes.
        self.temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")
        command = head_command(self.storage_uri, self.temp_dir, self.num_cpus, ports)
        # Workers and drivers of this head take their ports from a block of its own, below Ray's
        # default range (10002-19999), which the other xdist worker's session Ray uses: a driver
        # of this head (an `ohlcv` command) given a port that Ray had also given one of those
        # workers died at start ("No address added", seen on a clean clone).
        first = WORKER_PORT_BLOCKS[0] + (self.gcs_port % 10) * WORKER_PORT_BLOCKS[1]
        command += [f"--min-worker-port={first}", f"--max-worker-port={first + WORKER_PORT_BLOCKS[1] - 1}"]
        environment = {**os.environ, **SLOW_MACHINE_ENVIRONMENT, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        for name in [n for n in environment if n.startswith(("OHLCV_", "RAY_ADDRESS"))]:
            environment.pop(name)
        self.log = open(self.log_dir / f"head-{self.gcs_port}.log", "w")
        self.process = subprocess.Popen(command, env=environment, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            # Up means: the dashboard answers, and so does the head's dashboard agent, which runs
            # the submitted jobs (`ray job submit` fails with "no available agent" before it does).
            try:
                with urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2):
                    pass
                with urllib.request.urlopen(f"http://127.0.0.1:{self.agent_port}/api/local_raylet_healthz", timeout=2):
                    return True
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"the head did not come up in time: {log_tail(self.log.name)} (log: {self.log.name})")

    def keep_workflow_actors(self, environment: dict[str, str]) -> None:
        """Start a driver that creates Ray Workflows' actors on this head and lives as long as it,
        as `ohlcv up`'s keeper does for a local head. Workflow steps are tasks of the job that
        created those actors, and Ray ends the workers of a finished job: created by a command,
        every step of every later command and job would start a fresh worker (seconds of imports)."""
        environment = {**environment, "RAY_ADDRESS": self.address}
        # A driver's port comes from the worker port range, which the other xdist worker's Ray
        # uses too: one taken meanwhile fails the driver at once ("Address already in use"),
        # and the next try gets another port.
        for attempt in range(1, 4):
            # The temp dir on its command line: `stop` ends it with the head's other processes.
            log = self.log_dir / f"keeper-{self.gcs_port}-{attempt}.log"
            with open(log, "w") as output:
                keeper = subprocess.Popen([sys.executable, "-c", _KEEPER, self.temp_dir], env=environment,
                                          stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 120
            while "ready" not in log.read_text(errors="replace").splitlines():
                if keeper.poll() is not None or time.monotonic() > deadline:
                    keeper.kill()
                    break
                time.sleep(0.2)
            else:
                return
        raise RuntimeError(f"the keeper did not start in 3 tries: {log_tail(log)} (log: {log})")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def jobs(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.dashboard}/api/jobs/", timeout=10) as response:
            return json.loads(response.read())

    def job_logs(self, submission_id: str) -> str:
        """What `ray job logs` prints, from the same dashboard endpoint, without starting a process
        (each `ray job logs` imports Ray: seconds of CPU a poll on 2 cores)."""
        with urllib.request.urlopen(f"{self.dashboard}/api/jobs/{submission_id}/logs", timeout=30) as response:
            return json.loads(response.read())["logs"]

    def metrics(self) -> str:
        """The node's metrics in Prometheus text format (what the dashboard's Grafana reads)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            return response.read().decode()

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        for pid in self._stragglers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process = None
        self.log.close()
        # Ray's session logs for this head (about 40 MB): the head's own log stays in log_dir.
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _stragglers(self) -> list[int]:
        return processes_naming(self.temp_dir) if self.temp_dir else []
