"""Build-or-load of the C kernel libraries in ``csrc/`` (standard library only).

One cache directory (``$SNN_LAB_CACHE``, default ``~/.cache/snn_lab``) holds every
library, named by a key over everything that can change the machine code: the sources
and headers, the compiler's path and version, the flags, the CPU's feature flags (the
builds use ``-march=native``) and :data:`ABI_VERSION`. A library is compiled in a
temporary directory and moved into place with ``os.replace``, so concurrent processes
(and machines sharing a home directory) never load a half-written file.

Every library is optional to its caller: :func:`load` raises :class:`NativeUnavailableError`
saying why (no compiler, a compile error, ``SNN_LAB_NATIVE=0``), and :func:`status` records
what happened. For a library with a PyTorch fallback one warning per process says that
the fallback runs.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ABI_VERSION",
    "LIBRARIES",
    "Library",
    "NativeUnavailableError",
    "cache_dir",
    "cache_key",
    "describe",
    "disabled",
    "find_compiler",
    "load",
    "reset",
    "status",
]

#: bump when the build layout or a library's calling convention changes: old caches are ignored
ABI_VERSION = 1
CSRC = Path(__file__).with_name("csrc")
log = logging.getLogger("snn_lab.native")

# -ffp-contract=off and no fast-math: the kernels must round like the PyTorch operations
# they stand in for (bit-identical spikes), so no fused multiply-add, no reassociation.
_COMMON = ("-O3", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared")
_NATIVE_ARCH = "-march=native"


@dataclass(frozen=True)
class Library:
    """How to build one shared library. ``attempts``: flag sets tried in order (the first
    that compiles wins); ``fallback``: what runs when it is unavailable (``None``: the
    caller reports the error itself, nothing is logged and ``SNN_LAB_NATIVE`` does not apply)."""

    sources: tuple[str, ...]
    attempts: tuple[tuple[str, ...], ...]
    libs: tuple[str, ...] = ()
    fallback: str | None = None


LIBRARIES: dict[str, Library] = {
    # OpenMP; a compiler without it still gets a single-threaded build
    "engine": Library(
        ("engine.c",),
        ((*_COMMON, "-std=gnu99", _NATIVE_ARCH, "-fopenmp"), (*_COMMON, "-std=gnu99", _NATIVE_ARCH)),
        ("-lm",),
        fallback="PyTorch",
    ),
    # pthreads (its own worker pool); -march=native may be refused by a cross compiler
    "sparse_deploy": Library(
        ("sparse_deploy.c",), ((*_COMMON, "-std=c11", "-pthread", _NATIVE_ARCH), (*_COMMON, "-std=c11", "-pthread"))
    ),
}


class NativeUnavailableError(RuntimeError):
    """A kernel library cannot be built or loaded here; the message says why."""


def disabled() -> bool:
    """``SNN_LAB_NATIVE=0`` (or false/no/off) turns off the libraries that have a fallback."""
    return os.environ.get("SNN_LAB_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


def cache_dir() -> Path:
    return Path(os.environ.get("SNN_LAB_CACHE") or Path.home() / ".cache" / "snn_lab")


def find_compiler(cc: str | None = None) -> str | None:
    """Absolute path of ``cc`` if given, else of the first of ``$CC``, cc, gcc, clang found."""
    for name in [cc] if cc else [os.environ.get("CC"), "cc", "gcc", "clang"]:
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _compiler_version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], check=False, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _attempts(lib: Library, march_native: bool) -> list[tuple[str, ...]]:
    if march_native:
        return list(lib.attempts)
    seen: list[tuple[str, ...]] = []
    for flags in lib.attempts:
        stripped = tuple(f for f in flags if f != _NATIVE_ARCH)
        if stripped not in seen:
            seen.append(stripped)
    return seen


def _inputs(name: str) -> list[Path]:
    """The files a library is built from: its sources and every header."""
    return [CSRC / s for s in LIBRARIES[name].sources] + sorted(CSRC.glob("*.h"))


def cache_key(name: str, cc: str, march_native: bool = True, version: str | None = None) -> str:
    """Hex digest naming the library ``name`` built by compiler ``cc`` on this machine."""
    lib = LIBRARIES[name]
    h = hashlib.sha256(f"snn_lab native ABI {ABI_VERSION}\0{name}\0".encode())
    for path in _inputs(name):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    version = _compiler_version(cc) if version is None else version
    for part in (cc, version, repr(_attempts(lib, march_native)), repr(lib.libs), _cpu_flags()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def _compile(name: str, cc: str, march_native: bool, target: Path) -> None:
    lib = LIBRARIES[name]
    sources = [str(CSRC / s) for s in lib.sources]
    errors = []
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".build-{name}-") as tmp:
        out = Path(tmp) / target.name
        for flags in _attempts(lib, march_native):
            try:
                proc = subprocess.run(
                    [cc, *flags, *sources, "-o", str(out), *lib.libs],
                    check=False,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
            except (OSError, subprocess.SubprocessError) as e:
                errors.append(f"{type(e).__name__}: {e}")
                continue
            if proc.returncode == 0 and out.is_file():
                os.replace(out, target)  # atomic: readers see the old name or the whole file
                return
            err = proc.stderr.strip().splitlines()
            errors.append(err[-1] if err else f"exit {proc.returncode}")
    raise NativeUnavailableError(f"{cc} could not build the {name} kernels ({errors[-1]})")


_lock = threading.Lock()
_loaded: dict[tuple[str, str | None, bool], ctypes.CDLL | str] = {}  # the library, or why not
_status: dict[str, dict[str, Any]] = {}
_warned: set[str] = set()


def _record(name: str, lib: Library, path: Path | None, error: str | None, compiled: bool = False) -> None:
    _status[name] = {
        "kernels": "native" if error is None else (lib.fallback or "unavailable").lower(),
        "library": str(path) if path else None,
        "error": error,
        "disabled": lib.fallback is not None and disabled(),
        "compiled": compiled,
    }
    if error is not None and lib.fallback is not None and name not in _warned:
        _warned.add(name)
        log.warning("native %s kernels unavailable (%s); the %s path runs instead", name, error, lib.fallback)


def _build_or_load(name: str, cc: str | None, march_native: bool) -> ctypes.CDLL:
    lib = LIBRARIES[name]
    missing = [str(p) for p in _inputs(name) if not p.is_file()]
    if missing:
        raise NativeUnavailableError(f"kernel source {missing[0]} is missing; reinstall snn_lab")
    compiler = find_compiler(cc)
    if compiler is None:
        raise NativeUnavailableError(
            f"no C compiler found (tried {cc or '$CC, cc, gcc, clang'}); install one (apt-get install gcc) or set CC"
        )
    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NativeUnavailableError(f"cache directory {root} is not writable ({e}); set SNN_LAB_CACHE") from e
    target = root / f"libsnn_{name}-{cache_key(name, compiler, march_native)[:16]}.so"
    compiled = not target.is_file()
    if compiled:
        _compile(name, compiler, march_native, target)
    try:
        handle = ctypes.CDLL(str(target))
    except OSError as e:
        raise NativeUnavailableError(f"cannot load {target} ({e}); delete it to rebuild") from e
    _record(name, lib, target, None, compiled)
    return handle


def load(name: str, cc: str | None = None, march_native: bool = True) -> ctypes.CDLL:
    """The library ``name`` (a key of :data:`LIBRARIES`), built on first use, then loaded from
    the cache; raises :class:`NativeUnavailableError`. The outcome is kept for the process:
    later calls neither rebuild nor retry."""
    if name not in LIBRARIES:
        raise KeyError(f"unknown native library {name!r}; known: {', '.join(LIBRARIES)}")
    key = (name, cc, march_native)
    with _lock:
        if LIBRARIES[name].fallback is not None and disabled():  # checked per call: the switch may flip
            err = NativeUnavailableError("disabled by SNN_LAB_NATIVE=0")
            _record(name, LIBRARIES[name], None, str(err))
            raise err
        if key not in _loaded:
            try:
                _loaded[key] = _build_or_load(name, cc, march_native)
            except NativeUnavailableError as e:
                _loaded[key] = str(e)
            except Exception as e:  # noqa: BLE001 -- a sandbox, a full disk...: still only a missing kernel
                _loaded[key] = f"{type(e).__name__}: {e}"
            if isinstance(_loaded[key], str):
                _record(name, LIBRARIES[name], None, str(_loaded[key]))
        result = _loaded[key]
    if isinstance(result, str):  # a fresh exception each time: a re-raised one would grow its traceback
        raise NativeUnavailableError(result)
    return result


def status(name: str = "engine") -> dict[str, Any]:
    """What happened to library ``name`` in this process: ``kernels`` ("native", the
    fallback's name such as "pytorch", "unavailable", or "not loaded" before the first
    :func:`load`), ``library`` (path or None), ``error`` (why not, or None), ``disabled``
    (``SNN_LAB_NATIVE=0``), ``compiled`` (built in this process rather than found in the cache)."""
    with _lock:
        if name in _status:
            return dict(_status[name])
    lib = LIBRARIES[name]
    return {
        "kernels": "not loaded",
        "library": None,
        "error": None,
        "disabled": lib.fallback is not None and disabled(),
        "compiled": False,
    }


def describe() -> dict[str, dict[str, Any]]:
    """:func:`status` of every library, for run records (``metrics.json``, ``deploy_report.json``)."""
    return {name: status(name) for name in LIBRARIES}


def reset() -> None:
    """Forget this process's outcomes and warnings (tests; a changed ``CC`` or cache). Libraries
    already loaded stay mapped."""
    with _lock:
        _loaded.clear()
        _status.clear()
        _warned.clear()
