"""Process-wide settings of the command lines (snn_lab.cli.prepare_process)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Allocate and free tensors of 40 MB and 120 MB: above glibc's largest adaptive mmap
# threshold (32 MB), so by default each one is a fresh mapping whose pages fault on first
# touch (120 MB: the size of a conv network's full-resolution tensors at T=20).
_CHURN = """
import resource, sys
import snn_lab.cli as cli
print(cli.keep_freed_memory())
import torch
def churn():
    for _ in range(2):
        torch.empty(10 << 20).fill_(1.0)
    torch.empty(30 << 20).fill_(1.0)
for _ in range(8):  # glibc settles within a few rounds
    churn()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


def _churn(keep: str) -> tuple[str, int]:
    env = {**os.environ, "SNN_LAB_KEEP_MEMORY": keep}
    out = subprocess.run([sys.executable, "-c", _CHURN], env=env, capture_output=True, text=True, check=True)
    flag, faults = out.stdout.split()
    return flag, int(faults)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_memory_is_reused_without_page_faults():
    flag, faults = _churn("1")
    assert flag == "True"
    assert faults < 100, f"{faults} page faults while reusing freed 40 MB and 120 MB blocks"
    flag, faults = _churn("0")  # the allocator left alone: every block is fresh pages
    assert flag == "False"
    assert faults > 3 * (2 * 5000 + 15000), f"only {faults} page faults with glibc's defaults"


def test_command_lines_keep_freed_memory(monkeypatch):
    from snn_lab import cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    cli.prepare_process()
    assert calls == [1]
