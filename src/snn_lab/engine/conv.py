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
from .options import CONV_STRATEGIES, native_runs

_MAX_IN_CHANNELS = 4096  # the kernel lists one pixel's spiking channels on its stack


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def sparse_fits(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups, padding_mode="zeros") -> bool:
    """True when the native sparse kernel can run this convolution."""
    return (
        x.dim() == 4
        and _pair(stride) == (1, 1)
        and _pair(dilation) == (1, 1)
        and groups == 1
        and padding_mode == "zeros"
        and not isinstance(padding, str)
        and weight.shape[0] % 8 == 0
        and weight.shape[1] <= _MAX_IN_CHANNELS
        and native_runs(x, weight)
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
            # stride 1: the transposed conv is a conv with the kernel flipped and its channel
            # axes swapped; oneDNN's forward conv runs it faster than its transposed one
            ph, pw = weight.shape[2] - 1 - ctx.padding[0], weight.shape[3] - 1 - ctx.padding[1]
            if ph >= 0 and pw >= 0:
                wf = weight.detach().transpose(0, 1).flip(2, 3).contiguous(memory_format=torch.channels_last)
                gx = F.conv2d(g, wf, padding=(ph, pw))
            else:  # padded wider than the kernel: a negative padding, which conv2d refuses
                gx = F.conv_transpose2d(g, weight, padding=ctx.padding)
        if need_w:
            gw = native.conv_wgrad((row_ptr, col), g.permute(0, 2, 3, 1), ctx.N, ctx.geom).permute(3, 2, 0, 1)
        if need_b and ctx.has_bias:
            gb = g.sum((0, 2, 3))
        return gx, gw, gb, None, None


class _OneChannelConv2d(torch.autograd.Function):
    """A stride-1 conv of one-channel analog images that need no gradient (a first layer on
    pixels), native: oneDNN's kernels are slow for a single input channel."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        geom = native.conv_geometry(x.shape, weight.shape, padding)
        X = x.reshape(x.shape[0], x.shape[2], x.shape[3]).contiguous()
        wt = weight.detach().reshape(weight.shape[0], -1).t().contiguous()  # [kh*kw, Co]
        out = native.conv1_fwd(X, wt, None if bias is None else bias.detach().contiguous(), geom)
        ctx.save_for_backward(X)
        ctx.geom, ctx.wshape, ctx.has_bias = geom, weight.shape, bias is not None
        return out.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, g):
        (X,) = ctx.saved_tensors
        G = g.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
        gw = native.conv1_wgrad(X, G, ctx.geom).reshape(-1, ctx.wshape[0]).t().reshape(ctx.wshape)
        gb = G.sum((0, 1, 2)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return None, gw if ctx.needs_input_grad[1] else None, gb, None


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
    fits = sparse_fits(x, weight, stride, padding, dilation, groups)
    if strategy in ("auto", "sparse") and binary is not False and fits:
        flat = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # [pixels, channels], a view
        index = native.csr(flat)
        if index is not None and (strategy == "sparse" or index[1].numel() - 1 <= max_density * flat.numel()):
            out: torch.Tensor = _SpikeConv2d.apply(x, weight, bias, _pair(padding), index)
            return out
    if x.shape[1] == 1 and not x.requires_grad and fits and weight.shape[2] * weight.shape[3] <= native.CONV1_MAX_TAPS:
        # one analog input channel (a first layer on pixels), where oneDNN is slow
        one: torch.Tensor = _OneChannelConv2d.apply(x, weight, bias, _pair(padding))
        return one
    w_cl = weight.contiguous(memory_format=torch.channels_last)
    # (with one input channel oneDNN still answers NCHW: the layers after expect channels-last)
    return F.conv2d(x, w_cl, bias, stride, padding, dilation, groups).contiguous(memory_format=torch.channels_last)


def _batch_stats(s1: torch.Tensor, s2: torch.Tensor, M: int, eps: float):
    """``(mean, 1 / sqrt(var + eps), var)`` (float32, float32, float64) from float64 sums
    over ``M`` values per channel (the biased variance, as BatchNorm normalises with)."""
    mean = s1 / M
    var = (s2 / M - mean * mean).clamp_(min=0.0)
    return mean.float(), torch.rsqrt(var + eps).float(), var


def _update_running(running_mean, running_var, mean, var, M: int, training: bool, momentum: float):
    """BatchNorm's running statistics update (the unbiased variance), in place."""
    if not training or running_mean is None or running_var is None:
        return
    with torch.no_grad():
        unbiased = var * (M / max(M - 1, 1))
        running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
        running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)


