"""A local Ray cluster for the Ray tests and ``bench/ray_scaling.py``: ``ray start`` raylets on this machine.

A head node without CPUs (it only schedules) plus worker nodes of ``cpus`` each. Every node has its own
temporary folder under ``root`` (short: Unix socket paths are limited) and its own process group, which
:meth:`LocalCluster.kill` and :meth:`LocalCluster.stop` kill; nothing else on the machine is touched
(never a global ``ray stop``: other clusters may run here).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.browser_util import free_port

RAY = str(Path(sys.executable).with_name("ray"))


class LocalCluster:
    """A head node without CPUs plus worker nodes, all ``ray start`` raylets here, started with ``env``."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.groups: dict[str, int] = {}  # node name -> process group of its raylet and workers
        self.address = ""

    def _start(self, name: str, args: list[str]) -> Path:
        temp = self.root / name
        ports = ["--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port())]
        cmd = [RAY, "start", "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp), *ports, *args]
        proc = subprocess.Popen(
            cmd, env=self.env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.groups[name] = proc.pid  # the daemons it starts stay in the group it leads, after it exits
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start for {name} failed:\n{out.decode(errors='replace')[-3000:]}")
        return temp

    def start_head(self) -> str:
        """Start the head node; its address (also kept in ``address``)."""
        port = free_port()
        head = ["--head", "--port", str(port), "--num-cpus", "0", "--disable-usage-stats"]
        self._start("head", [*head, "--dashboard-port", str(free_port())])
        self.address = f"127.0.0.1:{port}"
        return self.address

    def add_worker(self, name: str, cpus: int = 1) -> Path:
        """Start a worker node of ``cpus`` CPUs joined to the head; its temporary folder."""
        return self._start(name, ["--address", self.address, "--num-cpus", str(cpus)])

    def kill(self, name: str, *pids: int) -> None:
        """SIGKILL a node: its raylet and agents, and ``pids`` (the raylet puts each worker in a group of its own)."""
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(self.groups.pop(name), signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def node_named(self, node_id: str) -> str:
        """The name of this cluster's node whose Ray node id starts with ``node_id`` ("" for none)."""
        import ray

        for node in ray.nodes():
            socket_path = Path(str(node.get("RayletSocketName", "")))
            if str(node["NodeID"]).startswith(node_id) and socket_path.is_relative_to(self.root):
                return socket_path.relative_to(self.root).parts[0]
        return ""

    def stop(self) -> None:
        """Kill every node this cluster started."""
        for name in list(self.groups):
            self.kill(name)
