"""Optional native CPU kernels: compiled from ``_csrc.py`` on first use, loaded by ctypes.

Nothing depends on them: without a C compiler (or with ``SNN_LAB_NATIVE=0``) every
caller falls back to the pure-PyTorch path, which gives the same spikes. The shared
object is cached under ``$SNN_LAB_CACHE`` (default ``~/.cache/snn_lab``), keyed by the
source, the compiler and the CPU's feature flags, and written atomically, so concurrent
processes and machines sharing a home directory are safe.

All functions take contiguous float32 CPU tensors; the wrappers check this.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from ._csrc import SOURCE

__all__ = ["available", "status", "csr", "spmm_fwd", "spmm_wgrad", "lif_fwd", "lif_bwd",
           "SURROGATE_KINDS"]

#: surrogate names the C backward knows (index = kind code)
SURROGATE_KINDS = {"rectangle": 0, "triangle": 1, "sigmoid": 2, "atan": 3}

FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-std=gnu99",
         "-shared", "-fPIC"]

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_state = {"tried": False, "error": None, "path": None}


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    import platform

    return platform.machine() + platform.processor()


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cache_dir() -> Path:
    root = os.environ.get("SNN_LAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "snn_lab")
    return Path(root)


def _build() -> ctypes.CDLL:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\n".join([SOURCE, cc, version, " ".join(FLAGS), _cpu_flags()]).encode()).hexdigest()[:16]
    out_dir = _cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"snn_kernels_{key}.so"
    if not target.exists():
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            src = Path(tmp) / "kernels.c"
            src.write_text(SOURCE)
            so = Path(tmp) / "kernels.so"
            for flags in (FLAGS, [f for f in FLAGS if f != "-fopenmp"]):  # then single-threaded
                proc = subprocess.run([cc, *flags, str(src), "-o", str(so), "-lm"],
                                      capture_output=True, text=True, timeout=300)
                if proc.returncode == 0:
                    break
            else:
                raise RuntimeError(f"compiling the engine kernels failed:\n{proc.stderr[-2000:]}")
            os.replace(so, target)
    lib = ctypes.CDLL(str(target))
    i64, i32, f32, p = ctypes.c_int64, ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    lib.snn_csr_count.argtypes = [p, i64, i64, p, i32]
    lib.snn_csr_count.restype = i64
    lib.snn_csr_fill.argtypes = [p, i64, i64, p, p, i32]
    lib.snn_pack_tiles.argtypes = [p, p, i64, i64, i32]
    lib.snn_unpack_tiles.argtypes = [p, p, i64, i64, i32]
    lib.snn_pack_tiles_t.argtypes = [p, p, i64, i64, i32]
    lib.snn_spmm_fwd.argtypes = [p, p, p, i64, p, p, i64, i64, i32]
    lib.snn_spmm_wgrad.argtypes = [p, p, p, p, i64, i64, i64, i32]
    lib.snn_lif_fwd.argtypes = [p, p, p, p, p, i64, i64, f32, f32, i32, i32]
    lib.snn_lif_bwd.argtypes = [p, p, p, p, i64, i64, f32, f32, i32, i32, i32, f32, i32]
    lib.snn_tm_count.argtypes = [p, i64, i64, i64, p, p, p, i32]
    lib.snn_tm_count.restype = i64
    lib.snn_tm_fill.argtypes = [p, i64, i64, p, p, p, i32]
    lib.snn_tm_fwd.argtypes = [p, p, p, p, i64, p, p, i64, i64, i64, i32]
    lib.snn_tm_wgrad.argtypes = [p, p, p, p, p, i64, i64, i64, i64, i32]
    for f in ("snn_tm_fill", "snn_tm_fwd", "snn_tm_wgrad", "snn_csr_fill", "snn_pack_tiles", "snn_pack_tiles_t", "snn_unpack_tiles", "snn_spmm_fwd", "snn_spmm_wgrad", "snn_lif_fwd", "snn_lif_bwd"):
        getattr(lib, f).restype = None
    _state["path"] = str(target)
    return lib


def available() -> bool:
    """True when the kernels are built and loaded (builds them on the first call)."""
    global _lib
    if _lib is not None:
        return True
    if os.environ.get("SNN_LAB_NATIVE", "1").lower() in ("0", "false", "no", "off"):
        return False
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                _lib = _build()
            except Exception as e:  # no compiler, sandbox, read-only cache...: fall back
                _state["error"] = f"{type(e).__name__}: {e}"
    return _lib is not None


def status() -> dict:
    """What the native backend is doing, for logs and ``bench.json``."""
    ok = available()
    return {"available": ok, "path": _state["path"], "error": _state["error"],
            "disabled": os.environ.get("SNN_LAB_NATIVE", "1").lower() in ("0", "false", "no", "off")}


def _lib_or_raise() -> ctypes.CDLL:
    if not available():
        raise RuntimeError(f"native kernels unavailable: {_state['error'] or 'disabled'}")
    return _lib


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _check(*ts: torch.Tensor | None) -> None:
    for t in ts:
        if t is not None and (t.device.type != "cpu" or not t.is_contiguous()):
            raise ValueError("native kernels take contiguous CPU tensors")


def _nt(work: int = 1 << 30, units: int = 1 << 30) -> int:
    """Threads for a kernel doing ``work`` float operations split over ``units``
    independent pieces: one below ~256k (waking a thread costs more than it saves there,
    and far more on an oversubscribed machine), never more than there are pieces."""
    if work < (1 << 18):
        return 1
    return max(1, min(torch.get_num_threads(), units))


def csr(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rows of a binary float32 matrix ``X[M, K]`` as ``(row_ptr int64[M+1], col int32[nnz])``;
    ``None`` when ``X`` has an entry other than 0 and 1."""
    _check(X)
    M, K = X.shape
    row_ptr = torch.empty(M + 1, dtype=torch.int64)
    nt = _nt(M * K, M)
    nnz = _lib_or_raise().snn_csr_count(_ptr(X), M, K, _ptr(row_ptr), nt)
    if nnz < 0:
        return None
    col = torch.empty(int(nnz) + 1, dtype=torch.int32)  # one spare slot (see _csrc)
    _lib_or_raise().snn_csr_fill(_ptr(X), M, K, _ptr(row_ptr), _ptr(col), nt)
    return row_ptr, col


