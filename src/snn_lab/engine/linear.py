"""``Linear`` on spike inputs: one autograd node per layer over all ``T*B`` rows.

The input ``x[M, K]`` of a spiking layer is binary, and usually sparse. Strategies:

``dense``   ``F.linear`` (BLAS). The input is saved for the weight gradient as ``bool``
            (1 byte per entry instead of 4) when it is known to be binary.
``sparse``  gather-accumulate (CPU native kernels): each output row is the sum of the
            weight columns its spikes select, and the weight gradient scatters each
            output-gradient row into the columns its spikes select. Given ``T``, a
            sample's spikes are grouped per input over time (one 64-bit mask per
            (sample, input) that fires): rate-coded inputs fire the same input at many
            steps, so each weight row is read once per group, and an input firing at
            most steps is handled by its complement. Only the index is saved (int32 +
            int64 per group, or int32 per spike without ``T``).
``bf16x3``  binary inputs are exact in bfloat16, so ``x @ W^T`` equals the sum of three
            bf16 GEMMs against ``W = W1 + W2 + W3`` (each ``Wi`` bf16, 24 bits together)
            accumulated in fp32 -- tensor-core speed at fp32 accuracy on GPUs. The weight
            gradient splits ``G`` the same way. (CUDA; elsewhere it is emulated and slow.)
``auto``    ``sparse`` when the native kernels are loaded, the input is binary, its
            density is at most ``sparse_max_density`` and the layer has more than
            ``DENSE_MAX_OUT`` outputs; ``dense`` otherwise (a readout's few outputs fill
            less than one column tile of the sparse kernels, and BLAS ran them faster in
            every bench's per-layer timing).

:func:`spike_linear_lif` runs a LIF layer's scan in the same autograd node as its
``Linear``: on the sparse temporal path inside the gather kernel, as each current row is
summed (the currents ``[T*B, N]`` are never stored and read back), elsewhere on the
product's output; the same floats and gradients as the two run one after the other.

Exactness: ``dense`` runs the per-step path's products as one GEMM over all ``T*B`` rows:
bit-identical spikes where BLAS rounds a row independently of the row count (the AMD
machines of docs/BENCHMARKS.md; one Intel Xeon's MKL rounded a 1,280-row product with
784 inputs differently from 64-row ones, so there a spike can flip as below). ``sparse``
and ``bf16x3`` sum the same terms in another order, so currents differ by float rounding
(~1e-7 relative) and a spike can flip only when a membrane lands within that distance of
the threshold; see docs/BENCHMARKS.md.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import native
from .options import BERNOULLI_RNGS, STRATEGIES, native_runs

DENSE_MAX_OUT = 32  # auto: layers with at most this many outputs run dense


class LIFSpec(NamedTuple):
    """A LIF scan run by the synapse's own autograd node on its output (see
    :func:`spike_linear_lif`): fixed scalar parameters, a zero initial membrane.
    ``surrogate`` is a kind of ``native.SURROGATE_KINDS``, ``width`` its width."""

    vth: float
    decay: float
    hard: bool
    detach: bool
    surrogate: int
    width: float


def _scan(out: torch.Tensor, lif: LIFSpec, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(V, S)`` ``[T*B, N]`` of the native LIF scan over the currents ``out`` ``[T*B, N]``."""
    B, N = out.shape[0] // T, out.shape[1]
    V, S, _ = native.lif_fwd(out.view(T, B, N), torch.zeros(B, N), lif.vth, lif.decay, lif.hard, keep_v=True)
    assert V is not None
    return V.view(T * B, N), S.view(T * B, N)


def _scan_grad(V: torch.Tensor, g: torch.Tensor, lif: LIFSpec, T: int) -> torch.Tensor:
    """``dL/dcurrent`` ``[T*B, N]`` from ``dL/dspikes`` ``g`` through the scan that gave ``V``."""
    B, N = V.shape[0] // T, V.shape[1]
    G, _ = native.lif_bwd(
        V.view(T, B, N),
        g.contiguous().view(T, B, N),
        None,
        lif.vth,
        lif.decay,
        lif.hard,
        lif.detach,
        lif.surrogate,
        lif.width,
    )
    return G.view(T * B, N)


