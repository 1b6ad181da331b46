"""``Conv2d`` over a whole spike sequence: channels-last, and gather-accumulate on spikes.

A conv layer of ``SNNModel(mode="layer")`` sees its input as ``T*B`` images. Strategies
(``engine.configure(conv=...)``):

``dense``          ``F.conv2d`` in the input's layout, as the per-step path runs it
                   (bit-identical spikes).
``channels_last``  ``F.conv2d`` on channels-last images (oneDNN's NHWC kernels: about
                   1.5-2x faster on this CPU, and BatchNorm / max-pool that follow run
                   their channels-last kernels too).
``sparse``         binary inputs (spikes) as an index of the pixels/channels that fire
                   (``_native/csrc/engine.c``): a spike adds its weight vectors ``W[:, c,
                   dy, dx]`` to the output pixels its kernel taps reach, the weight
                   gradient adds those pixels' output gradients back; no multiplies,
                   work proportional to the spikes. The input gradient stays a dense
                   transposed convolution (it is needed at every input, spike or not).
                   Channels-last output. Only the index is saved for backward.
``auto``           ``sparse`` for binary inputs with at most ``sparse_max_density`` ones
                   when the native kernels are loaded and the conv fits them (stride 1,
                   no dilation, one group, zero padding, ``out_channels % 8 == 0``);
                   ``channels_last`` otherwise.

Exactness: ``dense`` gives the per-step path's currents bit for bit; ``channels_last``
and ``sparse`` sum the same terms in another order (float rounding, ~1e-7 relative), so
a spike can flip only when a membrane lands within that distance of the threshold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import native
from .options import CONV_STRATEGIES, native_enabled

_MAX_IN_CHANNELS = 4096  # the kernel lists one pixel's spiking channels on its stack


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def sparse_fits(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups, padding_mode="zeros") -> bool:
    """True when the native sparse kernel can run this convolution."""
    return (
        x.dim() == 4
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and _pair(stride) == (1, 1)
        and _pair(dilation) == (1, 1)
        and groups == 1
        and padding_mode == "zeros"
        and not isinstance(padding, str)
        and weight.shape[0] % 8 == 0
        and weight.shape[1] <= _MAX_IN_CHANNELS
        and not torch.compiler.is_compiling()
        and native_enabled()
    )


class _SpikeConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding, index):
        N = x.shape[0]
        geom = native.conv_geometry(x.shape, weight.shape, padding)
        wt = weight.detach().permute(2, 3, 1, 0).contiguous()  # [kh, kw, Ci, Co]
        b = None if bias is None else bias.detach().contiguous()
        out = native.conv_fwd(index, wt, b, N, geom)  # [N, Ho, Wo, Co]
        need_w = ctx.needs_input_grad[1]
        ctx.save_for_backward(weight, *(index if need_w else (None, None)))
        ctx.geom, ctx.padding, ctx.has_bias, ctx.N = geom, padding, bias is not None, N
        return out.permute(0, 3, 1, 2)  # NCHW shape, channels-last memory

    @staticmethod
    def backward(ctx, g):
        weight, row_ptr, col = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        g = g.contiguous(memory_format=torch.channels_last)
        gx = gw = gb = None
        if need_x:
            gx = F.conv_transpose2d(g, weight, padding=ctx.padding)
        if need_w:
            gw = native.conv_wgrad((row_ptr, col), g.permute(0, 2, 3, 1), ctx.N, ctx.geom).permute(3, 2, 0, 1)
        if need_b and ctx.has_bias:
            gb = g.sum((0, 2, 3))
        return gx, gw, gb, None, None


def spike_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    padding_mode: str = "zeros",
    strategy: str = "auto",
    binary: bool | None = None,
    max_density: float = 0.5,
) -> torch.Tensor:
    """``F.conv2d`` for a batch of images ``x[N, C, H, W]`` that are spikes when ``binary``
    (None: checked, False: not), by ``strategy`` (see the module docstring). Padding
    modes other than zeros need the caller's ``nn.Conv2d``; they are not handled here."""
    if strategy not in CONV_STRATEGIES:
        raise ValueError(f"conv={strategy!r} is unknown; accepted: {', '.join(CONV_STRATEGIES)}")
    if padding_mode != "zeros":
        raise ValueError(f"spike_conv2d pads with zeros only, got padding_mode={padding_mode!r}")
    if strategy == "dense":
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    x = x.contiguous(memory_format=torch.channels_last)
    if (
        strategy in ("auto", "sparse")
        and binary is not False
        and sparse_fits(x, weight, stride, padding, dilation, groups)
    ):
        flat = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # [pixels, channels], a view
        index = native.csr(flat)
        if index is not None and (strategy == "sparse" or index[1].numel() - 1 <= max_density * flat.numel()):
            out: torch.Tensor = _SpikeConv2d.apply(x, weight, bias, _pair(padding), index)
            return out
    w_cl = weight.contiguous(memory_format=torch.channels_last)
    # (with one input channel oneDNN still answers NCHW: the layers after expect channels-last)
    return F.conv2d(x, w_cl, bias, stride, padding, dilation, groups).contiguous(memory_format=torch.channels_last)


