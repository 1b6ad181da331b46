"""``sparse``: the step compiled to a C kernel specialised for spiking inputs.

Where the graph is special, and what the kernel (``snn_lab/_native/csrc/sparse_deploy.c``) does
with it:

* binary inputs -- every layer's input is 0/1, so ``W x`` is the sum of the weight rows
  of the inputs that spiked: the kernel keeps each sample's spikes as an index list and
  gather-accumulates rows (no multiplies, exact inputs; fed as ``uint8`` from the host);
* sparse spikes -- only the rows of active inputs are read (MNIST pixels spike ~12% of
  the time, hidden neurons ~10-20% in a trained tutorial network), a fraction of a GEMM;
* fused state update -- accumulate, add bias, LIF update, threshold and emit the next
  layer's index list in one pass over a 64-column block held in registers;
* encoding on the device -- with ``encode=graph`` the kernel draws the Bernoulli numbers
  itself (the counter hash of :mod:`snn_lab.deploy.encoding`, only for non-zero pixels),
  as the tutorial's chip does with its random op; the host sends images once per batch.

Compiling = lowering the network to packed, column-padded, transposed float32 weights
and building the kernel with the system C compiler (``cc``/``gcc``/``clang``, pthreads;
``-ffp-contract=off`` so ``v * decay + I`` rounds like PyTorch). :mod:`snn_lab._native`
builds it once per machine into its cache (``$SNN_LAB_CACHE``), shared by every deploy
directory and with the engine's kernels. ``threads`` workers split
the batch (the calling thread is one of them). Supported
networks: Flatten/Dropout/Linear synapses, LIF/IF/PLIF with hard reset, and a LIF or LI
output layer; anything else fails at compile time with the reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import mmap
import os
import time
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..._native import build
from ...errors import BackendUnavailableError, DeployError, UnsupportedError
from ...neurons import LI, LIF
from ..registry import register_backend
from .base import Backend, CompiledStep, num_steps

LIBRARY = "sparse_deploy"  # the kernel's name in snn_lab._native
ABI_VERSION = 7
KIND_LIF, KIND_LI = 0, 1
BLOCK = 8  # floats per vector; columns are padded to a multiple of it


def pack_weights(lib: ctypes.CDLL, w: np.ndarray, n_pad: int, out: np.ndarray | None = None) -> np.ndarray:
    """Linear weight ``w[n_out, n_in]`` -> ``W^T`` zero-padded to ``n_pad`` columns, in the
    kernel's column tiles (``csrc/common.h``): each tile's rows sit in one compact region
    (few TLB pages, L2-resident). ``lib``: from :func:`build_kernel`; ``out``: a float32
    array of ``n_in * n_pad`` to fill (else a new one)."""
    n_out, n_in = w.shape
    w = np.ascontiguousarray(w, dtype=np.float32)
    if out is None:
        out = np.empty(n_in * n_pad, dtype=np.float32)
    lib.snn_pack_weights(_ptr(w), _ptr(out), n_in, n_out, n_pad)
    return out


HUGE_PAGE = 2 << 20


def huge_page_floats(counts: list[int]) -> tuple[list[np.ndarray], Any]:
    """float32 arrays of the given sizes in one anonymous mapping aligned to 2 MB and
    advised for transparent huge pages (Linux, THP ``madvise`` or ``always``): the kernel's
    weight rows are read in random order, so where they sit in 4 KB pages -- TLB reach and
    cache-set placement, which differ from one allocation to the next -- changed its speed
    by up to a fifth between processes; on 2 MB pages every run sees one layout. Each
    array starts on a 4 KB boundary. Returns the arrays and the mapping (keep it alive)."""
    sizes = [-(-4 * n // 4096) * 4096 for n in counts]
    total = -(-sum(sizes) // HUGE_PAGE) * HUGE_PAGE
    mm = mmap.mmap(-1, total + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    off = (-addr) % HUGE_PAGE
    if hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):  # no THP here: 4 KB pages, same results
            mm.madvise(mmap.MADV_HUGEPAGE, off, total)
    arrays, at = [], off
    for n, size in zip(counts, sizes, strict=True):
        arrays.append(np.frombuffer(mm, dtype=np.float32, count=n, offset=at))
        at += size
    return arrays, mm


class _Net(ctypes.Structure):
    _fields_ = [
        ("n_layers", ctypes.c_int32),
        ("batch", ctypes.c_int32),
        ("threads", ctypes.c_int32),
        ("encode", ctypes.c_int32),
    ] + [
        (name, ctypes.c_void_p)
        for name in (
            "n_in",
            "n_out",
            "n_pad",
            "kind",
            "vth",
            "decay",
            "wt",
            "bias",
            "v",
            "list",
            "count",
            "images",
            "nz",
            "nzp",
            "nz_count",
            "keys",
        )
    ]


def find_compiler(cc: str | None = None) -> str:
    found = build.find_compiler(cc)
    if found:
        return found
    raise BackendUnavailableError(
        "backend 'sparse' builds a C kernel but no C compiler was found (tried "
        f"{cc or '$CC, cc, gcc, clang'}); install one (apt-get install gcc) or set CC"
    )


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p = ctypes.c_void_p
    lib.snn_step.argtypes = [p, p, ctypes.c_uint32, p, p]
    lib.snn_step.restype = None
    lib.snn_reset.argtypes = [p]
    lib.snn_reset.restype = None
    lib.snn_pool_create.argtypes = [ctypes.c_int]
    lib.snn_pool_create.restype = p
    lib.snn_pool_destroy.argtypes = [p]
    lib.snn_pool_destroy.restype = None
    lib.snn_pool_threads.argtypes = [p]
    lib.snn_pack_weights.argtypes = [p, p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64]
    lib.snn_pack_weights.restype = None
    lib.snn_run.argtypes = [p, p, ctypes.c_int, p, p, p, ctypes.c_int]
    lib.snn_run.restype = None
    lib.snn_add_rate.argtypes = [p, ctypes.c_int64, ctypes.c_int]
    lib.snn_add_rate.restype = ctypes.c_double
    return lib


def build_kernel(cc: str | None = None, march_native: bool = True) -> ctypes.CDLL:
    """The kernel library, built once into the shared cache (see :mod:`snn_lab._native`)."""
    find_compiler(cc)
    try:
        return _bind(build.load(LIBRARY, cc, march_native))
    except build.NativeUnavailableError as e:
        msg = f"backend 'sparse': {e}; install a working C compiler (apt-get install gcc)"
        raise BackendUnavailableError(msg) from None


def lower(model) -> list[dict]:
    """The network as a list of layer specs, or :class:`UnsupportedError` naming the problem."""
    specs = []
    n_layers = len(model.layers)
    for i, layer in enumerate(model.layers):
        if getattr(layer, "recurrent", False):  # compile_step refuses first; this guards direct use
            raise UnsupportedError(
                f"sparse backend: layer {i} is recurrent (W_rec s_(t-1)); the kernel has no recurrent "
                "synapse; use onnxruntime, aoti or torchscript"
            )
        mods = list(layer.synapse) if isinstance(layer.synapse, nn.Sequential) else [layer.synapse]
        linears = [m for m in mods if isinstance(m, nn.Linear)]
        others = [m for m in mods if not isinstance(m, (nn.Linear, nn.Flatten, nn.Dropout))]
        if others or len(linears) != 1:
            names = ", ".join(type(m).__name__ for m in (others or mods))
            raise UnsupportedError(
                f"sparse backend: layer {i} synapse has {names}; it lowers Flatten/Dropout + "
                "one Linear per layer only; use onnxruntime or torchscript"
            )
        lin = linears[0]
        n = layer.neuron
        if isinstance(n, LIF) and n.reset == "hard":
            kind, vth, decay = KIND_LIF, float(n.vth.detach()), float(n.leak().detach())
        elif isinstance(n, LI) and i == n_layers - 1:
            kind, vth, decay = KIND_LI, 0.0, float(n.decay.detach())
        else:
            raise UnsupportedError(
                f"sparse backend: layer {i} neuron {type(n).__name__}"
                f"{'(reset=' + n.reset + ')' if isinstance(n, LIF) else ''} is not supported "
                "(LIF/IF/PLIF with hard reset, LI output only); use onnxruntime or torchscript"
            )
        w = np.ascontiguousarray(lin.weight.detach().to(torch.float32).numpy())
        n_out, n_in = w.shape
        n_pad = -(-n_out // BLOCK) * BLOCK
        bias = np.zeros(n_pad, dtype=np.float32)
        if lin.bias is not None:
            bias[:n_out] = lin.bias.detach().to(torch.float32).numpy()
        specs.append(
            dict(
                n_in=n_in,
                n_out=n_out,
                n_pad=n_pad,
                kind=kind,
                w=w,
                bias=bias,
                vth=np.float32(vth),
                decay=np.float32(decay),
            )
        )
    for a, b in itertools.pairwise(specs):
        if a["n_out"] != b["n_in"]:
            raise UnsupportedError(f"sparse backend: layer sizes {a['n_out']} -> {b['n_in']} do not chain")
    if specs[0]["n_in"] != model.in_features:
        raise UnsupportedError("sparse backend: the first Linear does not read the flattened input")
    return specs


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


class SparseStep(CompiledStep):
    backend = "sparse"
    #: run_batch: every layer but the output adds its bright inputs (firing at most steps)
    #: once per weight tile and subtracts them where silent (rate-coded MNIST pixels, and
    #: the hidden neurons of a trained network that fire most of the time; the same sums in
    #: another order). False: exactly the arithmetic of stepping.
    complement: bool = True

    def __init__(self, lib: ctypes.CDLL, specs, step, batch_size, *, threads, artifacts):
        super().__init__(step, batch_size, artifacts, torch.uint8)
        self.lib = lib
        lib_path = lib._name
        if self.lib.snn_abi_version() != ABI_VERSION:
            raise DeployError(
                f"sparse kernel {lib_path} has ABI {self.lib.snn_abi_version()}, expected "
                f"{ABI_VERSION}; delete it to rebuild"
            )
        _bind(lib)
        self._pool = self.lib.snn_pool_create(max(1, int(threads))) if int(threads) > 1 else None
        self.device_rng = step.encode == "graph"
        self.specs = specs
        B, L = int(batch_size), len(specs)
        n0 = specs[0]["n_in"]
        i32 = lambda k: np.array([s[k] for s in specs], dtype=np.int32)  # noqa: E731
        keep: dict[str, Any] = {
            "n_in": i32("n_in"),
            "n_out": i32("n_out"),
            "n_pad": i32("n_pad"),
            "kind": i32("kind"),
            "vth": np.array([s["vth"] for s in specs], dtype=np.float32),
            "decay": np.array([s["decay"] for s in specs], dtype=np.float32),
            "wt": self._packed(specs),
            "bias": [np.ascontiguousarray(s["bias"]) for s in specs],
            "v": [np.zeros((B, s["n_pad"]), dtype=np.float32) for s in specs],
            "list": [np.zeros((B, s["n_in"]), dtype=np.int32) for s in specs],
            "count": [np.zeros(B, dtype=np.int32) for s in specs],
            "images": np.zeros((B, n0), dtype=np.float32),
            "nz": np.zeros((B, n0 + 8), dtype=np.int32),
            "nzp": np.zeros((B, n0 + 8), dtype=np.float32),
            "nz_count": np.zeros(B, dtype=np.int32),
            "keys": np.zeros(B, dtype=np.uint32),
        }
        self._keep = keep
        self._ptr_arrays = {
            k: (ctypes.c_void_p * L)(*[_ptr(a) for a in keep[k]]) for k in ("wt", "bias", "v", "list", "count")
        }
        net = _Net(L, B, 1, 1 if self.device_rng else 0)
        for k in ("n_in", "n_out", "n_pad", "kind", "vth", "decay", "images", "nz", "nzp", "nz_count", "keys"):
            setattr(net, k, _ptr(keep[k]))
        for k, arr in self._ptr_arrays.items():
            setattr(net, k, ctypes.cast(arr, ctypes.c_void_p).value)
        self._net = net
        self._net_ref = ctypes.byref(net)
        self._out = np.zeros((B, specs[-1]["n_out"]), dtype=np.float32)
        self.threads = int(self.lib.snn_pool_threads(self._pool)) if self._pool else 1
        self.runs_on_all_cores = self.threads >= (os.cpu_count() or 1)
        self._spikes = np.zeros(L, dtype=np.int64)  # input spikes per layer over every run_batch
        self._samples_run = 0
        self._kernel_seconds = 0.0

    def _packed(self, specs) -> list[np.ndarray]:
        """The packed weights of every layer, on transparent huge pages (see
        :func:`huge_page_floats`)."""
        arrays, self._weight_map = huge_page_floats([s["n_in"] * s["n_pad"] for s in specs])
        return [pack_weights(self.lib, s["w"], s["n_pad"], out=a) for s, a in zip(specs, arrays, strict=True)]

    # -- session ------------------------------------------------------------------------
    def reset(self, images=None, keys=None) -> None:
        if self.device_rng:
            if images is None or keys is None:
                raise DeployError("sparse backend with device encoding needs images and keys at reset")
            img = images.detach().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
            self._keep["images"][...] = img.reshape(self.batch_size, -1)
            self._keep["keys"][...] = keys
        self.lib.snn_reset(self._net_ref)

    def step(self, t, x=None) -> np.ndarray:
        if self.device_rng:
            self.lib.snn_step(self._net_ref, self._pool, int(t), None, _ptr(self._out))
            return self._out
        arr = x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if arr.dtype != np.uint8:
            arr = (arr != 0).astype(np.uint8)
        arr = np.ascontiguousarray(arr.reshape(self.batch_size, -1))
        self.lib.snn_step(self._net_ref, self._pool, int(t), _ptr(arr), _ptr(self._out))
        return self._out

    def run_batch(self, images, steps=None, keys=None, time_steps: int | None = None) -> np.ndarray:
        """All T steps of one sample batch in one kernel call (``snn_run``: layer by layer
        over the whole sequence, each weight tile reused across the steps), summed over the
        steps in step order: the floats of stepping when :attr:`complement` is off, else
        the same sums in another order (float rounding)."""
        T = num_steps(steps, time_steps)
        if T < 1:
            raise DeployError(f"run_batch needs at least one time step, got {T}")
        x = None
        if self.device_rng:
            self.reset(images, keys)
        else:
            if steps is None:
                raise DeployError("sparse backend with host encoding needs the spikes of every step")
            arr = steps.detach().numpy() if isinstance(steps, torch.Tensor) else np.asarray(steps)
            if arr.dtype != np.uint8:
                arr = (arr != 0).astype(np.uint8)
            x = np.ascontiguousarray(arr.reshape(T, self.batch_size, -1))
            self.reset()
        out = np.zeros((self.batch_size, self.specs[-1]["n_out"]), dtype=np.float32)
        t0 = time.perf_counter()
        xp = None if x is None else _ptr(x)
        self.lib.snn_run(self._net_ref, self._pool, T, xp, _ptr(out), _ptr(self._spikes), int(self.complement))
        self._kernel_seconds += time.perf_counter() - t0
        self._samples_run += self.batch_size
        return out

    def adds_per_sample(self) -> float | None:
        """Additions the kernel executed per sample so far: each input spike of a layer adds
        one weight row of ``n_pad`` floats (the synaptic accumulation; padding lanes
        included), averaged over every sample ``run_batch`` ran."""
        if not self._samples_run:
            return None
        adds = sum(int(n) * int(s["n_pad"]) for n, s in zip(self._spikes, self.specs))
        return adds / self._samples_run

    def machine_add_rate(self, seconds: float = 0.2) -> tuple[float, int]:
        """``(float additions per second, vector width)``: the most this machine ran on the
        kernel's threads, register-resident vector adds of 8 floats (the kernel's vectors)
        or 16 (AVX-512), best of three runs of about ``seconds`` each."""
        best = (0.0, 8)
        for width in (8, 16):
            iters = 1 << 18
            rate = self.lib.snn_add_rate(self._pool, iters, width)
            if rate > 0:  # size each run to about `seconds`
                iters = max(iters, int(seconds * rate / (16 * width * self.threads)))
            rate = max(self.lib.snn_add_rate(self._pool, iters, width) for _ in range(3))
            best = max(best, (rate, width))
        return best

    # -- functional form (host spikes, explicit state) -----------------------------------
    def __call__(self, x, *state):
        if self.device_rng:
            raise DeployError(
                "the sparse backend's functional form takes spikes (encode=host); with "
                "device encoding drive it with reset()/step()"
            )
        for buf, s, spec in zip(self._keep["v"], state, self.specs, strict=False):
            buf.fill(0.0)
            buf[:, : spec["n_out"]] = s.detach().numpy().reshape(self.batch_size, -1)
        out = self.step(0, x)
        new = [
            torch.from_numpy(buf[:, : spec["n_out"]].copy())
            for buf, spec in zip(self._keep["v"], self.specs, strict=True)
        ]
        return (torch.from_numpy(out.copy()), *new)

    def close(self) -> None:
        pool, self._pool = getattr(self, "_pool", None), None
        if pool:
            self.lib.snn_pool_destroy(pool)

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def describe(self) -> dict:
        """Also the work done: adds per sample, the machine's add rate (measured now, on the
        kernel's threads) and the fraction of it the kernel reached while it ran."""
        info = {**super().describe(), "threads": self.threads, "device_encoding": self.device_rng}
        adds = self.adds_per_sample()
        if adds is not None:
            rate, width = self.machine_add_rate()
            kernel_rate = adds * self._samples_run / self._kernel_seconds if self._kernel_seconds > 0 else None
            info.update(
                {
                    "adds_per_sample": round(adds),
                    "samples_run": self._samples_run,
                    "kernel_seconds": round(self._kernel_seconds, 4),
                    "kernel_adds_per_s": None if kernel_rate is None else round(kernel_rate),
                    "machine_adds_per_s": round(rate),
                    "machine_add_rate_method": f"{width}-float vector adds in registers (16 chains; 8 and 16 "
                    f"wide tried), on the kernel's {self.threads} thread(s) at once, best of 3 (snn_add_rate)",
                    "kernel_fraction_of_machine_add_rate": None
                    if kernel_rate is None or rate <= 0
                    else round(kernel_rate / rate, 4),
                }
            )
        return info


@register_backend("sparse")
class SparseBackend(Backend):
    description = "C kernel for binary sparse spikes: gather-accumulate, fused LIF, in-kernel encoding"
    preferred_encode = "graph"  # draws made in the kernel
    default_options: ClassVar[dict[str, Any]] = {"threads": 2, "cc": None, "march_native": True}

    def check_available(self) -> None:
        find_compiler(None)

    def check_model(self, model) -> None:
        lower(model)

    def compile(self, step, example_inputs, out_dir, **options):
        opts = self.options(options)
        if step.model.encoder is not None and not getattr(step.model.encoder, "binary", True):
            raise UnsupportedError("sparse backend: the encoder does not emit binary spikes; use onnxruntime")
        specs = lower(step.model)
        lib = build_kernel(opts["cc"], bool(opts["march_native"]))
        batch = int(example_inputs[0].shape[0])
        return SparseStep(lib, specs, step, batch, threads=int(opts["threads"] or 1), artifacts={"kernel": lib._name})