def _tm_forward(tm, wp, b, T: int, B: int, N: int, lif: LIFSpec | None):
    """``(out, V)``: the temporal gather's ``[T*B, N]`` output and None, or with ``lif``
    where the kernel can scan in its epilogue, the spikes and their membranes."""
    fused = None if lif is None else native.tm_fwd_lif(tm, wp, b, T, B, N, *lif[:3])
    if fused is not None:
        V, S = fused
        return S, V
    return native.tm_fwd(tm, wp, b, T, B, N), None


def auto_sparse(density: float, out_features: int, max_density: float) -> bool:
    """Whether ``matmul=auto`` takes the sparse kernels for a binary input of this density
    (the native kernels being loaded)."""
    return out_features > DENSE_MAX_OUT and density <= max_density


def is_binary(x: torch.Tensor) -> bool:
    """True when every entry of ``x`` is 0 or 1 (one pass; a host sync on GPU)."""
    return bool(((x == 0) | (x == 1)).all())


_PACKED: dict[int, tuple] = {}  # id(weight) -> (key, packed); evicted when weight dies


def packed_weight(weight: torch.Tensor) -> torch.Tensor:
    """``W^T`` in the native kernels' tile layout, cached per weight tensor until it
    changes (its version counter moves on every in-place optimizer update), so
    inference packs once and training once per step."""
    key = (weight._version, weight.data_ptr(), tuple(weight.shape))
    hit = _PACKED.get(id(weight))
    if hit is not None and hit[0] == key and hit[2]() is weight:
        return hit[1]
    wp = native.pack_weight(weight.detach().contiguous())
    if hit is None:
        weakref.finalize(weight, _PACKED.pop, id(weight), None)
    _PACKED[id(weight)] = (key, wp, weakref.ref(weight))
    return wp


def _split3(a: torch.Tensor) -> list[torch.Tensor]:
    """``a`` (fp32) as three bf16 tensors whose fp32 sum is ``a`` to ~24 bits."""
    hi = a.to(torch.bfloat16)
    r = a - hi.float()
    mid = r.to(torch.bfloat16)
    lo = (r - mid.float()).to(torch.bfloat16)
    return [hi, mid, lo]


def _mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """bf16 x bf16 -> fp32 product (fp32 accumulation on CUDA; emulated elsewhere)."""
    if a.is_cuda:
        return torch.mm(a, b, out_dtype=torch.float32)
    return a.float() @ b.float()


def _bf16x3_mm(x_bin: torch.Tensor, w_t_pieces: list[torch.Tensor]) -> torch.Tensor:
    xb = x_bin.to(torch.bfloat16)
    out = _mm_f32(xb, w_t_pieces[0])
    for w in w_t_pieces[1:]:
        out = out + _mm_f32(xb, w)
    return out