def bn_pool_fits(x: torch.Tensor) -> bool:
    """True when :func:`batch_norm_max_pool2d` runs the native kernel on ``x``."""
    return (
        x.dim() == 4
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.shape[1] % 8 == 0
        and x.shape[2] >= 2
        and x.shape[3] >= 2
        and x.is_contiguous(memory_format=torch.channels_last)
        and not torch.compiler.is_compiling()
        and native_enabled()
    )


class _BatchNormMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, mean, invstd, training: bool):
        Y = x.permute(0, 2, 3, 1)  # contiguous: x is channels-last
        alpha = invstd if weight is None else invstd * weight.detach()
        beta = -mean * alpha if bias is None else bias.detach() - mean * alpha
        out, arg = native.bn_pool_fwd(Y, alpha.contiguous(), beta.contiguous())
        ctx.save_for_backward(x, arg, weight, mean, invstd)
        ctx.training = training
        return out.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, g):
        x, arg, weight, mean, invstd = ctx.saved_tensors
        Y = x.permute(0, 2, 3, 1)
        gP = g.permute(0, 2, 3, 1).contiguous()
        s_g, s_gx = native.bn_pool_bwd_sums(Y, arg, gP, mean, invstd)
        a = invstd if weight is None else invstd * weight.detach()
        if ctx.training:  # the batch statistics depend on x too
            M = Y.numel() // Y.shape[-1]
            b = (-a.double() * s_g / M).float()
            k = (-a.double() * invstd.double() * s_gx / M).float()
        else:
            b = k = torch.zeros_like(a)
        dx = native.bn_pool_bwd_dy(Y, arg, gP, a.contiguous(), b, k, mean).permute(0, 3, 1, 2)
        gw = s_gx.float() if weight is not None and ctx.needs_input_grad[1] else None
        gb = s_g.float() if ctx.needs_input_grad[2] else None
        return dx, gw, gb, None, None, None


def batch_norm_max_pool2d(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> torch.Tensor:
    """``F.max_pool2d(F.batch_norm(x, running_mean, running_var, weight, bias, training,
    momentum, eps), 2)`` in one native pass for a channels-last ``x`` (else those two
    calls): the normalised full-resolution tensor is never stored, the pooling keeps a
    one-byte argmax, and the backward writes ``dL/dx`` in one pass. Batch statistics are
    summed in float64; the running statistics are updated as ``F.batch_norm`` does."""
    use_batch = training or running_mean is None
    if x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    if not bn_pool_fits(x) or (not use_batch and running_var is None):
        y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
        return F.max_pool2d(y, 2)
    C = x.shape[1]
    if use_batch:
        s1, s2 = native.bn_stats(x.permute(0, 2, 3, 1))
        M = x.numel() // C
        mean64 = s1 / M
        var64 = (s2 / M - mean64 * mean64).clamp_(min=0.0)
        mean, invstd = mean64.float(), torch.rsqrt(var64 + eps).float()
        if training and running_mean is not None and running_var is not None:
            with torch.no_grad():
                unbiased = var64 * (M / max(M - 1, 1))
                running_mean.mul_(1 - momentum).add_(mean64.to(running_mean.dtype), alpha=momentum)
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
    else:
        assert running_mean is not None and running_var is not None
        mean = running_mean.detach().float().contiguous()
        invstd = torch.rsqrt(running_var.detach().float() + eps).contiguous()
    out: torch.Tensor = _BatchNormMaxPool.apply(x, weight, bias, mean, invstd, use_batch)
    return out