def _running_stats(running_mean, running_var, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    return running_mean.detach().float().contiguous(), torch.rsqrt(running_var.detach().float() + eps).contiguous()


def _bn_grad_coefficients(weight, mean, invstd, s_g, s_gx, M: int, training: bool):
    """``(a, b, k)`` of ``dL/dy = a * g_full + b + k * (y - mean)`` (BatchNorm's backward;
    with batch statistics the sums over the batch enter through them)."""
    a = invstd if weight is None else invstd * weight.detach()
    if training:
        b = (-a.double() * s_g / M).float()
        k = (-a.double() * invstd.double() * s_gx / M).float()
    else:
        b = k = torch.zeros_like(a)
    return a.contiguous(), b, k


def bn_pool_fits(x: torch.Tensor) -> bool:
    """True when :func:`batch_norm_max_pool2d` runs the native kernel on ``x``."""
    return (
        x.dim() == 4
        and x.shape[1] % 8 == 0
        and x.shape[2] >= 2
        and x.shape[3] >= 2
        and x.is_contiguous(memory_format=torch.channels_last)
        and native_runs(x)
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
        a, b, k = _bn_grad_coefficients(weight, mean, invstd, s_g, s_gx, Y.numel() // Y.shape[-1], ctx.training)
        dx = native.bn_pool_bwd_dy(Y, arg, gP, a, b, k, mean).permute(0, 3, 1, 2)
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
    if use_batch:
        M = x.numel() // x.shape[1]
        mean, invstd, var = _batch_stats(*native.bn_stats(x.permute(0, 2, 3, 1)), M, eps)
        _update_running(running_mean, running_var, mean, var, M, training, momentum)
    else:
        mean, invstd = _running_stats(running_mean, running_var, eps)
    out: torch.Tensor = _BatchNormMaxPool.apply(x, weight, bias, mean, invstd, use_batch)
    return out


class _ConvBatchNormMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, bias, bn_weight, bn_bias, index, geom, N, bn_state, use_batch: bool):
        running_mean, running_var, training, momentum, eps = bn_state
        wt = weight.detach().permute(2, 3, 1, 0).contiguous()  # [kh, kw, Ci, Co]
        b = None if bias is None else bias.detach().contiguous()
        M = N * geom[3] * geom[4]
        if use_batch:
            mean, invstd, var = _batch_stats(*native.cbp_stats(index, wt, b, N, geom), M, eps)
            _update_running(running_mean, running_var, mean, var, M, training, momentum)
        else:
            mean, invstd = _running_stats(running_mean, running_var, eps)
        alpha = invstd if bn_weight is None else invstd * bn_weight.detach()
        beta = -mean * alpha if bn_bias is None else bn_bias.detach() - mean * alpha
        out, arg = native.cbp_fwd(index, wt, b, N, geom, alpha.contiguous(), beta.contiguous())
        ctx.save_for_backward(wt, b, bn_weight, mean, invstd, arg, *index)
        ctx.geom, ctx.N, ctx.use_batch = geom, N, use_batch
        return out.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, g):
        wt, b, bn_weight, mean, invstd, arg, row_ptr, col = ctx.saved_tensors
        index, geom, N = (row_ptr, col), ctx.geom, ctx.N
        gP = g.permute(0, 2, 3, 1).contiguous()
        s_g, s_gx = native.cbp_bwd_sums(index, wt, b, N, geom, arg, gP, mean, invstd)
        a, bb, k = _bn_grad_coefficients(bn_weight, mean, invstd, s_g, s_gx, N * geom[3] * geom[4], ctx.use_batch)
        need_w, need_b, need_bnw, need_bnb = ctx.needs_input_grad[:4]
        gw = gb = None
        if need_w or need_b:
            dwt, gb = native.cbp_wgrad(index, wt, b, N, geom, arg, gP, a, bb, k, mean, b is not None and need_b)
            gw = dwt.permute(3, 2, 0, 1) if need_w else None
        gbnw = s_gx.float() if bn_weight is not None and need_bnw else None
        gbnb = s_g.float() if need_bnb else None
        return gw, gb, gbnw, gbnb, None, None, None, None, None


def conv_bn_max_pool2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    bn_weight: torch.Tensor | None,
    bn_bias: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    max_density: float = 1.0,
) -> torch.Tensor | None:
    """``max_pool2d(batch_norm(conv2d(x, weight, bias, padding=padding), ...), 2)`` for
    binary ``x`` that needs no gradient (a first layer's encoded spikes), without ever
    storing the full-resolution conv output: each native pass recomputes it image by image
    from the spike index (statistics, pooling; in backward the BatchNorm sums, then
    ``dL/dy`` and the weight gradient). Returns None when this does not apply (``x`` not
    binary, denser than ``max_density``, needing a gradient, or a conv the kernel does not
    run); the caller then runs the layers one by one."""
    if x.requires_grad or not sparse_fits(x, weight, 1, padding, 1, 1):
        return None
    geom = native.conv_geometry(x.shape, weight.shape, _pair(padding))
    if geom[3] < 2 or geom[4] < 2:
        return None
    x = x.contiguous(memory_format=torch.channels_last)
    index = native.csr(x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]))
    if index is None or index[1].numel() - 1 > max_density * x.numel():
        return None
    use_batch = training or running_mean is None
    if not use_batch and running_var is None:
        return None
    state = (running_mean, running_var, training, momentum, eps)
    out: torch.Tensor = _ConvBatchNormMaxPool.apply(
        weight, bias, bn_weight, bn_bias, index, geom, x.shape[0], state, use_batch
    )
    return out