TILE = 64  # must match _csrc.py


def pack_tiles(A: torch.Tensor) -> torch.Tensor:
    """``A[K, N]`` -> column tiles ``[ceil(N / TILE), K, TILE]`` (zero-padded)."""
    _check(A)
    K, N = A.shape
    Ap = torch.empty((N + TILE - 1) // TILE, K, TILE, dtype=torch.float32)
    _lib_or_raise().snn_pack_tiles(_ptr(A), _ptr(Ap), K, N, _nt(K * N, K))
    return Ap


def pack_weight(W: torch.Tensor) -> torch.Tensor:
    """``pack_tiles(W.t())`` for a Linear weight ``W[N, K]``, without the transpose copy."""
    _check(W)
    N, K = W.shape
    Ap = torch.empty((N + TILE - 1) // TILE, K, TILE, dtype=torch.float32)
    _lib_or_raise().snn_pack_tiles_t(_ptr(W), _ptr(Ap), K, N, _nt(K * N, (N + TILE - 1) // TILE))
    return Ap


def spmm_fwd(row_ptr, col, Wp: torch.Tensor, bias: torch.Tensor | None, M: int, N: int) -> torch.Tensor:
    """``X @ W^T + bias`` from X's rows; ``Wp = pack_tiles(W^T)``."""
    _check(Wp, bias)
    K = Wp.shape[1]
    out = torch.empty(M, N, dtype=torch.float32)
    work = (col.numel() + M) * N
    _lib_or_raise().snn_spmm_fwd(_ptr(row_ptr), _ptr(col), _ptr(Wp), K, _ptr(bias), _ptr(out), M, N, _nt(work, M))
    return out


def spmm_wgrad(row_ptr, col, G: torch.Tensor, K: int) -> torch.Tensor:
    """``X^T @ G`` (``[K, N]``) from X's rows."""
    _check(G)
    M, N = G.shape
    dWp = torch.zeros((N + TILE - 1) // TILE, K, TILE, dtype=torch.float32)
    _lib_or_raise().snn_spmm_wgrad(_ptr(row_ptr), _ptr(col), _ptr(G), _ptr(dWp), K, M, N,
                        _nt((col.numel() + M) * N, (N + TILE - 1) // TILE))
    dWT = torch.empty(K, N, dtype=torch.float32)
    _lib_or_raise().snn_unpack_tiles(_ptr(dWp), _ptr(dWT), K, N, _nt(K * N, K))
    return dWT


MAX_T = 64  # time steps a temporal mask holds


def tmask(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None:
    """Spike train ``X[T, B, K]`` (binary float32, ``T <= 64``) grouped per sample:
    ``(row_ptr int64[B+1], cols int32[P], masks int64[P], n_spikes)`` with one entry per
    (sample, input) that spikes, bit ``t`` of its mask = ``X[t, b, k]``; ``None`` when
    ``X`` is not binary."""
    _check(X)
    T, B, K = X.shape
    if T > MAX_T:
        raise ValueError(f"temporal masks hold at most {MAX_T} steps, got T={T}")
    Mk = torch.empty(B, K, dtype=torch.int64)
    row_ptr = torch.empty(B + 1, dtype=torch.int64)
    nspk = ctypes.c_int64(0)
    nt = _nt(T * B * K, B)
    npairs = _lib_or_raise().snn_tm_count(_ptr(X), T, B, K, _ptr(Mk), _ptr(row_ptr), ctypes.byref(nspk), nt)
    if npairs < 0:
        return None
    cols = torch.empty(max(int(npairs), 1), dtype=torch.int32)
    masks = torch.empty(max(int(npairs), 1), dtype=torch.int64)
    _lib_or_raise().snn_tm_fill(_ptr(Mk), B, K, _ptr(row_ptr), _ptr(cols), _ptr(masks), nt)
    return row_ptr, cols, masks, int(nspk.value)


def tm_fwd(tm, Wp: torch.Tensor, bias: torch.Tensor | None, T: int, B: int, N: int) -> torch.Tensor:
    """``X @ W^T + bias`` as ``[T*B, N]`` from :func:`tmask` pairs; ``Wp = pack_tiles(W^T)``."""
    _check(Wp, bias)
    row_ptr, cols, masks = tm[:3]
    K = Wp.shape[1]
    out = torch.empty(T * B, N, dtype=torch.float32)
    _lib_or_raise().snn_tm_fwd(_ptr(row_ptr), _ptr(cols), _ptr(masks), _ptr(Wp), K, _ptr(bias), _ptr(out),
                    T, B, N, _nt(cols.numel() * N * 4, B))
    return out


def tm_wgrad(tm, G: torch.Tensor, T: int, B: int, K: int) -> torch.Tensor:
    """``X^T @ G`` (``[K, N]``) from :func:`tmask` pairs; ``G[T*B, N]``."""
    _check(G)
    row_ptr, cols, masks = tm[:3]
    N = G.shape[1]
    dWp = torch.zeros((N + TILE - 1) // TILE, K, TILE, dtype=torch.float32)
    _lib_or_raise().snn_tm_wgrad(_ptr(row_ptr), _ptr(cols), _ptr(masks), _ptr(G), _ptr(dWp), K, T, B, N,
                      _nt(cols.numel() * N * 4, (N + TILE - 1) // TILE))
    dWT = torch.empty(K, N, dtype=torch.float32)
    _lib_or_raise().snn_unpack_tiles(_ptr(dWp), _ptr(dWT), K, N, _nt(K * N, K))
    return dWT


def lif_fwd(x: torch.Tensor, v0: torch.Tensor, vth: float, decay: float, hard: bool,
            keep_v: bool) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """``(V[T, ...] or None, spikes[T, ...], v_last)`` for currents ``x[T, ...]``."""
    _check(x, v0)
    T = x.shape[0]
    P = x[0].numel()
    V = torch.empty_like(x) if keep_v else None
    S = torch.empty_like(x)
    vlast = torch.empty_like(v0)
    _lib_or_raise().snn_lif_fwd(_ptr(x), _ptr(v0), _ptr(V), _ptr(S), _ptr(vlast), T, P, vth, decay,
                     int(hard), _nt(T * P * 4, P // 8))
    return V, S, vlast


def lif_bwd(V: torch.Tensor, gS: torch.Tensor | None, gvlast: torch.Tensor | None, vth: float,
            decay: float, hard: bool, detach: bool, kind: int, width: float) -> torch.Tensor:
    """``dL/dx`` (= ``dL/dV``) of :func:`lif_fwd`."""
    _check(V, gS, gvlast)
    T = V.shape[0]
    P = V[0].numel()
    G = torch.empty_like(V)
    _lib_or_raise().snn_lif_bwd(_ptr(V), _ptr(gS), _ptr(gvlast), _ptr(G), T, P, vth, decay, int(hard),
                     int(detach), kind, width, _nt(T * P * 8, P // 8))
    return G
