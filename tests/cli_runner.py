"""Run ``python -m <module> <args>`` for the tests, each command in its own process, without
paying the interpreter start and the import of torch + Lightning (several seconds) per call.

A *zygote* process (this file run as a script, one per test worker) imports the CLI modules
once, then forks one child per command. The child takes the command's working directory,
environment, argv and ``sys.path[0]`` (the cwd, as ``python -m`` sets it), writes to its
own stdout/stderr files (file descriptors 1 and 2, so C-level output is caught too), runs
the module as ``__main__`` with :func:`runpy.run_module`, runs the ``atexit`` handlers and
exits with the command's status: exit codes, output and files are those of a fresh
``python -m`` process; only the already-imported modules are shared. Nothing runs in the
zygote after the imports (no threads, no torch ops), so the fork starts from a clean state.

``SNN_LAB_TEST_FORK=0`` runs every command in a fresh interpreter instead (plain
:func:`subprocess.run`); tests/test_packaging.py and the documented-command tests always
start fresh interpreters, so an import-time fault cannot hide behind the zygote.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# what `python -m snn_lab.{train,deploy,bench}` imports before it parses its arguments
PRELOAD = ("snn_lab.cli.train_entry", "snn_lab.cli.train_app", "snn_lab.cli.deploy_app", "snn_lab.cli.bench_app")


class Zygote:
    """The test side: starts the zygote on first use, sends it one command at a time."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.buffer = b""

    def _start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, __file__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=self.env,
                bufsize=0,
            )
            self.buffer = b""
            ready = self._line(None)
            if ready != "ready":
                raise RuntimeError(f"the CLI zygote did not start: {ready!r}")
        return self.proc

    def _line(self, timeout: float | None) -> str | None:
        """The zygote's next reply line; ``None`` when ``timeout`` seconds pass first."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            if not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("the CLI zygote exited")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode().strip()

    def run(self, module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float):
        proc = self._start()
        with tempfile.TemporaryDirectory(prefix="snn_lab_cli_") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {"module": module, "args": args, "cwd": str(cwd), "env": env, "out": str(out), "err": str(err)}
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(request) + "\n").encode())
            pid = int(json.loads(self._line(None) or "")["pid"])
            reply = self._line(timeout)
            timed_out = reply is None
            if reply is None:
                with contextlib.suppress(ProcessLookupError):  # the command and whatever it started
                    os.killpg(pid, signal.SIGKILL)
                reply = self._line(None)
            returncode = int(json.loads(reply or "")["returncode"])
            result = subprocess.CompletedProcess(
                [sys.executable, "-m", module, *args],
                returncode,
                out.read_text(errors="replace"),
                err.read_text(errors="replace"),
            )
        if timed_out:
            raise subprocess.TimeoutExpired(result.args, timeout, result.stdout, result.stderr)
        return result

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


_ZYGOTE: Zygote | None = None


def _import_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"}


def run_module(module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float, fresh: bool = False):
    """``python -m module args`` in ``cwd`` with exactly ``env``: a subprocess.CompletedProcess
    (``fresh``: always in a new interpreter)."""
    global _ZYGOTE
    if fresh or os.environ.get("SNN_LAB_TEST_FORK", "1") == "0":
        return subprocess.run(
            [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    # the zygote imported under its environment; a command whose environment differs in
    # more than pytest's per-test variable gets a zygote started under its own
    if _ZYGOTE is None or _import_env(_ZYGOTE.env) != _import_env(env):
        if _ZYGOTE is not None:
            _ZYGOTE.close()
        _ZYGOTE = Zygote(env)
    return _ZYGOTE.run(module, args, cwd, env, timeout)


# -- the zygote ---------------------------------------------------------------------------


def _child(request: dict) -> None:
    """In the forked child: become ``python -m module args`` and never return."""
    import atexit
    import runpy
    import traceback

    code = 1
    try:
        os.setpgid(0, 0)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, request["out"]), (2, request["err"])):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        sys.path[0] = os.getcwd()  # what `python -m` puts first
        extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[1:1] = [p for p in extra if p not in sys.path]
        sys.argv = ["-m", *request["args"]]
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _serve() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # what snn_lab.cli.prepare_process sets
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    _serve()
