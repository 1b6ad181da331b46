"""What a measurement ran on: the machine, its threads and its load, for bench.json,
metrics.json and the docs' tables (throughputs mean little without them)."""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import torch


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    device = torch.device(device)
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        info["cpu"] = platform.processor()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    load = loadavg()
    if load is not None:
        info["loadavg_1_5_15"] = load
    return info


def cpu_jiffies() -> tuple[int, int] | None:
    """``(busy, total)`` jiffies of the whole machine from /proc/stat (Linux), else None."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals[:8]) - idle, sum(vals[:8])


class BusyMeter:
    """How much of the machine *other* processes used while a block ran (0 = idle box).

    ``others = (machine busy CPU time - this process's CPU time) / (wall * cpus)``."""

    def __enter__(self):
        self._j0, self._p0, self._w0 = cpu_jiffies(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        j1, p1, w1 = cpu_jiffies(), time.process_time(), time.perf_counter()
        self.others = None
        self.cpu_seconds = round(p1 - self._p0, 4)
        if self._j0 and j1 and j1[1] > self._j0[1]:
            hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            busy = (j1[0] - self._j0[0]) / hz
            ncpu = os.cpu_count() or 1
            wall = w1 - self._w0
            self.others = round(max(0.0, busy - (p1 - self._p0)) / (wall * ncpu), 3) if wall > 0 else None
        return False