class _SpikeLinear(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x,
        weight,
        bias,
        strategy: str,
        binary: bool | None,
        max_density: float,
        time_steps: int | None,
        lif: LIFSpec | None = None,
    ):
        M, K = x.shape
        N = weight.shape[0]
        need_w = ctx.needs_input_grad[1]
        # spike index for the sparse kernels: ("tm", native.tmask(...)) or ("csr", native.csr(...))
        idx: tuple[str, tuple] | None = None
        use_native = (
            strategy in ("auto", "sparse")
            and binary is not False
            and native_runs(x, weight)
            and not (strategy == "auto" and N <= DENSE_MAX_OUT)
        )
        if use_native:
            xc = x.contiguous()
            T = time_steps
            if T is not None and 1 <= T <= native.MAX_T and M % T == 0:
                tm = native.tmask(xc.view(T, M // T, K))
                idx = None if tm is None else ("tm", tm)
                nspikes = None if tm is None else tm[3]
            else:
                csr = native.csr(xc)
                idx = None if csr is None else ("csr", csr)
                nspikes = None if csr is None else csr[1].numel() - 1
            binary = idx is not None
            if idx is not None and strategy == "auto" and not auto_sparse(nspikes / max(M * K, 1), N, max_density):
                idx = None  # dense GEMM; saving the bool input is as lean
        V = None  # the membranes, where the kernel ran the scan
        if idx is not None:
            wp = packed_weight(weight)
            b = None if bias is None else bias.detach().contiguous()
            kind, data = idx
            saved_x: tuple[torch.Tensor | None, ...]
            if kind == "tm":
                assert time_steps is not None  # a temporal index is built only when T is given
                out, V = _tm_forward(data, wp, b, time_steps, M // time_steps, N, lif)
                saved_x = data[:3] if need_w else (None, None, None)
            else:
                out = native.spmm_fwd(data[0], data[1], wp, b, M, N)
                saved_x = (*data, None) if need_w else (None, None, None)
            ctx.mode = kind
        else:
            if binary is None and (need_w or strategy == "bf16x3"):
                binary = is_binary(x)
            if strategy == "bf16x3" and binary:
                out = _bf16x3_mm(x, [p.t() for p in _split3(weight.detach())])
                if bias is not None:
                    out = out + bias
                ctx.mode = "bf16x3"
            else:
                out = F.linear(x, weight, bias)
                ctx.mode = "dense"
            saved_x = (x.to(torch.bool) if binary else x, None, None) if need_w else (None, None, None)
        if lif is not None:
            assert time_steps is not None  # spike_linear_lif passes T
            if V is None:
                V, out = _scan(out, lif, time_steps)
            saved_x = (*saved_x, V)
        ctx.lif = lif
        ctx.save_for_backward(weight, *saved_x)
        ctx.shape = (M, K, N, time_steps)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, g):
        weight, a, b, c, *scanned = ctx.saved_tensors
        M, K, _, T = ctx.shape
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if ctx.lif is not None:  # g is dL/dspikes: through the scan first
            g = _scan_grad(scanned[0], g, ctx.lif, T)
        g = g.contiguous()
        gx = gw = gb = None
        if need_x:
            gx = _input_grad(g, weight)
        if need_w:
            if ctx.mode == "tm":
                if need_b and ctx.has_bias:  # the bias gradient from the same pass over g
                    gw, gb = native.tm_wgrad((a, b, c), g, T, M // T, K, bias_grad=True)
                else:
                    gw = native.tm_wgrad((a, b, c), g, T, M // T, K)
            elif ctx.mode == "csr":
                gw = native.spmm_wgrad(a, b, g, K)
            elif ctx.mode == "bf16x3":
                xb = a.view(torch.uint8).to(torch.bfloat16)
                gw = _bf16x3_mm(xb.t(), _split3(g)).t()
            else:
                # bool -> uint8 view -> float is ~5x faster than bool -> float on CPU
                x = a.view(torch.uint8).to(g.dtype) if a.dtype == torch.bool else a
                gw = g.t() @ x
        if need_b and ctx.has_bias and gb is None:
            gb = g.sum(0)
        return gx, gw, gb, None, None, None, None, None


def _input_grad(g: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``g @ weight``; natively for a layer with few outputs (a readout), a shape BLAS
    runs slowly."""
    if weight.shape[0] <= native.THIN_MAX_K and native_runs(g, weight):
        return native.thin_mm(g, weight.detach().contiguous())
    return g @ weight


def spike_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    strategy: str = "auto",
    binary: bool | None = None,
    max_density: float = 0.5,
    time_steps: int | None = None,
) -> torch.Tensor:
    """``x @ weight^T + bias`` for a 2-D spike matrix ``x[M, K]``.

    ``binary``: True when the caller knows ``x`` holds only 0/1 (a spiking layer's
    output), None to check, False to skip the spike-specific paths.
    ``time_steps``: ``T`` when the rows are ``T`` time-major blocks of ``M / T`` samples
    (``x`` = a ``[T, B, K]`` train flattened); lets the sparse path group each sample's
    spikes over time (the temporal layout of ``_native/csrc/engine.c``).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"matmul={strategy!r} is unknown; accepted: {', '.join(STRATEGIES)}")
    if x.dim() != 2:
        raise ValueError(f"spike_linear takes a 2-D input [rows, features], got shape {tuple(x.shape)}")
    grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if not grad and strategy == "dense":
        return F.linear(x, weight, bias)
    if torch.compiler.is_compiling():
        return F.linear(x, weight, bias)
    return _SpikeLinear.apply(x, weight, bias, strategy, binary, float(max_density), time_steps)


class _IndexedSpikeLinear(torch.autograd.Function):
    """``X @ W^T + b`` for a spike train given only as its temporal index (the input needs
    no gradient): forward and weight gradient by the native temporal kernels."""

    @staticmethod
    def forward(ctx, weight, bias, tm, T: int, B: int, lif: LIFSpec | None = None):
        K, N = weight.shape[1], weight.shape[0]
        wp, b = packed_weight(weight), None if bias is None else bias.detach().contiguous()
        out, V = _tm_forward(tm, wp, b, T, B, N, lif)
        if lif is not None and V is None:
            V, out = _scan(out, lif, T)
        ctx.save_for_backward(*tm[:3], *((V,) if V is not None else ()))
        ctx.shape = (T, B, K)
        ctx.has_bias = bias is not None
        ctx.lif = lif
        return out

    @staticmethod
    def backward(ctx, g):
        row_ptr, cols, masks, *scanned = ctx.saved_tensors
        T, B, K = ctx.shape
        if ctx.lif is not None:  # g is dL/dspikes: through the scan first
            g = _scan_grad(scanned[0], g, ctx.lif, T)
        g = g.contiguous()
        need_w, need_b = ctx.needs_input_grad[0], ctx.has_bias and ctx.needs_input_grad[1]
        gw = gb = None
        if need_w and need_b:  # the bias gradient from the same pass over g
            gw, gb = native.tm_wgrad((row_ptr, cols, masks), g, T, B, K, bias_grad=True)
        elif need_w:
            gw = native.tm_wgrad((row_ptr, cols, masks), g, T, B, K)
        elif need_b:
            gb = g.sum(0)
        return gw, gb, None, None, None, None


def bernoulli_linear(
    p: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    time_steps: int,
    generator: torch.Generator | None = None,
    rng: str = "torch",
    lif: LIFSpec | None = None,
) -> torch.Tensor | None:
    """``x @ W^T + b`` over ``T*B`` rows (time-major) of the Bernoulli rate code of the
    intensities ``p[B, K]`` (``x[t, b] = u < p``, a fresh draw per step), without forming
    ``x``: the draws go straight into the temporal index of the sparse kernels.

    ``rng="torch"``: ``u = torch.rand((T, *p.shape), generator)`` (drawn by
    :func:`native.torch_rand`) -- the draws (and so the spikes) of
    :class:`~snn_lab.encoders.BernoulliEncoder`. ``rng="kernel"``: the kernel hashes one
    62-bit key drawn from ``generator`` with (sample, step, input), only where ``p > 0``:
    other random numbers than the encoder's (same distribution), no ``[T, B, K]`` uniforms.
    Returns None when the native kernels cannot run it (the caller encodes first).
    ``lif``: return the spikes of that LIF scan over the currents instead (see
    :func:`spike_linear_lif`)."""
    if rng not in BERNOULLI_RNGS:
        raise ValueError(f"bernoulli={rng!r} is unknown; accepted: {', '.join(BERNOULLI_RNGS)}")
    if not (p.dim() == 2 and 1 <= time_steps <= native.MAX_T and native_runs(p, weight)):
        return None
    B = p.shape[0]
    pc = p.contiguous()
    if rng == "torch":
        u = native.torch_rand((time_steps, *p.shape), generator)  # torch.rand's numbers
        tm = native.bernoulli_tmask(pc, time_steps, U=u)
    else:
        key = int(torch.randint(0, 2**62, (1,), generator=generator))
        tm = native.bernoulli_tmask(pc, time_steps, key=key)
    out: torch.Tensor = _IndexedSpikeLinear.apply(weight, bias, tm, time_steps, B, lif)
    return out


def spike_linear_lif(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lif: LIFSpec,
    time_steps: int,
    strategy: str = "auto",
    binary: bool | None = None,
    max_density: float = 0.5,
) -> torch.Tensor | None:
    """The spikes ``[T*B, N]`` of a LIF layer (``lif``) fed by :func:`spike_linear` of
    ``x[T*B, K]``, in one autograd node: on the sparse temporal path the scan runs inside
    the gather kernel as each current row is summed (the currents are never stored), else
    on the product's output. The same floats as ``spike_linear`` followed by
    :func:`~snn_lab.engine.lif_scan` from a zero membrane, and the same gradients.
    None where it does not apply (not the native CPU float32 path, or under
    ``torch.compile``): the caller runs the two."""
    if strategy not in STRATEGIES:
        raise ValueError(f"matmul={strategy!r} is unknown; accepted: {', '.join(STRATEGIES)}")
    if not (x.dim() == 2 and x.shape[0] % time_steps == 0 and strategy != "bf16x3" and native_runs(x, weight)):
        return None
    out: torch.Tensor = _SpikeLinear.apply(x, weight, bias, strategy, binary, float(max_density), time_steps, lif)
    return out
