"""Spiking networks as a stack of (stateless synapse, stateful neuron) layers.

Public entry points (the seams training, the fast engine and deploy rely on):

* ``init_state(batch_size, device)``  -> tuple with one neuron state per layer
* ``step(x_t, state)``                -> ``(out_t, new_state)``: one time step, all layers
* ``forward_spikes(train)``           -> class scores from a given input train
  ``[T, B, ...]`` (bypasses the encoder; used to check the tutorial network bit for bit)
* ``forward(images, generator)``      -> encode on the model's device, then run T steps

``mode="step"`` loops time outermost, exactly like the tutorial's code. ``mode="layer"``
runs each layer over the whole sequence (one synapse call over ``T*B`` rows, then the
neuron's ``multi_step``), which a fused engine accelerates; it gives the same spikes
when synapses are per-sample (no BatchNorm in training mode: there it normalises over
``T*B`` instead of ``B``, the usual multi-step convention).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from .. import engine
from ..encoders import BernoulliEncoder, Encoder
from ..neurons import LIF, Neuron
from ..readouts import check_readout, reduce_outputs

MODES = ("step", "layer")


class SpikingLayer(nn.Module):
    """``synapse`` (Linear/Conv/BN/pool/dropout, no state) followed by ``neuron``."""

    def __init__(self, synapse: nn.Module, neuron: Neuron):
        super().__init__()
        self.synapse = synapse
        self.neuron = neuron

    def init_state(self, shape, device=None, dtype=torch.float32) -> Any:
        """The layer's state for a batch of outputs of ``shape`` (here: the neuron's)."""
        return self.neuron.init_state(shape, device=device, dtype=dtype)

    def step(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return self.neuron.step(self.synapse(x), state)

    def membrane(self, state: Any) -> torch.Tensor:
        """The membrane held in the layer's ``state`` (for traces)."""
        return self.neuron.membrane(state)

    def multi_step(
        self, x_seq: torch.Tensor, state: Any, binary: bool | None = None, want_state: bool = True
    ) -> tuple[torch.Tensor, Any]:
        """The layer over a whole sequence ``[T, B, ...]``, with the engine's fast paths:

        * an input that is the same at every step (stride 0 over time, as the direct
          encoder gives) goes through the synapse once, on ``B`` rows like each step of
          the per-step path, and the current is broadcast over time;
        * a plain ``Linear`` synapse runs as :func:`snn_lab.engine.spike_linear` over
          ``T*B`` rows (dense or gather over the spikes; ``binary``: what the caller
          knows about ``x_seq``).
        Otherwise the synapse runs once over ``T*B`` rows.

        ``want_state=False`` (the layer loop, which starts from the zero state and drops the
        final one): a plain LIF after a ``Linear`` runs inside the synapse's autograd node
        (:func:`snn_lab.engine.spike_linear_lif`; on the sparse path its scan is the
        kernel's epilogue), and the state returned is None.
        """
        enabled = engine.options().enabled and not torch.jit.is_tracing()
        if enabled and x_seq.dim() >= 2 and x_seq.shape[0] > 1 and x_seq.stride(0) == 0 and _per_sample(self.synapse):
            x0 = x_seq[0]
            cur = self._conv_synapse(x0, binary) if x0.dim() == 4 and _has_conv(self.synapse) else self.synapse(x0)
            return self.neuron.multi_step(engine.over_time(cur, x_seq.shape[0]), state)
        T, B = x_seq.shape[:2]
        linear = _linear_of(self.synapse) if enabled and binary is not False else None
        if linear is not None and x_seq[0, 0].numel() == linear.in_features:
            opts = engine.options()
            neuron = self.neuron
            fresh = not want_state and state is None
            scan = neuron.fixed_scan() if fresh and isinstance(neuron, LIF) else None
            if scan is not None:
                spikes = engine.spike_linear_lif(
                    x_seq.reshape(T * B, -1),
                    linear.weight,
                    linear.bias,
                    scan,
                    T,
                    opts.matmul,
                    binary,
                    opts.sparse_max_density,
                )
                if spikes is not None:
                    return spikes.reshape(T, B, *spikes.shape[1:]), None
            cur = engine.spike_linear(
                x_seq.reshape(T * B, -1),
                linear.weight,
                linear.bias,
                opts.matmul,
                binary,
                opts.sparse_max_density,
                time_steps=T,
            )
        elif enabled and x_seq.dim() == 5 and _has_conv(self.synapse):
            cur = self._conv_synapse(x_seq.reshape(T * B, *x_seq.shape[2:]), binary)
        elif enabled and _has_dropout(self.synapse):
            cur = x_seq.reshape(T * B, *x_seq.shape[2:])
            for m in self.synapse.children():
                cur = _run(m, cur)
        else:
            cur = self.synapse(x_seq.reshape(T * B, *x_seq.shape[2:]))
        return self.neuron.multi_step(cur.reshape(T, B, *cur.shape[1:]), state)

    def _conv_synapse(self, x: torch.Tensor, binary: bool | None) -> torch.Tensor:
        """A synapse with a ``Conv2d`` over ``T*B`` images: its convs through
        :func:`snn_lab.engine.spike_conv2d` (channels-last; gather over the spikes while
        the input is still binary), the other modules as they are."""
        opts = engine.options()
        mods = list(self.synapse) if isinstance(self.synapse, nn.Sequential) else [self.synapse]
        if opts.conv == "dense" or any(len(list(m.children())) for m in mods):
            return self.synapse(x)
        i = 0
        while i < len(mods):
            m = mods[i]
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            nxt2 = mods[i + 2] if i + 2 < len(mods) else None
            if (
                opts.conv in ("auto", "sparse")
                and type(m) is nn.Conv2d
                and binary is not False
                and not x.requires_grad
                and _is_bn_pool(nxt, nxt2)
                and _pair(m.stride) == (1, 1)
                and _pair(m.dilation) == (1, 1)
                and m.groups == 1
                and m.padding_mode == "zeros"
                and not isinstance(m.padding, str)
            ):
                # a first conv on encoded spikes: conv, BatchNorm and pool in one, the
                # full-resolution conv output never stored
                bn = nxt
                assert isinstance(bn, nn.BatchNorm2d) and bn.num_batches_tracked is not None and bn.momentum is not None
                y = engine.conv_bn_max_pool2d(
                    x,
                    m.weight,
                    m.bias,
                    m.padding,
                    bn.running_mean,
                    bn.running_var,
                    bn.weight,
                    bn.bias,
                    bn.training,
                    float(bn.momentum),
                    bn.eps,
                    1.0 if opts.conv == "sparse" else opts.conv_max_density,
                )
                if y is not None:
                    if bn.training:
                        bn.num_batches_tracked.add_(1)
                    x, binary = y, False
                    i += 3
                    continue
            if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros":
                x = engine.spike_conv2d(
                    x,
                    m.weight,
                    m.bias,
                    m.stride,
                    m.padding,
                    m.dilation,
                    m.groups,
                    strategy=opts.conv,
                    binary=binary,
                    max_density=opts.conv_max_density,
                )
                binary = False
            elif _is_bn_pool(m, nxt):
                assert isinstance(m, nn.BatchNorm2d) and m.num_batches_tracked is not None and m.momentum is not None
                if m.training:
                    m.num_batches_tracked.add_(1)  # as BatchNorm2d.forward does
                x = engine.batch_norm_max_pool2d(
                    x, m.running_mean, m.running_var, m.weight, m.bias, m.training, float(m.momentum), m.eps
                )
                i += 1  # the pool ran too
                binary = False
            else:
                if x.dim() == 4 and isinstance(m, nn.Conv2d):
                    x = x.contiguous(memory_format=torch.channels_last)
                x = _run(m, x)
                # max-pooling spikes gives spikes; anything else may not
                if not isinstance(m, (nn.MaxPool2d, nn.Flatten, nn.Identity)) and not (
                    isinstance(m, nn.Dropout) and (not m.training or m.p == 0)
                ):
                    binary = False
            i += 1
        return x


def _has_dropout(synapse: nn.Module) -> bool:
    """A plain ``Sequential`` (no hooks of its own) holding an ``nn.Dropout``: run module
    by module, so that :func:`_run` draws the dropout masks."""
    return (
        isinstance(synapse, nn.Sequential)
        and not synapse._forward_hooks
        and not synapse._forward_pre_hooks
        and any(type(m) is nn.Dropout for m in synapse)
    )


def _run(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``m(x)`` for one module of a synapse over ``T*B`` rows; an ``nn.Dropout`` through
    :func:`snn_lab.engine.dropout` (torch's masks and values, the draws made natively)."""
    if type(m) is nn.Dropout and not m.inplace and not m._forward_hooks and not m._forward_pre_hooks:
        return engine.dropout(x, m.p, m.training)
    return m(x)


def _is_bn_pool(m: nn.Module | None, nxt: nn.Module | None) -> bool:
    """``BatchNorm2d`` (tracking running statistics with a momentum) followed by a 2x2
    max-pool: the pair :func:`snn_lab.engine.batch_norm_max_pool2d` fuses."""
    return (
        type(m) is nn.BatchNorm2d
        and m.track_running_stats
        and m.momentum is not None
        and m.running_mean is not None
        and m.num_batches_tracked is not None
        and type(nxt) is nn.MaxPool2d
        and _pair(nxt.kernel_size) == (2, 2)
        and _pair(nxt.stride) == (2, 2)
        and _pair(nxt.padding) == (0, 0)
        and _pair(nxt.dilation) == (1, 1)
        and not nxt.ceil_mode
        and not nxt.return_indices
    )


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _has_conv(synapse: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in synapse.modules())


def _linear_of(synapse: nn.Module) -> nn.Linear | None:
    """The ``Linear`` when ``synapse`` is one (optionally after ``Flatten`` and inactive
    dropout), else None."""
    if isinstance(synapse, nn.Linear):
        return synapse
    if not isinstance(synapse, nn.Sequential):
        return None
    linear = None
    for m in synapse:
        if linear is None and isinstance(m, nn.Flatten):
            continue
        if linear is None and isinstance(m, nn.Dropout) and (not m.training or m.p == 0):
            continue
        if linear is None and isinstance(m, nn.Linear):
            linear = m
            continue
        return None
    return linear


def _per_sample(synapse: nn.Module) -> bool:
    """No module that draws per call (active dropout): then equal inputs give equal
    outputs, so a time-invariant input may go through the synapse once."""
    return not any(isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0 for m in synapse.modules())


@dataclass
class Record:
    """What one forward pass did, for logging: per-layer output sequences ``[T, B, ...]``."""

    spikes: list[torch.Tensor] = field(default_factory=list)
    outputs: torch.Tensor | None = None

    def firing_rates(self) -> list[float]:
        return [float(s.float().mean()) for s in self.spikes]


class SNNModel(nn.Module):
    def __init__(
        self,
        layers: list[SpikingLayer],
        input_shape: tuple[int, ...],
        time_steps: int,
        encoder: Encoder | None = None,
        readout: str = "rate",
        mode: str = "layer",
    ):
        super().__init__()
        if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
            raise ValueError(f"time_steps={time_steps!r} is invalid: must be an integer >= 1")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is unknown; accepted: {', '.join(MODES)}")
        self.layers = nn.ModuleList(layers)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.time_steps = time_steps
        self.encoder = encoder
        self.readout = check_readout(readout)
        self.mode = mode
        self.state_shapes = self._infer_state_shapes()

    @property
    def spiking_layers(self) -> Iterable[SpikingLayer]:
        """:attr:`layers` with its item type: ``nn.ModuleList`` types its items as plain
        modules, and the constructor stores only :class:`SpikingLayer` in it."""
        return cast("Iterable[SpikingLayer]", self.layers)

    # -- shapes -------------------------------------------------------------------------
    @property
    def in_features(self) -> int:
        n = 1
        for d in self.input_shape:
            n *= d
        return n

    @torch.no_grad()
    def _infer_state_shapes(self) -> list[tuple[int, ...]]:
        was_training = self.training
        self.eval()
        try:
            x = torch.zeros(2, *self.input_shape)
            shapes = []
            for layer in self.spiking_layers:
                x = layer.synapse(x)
                shapes.append(tuple(x.shape[1:]))
        finally:
            self.train(was_training)
        return shapes

    def _as_input(self, x: torch.Tensor, lead: int) -> torch.Tensor:
        """Check a batch's per-sample size and reshape it to ``input_shape``."""
        per_sample = x.shape[lead:]
        n = 1
        for d in per_sample:
            n *= d
        if n != self.in_features or x.dim() < lead + 1:
            raise ValueError(
                f"input of shape {tuple(x.shape)} does not fit the model: expected "
                f"{'[T, B, ...]' if lead == 2 else '[B, ...]'} with {self.in_features} values "
                f"per sample (input_shape={self.input_shape})"
            )
        return x.reshape(*x.shape[:lead], *self.input_shape)

    # -- state and one step -------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> tuple:
        return tuple(
            layer.init_state((batch_size, *shape), device=device, dtype=dtype)
            for layer, shape in zip(self.spiking_layers, self.state_shapes)
        )

    def step(self, x_t: torch.Tensor, state: tuple, record: list | None = None):
        """One time step through every layer: ``(out_t, new_state)``."""
        new_state = []
        x = x_t
        for layer, s_in in zip(self.spiking_layers, state):
            x, s = layer.step(x, s_in)
            new_state.append(s)
            if record is not None:
                record.append(x)
        return x, tuple(new_state)

    # -- whole sequences ----------------------------------------------------------------
    def forward_spikes(self, spike_train: torch.Tensor, return_record: bool = False, mode: str | None = None):
        """Run the network on a given input train ``[T, B, ...]`` and read out.

        ``T`` is taken from the train (it may differ from ``self.time_steps``).
        Returns class scores ``[B, classes]``, and a :class:`Record` if asked.
        """
        mode = self.mode if mode is None else mode
        x = self._as_input(spike_train, lead=2)
        T, B = x.shape[:2]
        rec = Record()
        if mode == "layer":
            outputs = self._layer_by_layer(x, self._fresh_states(), 0, None, rec)
        elif mode == "step":
            state = self.init_state(B, device=x.device, dtype=x.dtype)
            per_step: list[list[torch.Tensor]] = []
            outs: list[torch.Tensor] = []
            for t in range(T):
                record: list[torch.Tensor] | None = [] if return_record else None
                out, state = self.step(x[t], state, record)
                outs.append(out)
                if record is not None:
                    per_step.append(record)
            outputs = torch.stack(outs)
            rec.spikes = [torch.stack(seq) for seq in zip(*per_step)]
        else:
            raise ValueError(f"mode={mode!r} is unknown; accepted: {', '.join(MODES)}")
        return self._read_out(outputs, rec, return_record)

    def _fresh_states(self) -> tuple[None, ...]:
        """Layer mode's initial states: ``None`` per layer, which each neuron's
        ``multi_step`` reads as its zero state. Unlike an explicit zero tensor, it tells the
        engine's scan that the first step's reset terms vanish, so a learnable decay's
        backward skips them (a third of a PLIF layer's backward passes at T=4)."""
        return (None,) * len(list(self.spiking_layers))

    def _layer_by_layer(self, x: torch.Tensor, state: tuple, start: int, binary: bool | None, rec: Record):
        """Layers ``start..`` over the whole sequence ``x`` (layer mode); ``binary``: what is
        known of ``x`` (None: the engine checks where it matters)."""
        for layer, s in zip(list(self.spiking_layers)[start:], state[start:]):
            if type(layer).multi_step is SpikingLayer.multi_step:  # (an override may not take want_state)
                x, _ = layer.multi_step(x, s, binary, want_state=False)
            else:
                x, _ = layer.multi_step(x, s, binary)
            binary = bool(layer.neuron.spiking)
            rec.spikes.append(x)
        return x

    def _read_out(self, outputs: torch.Tensor, rec: Record, return_record: bool):
        scores = reduce_outputs(outputs)
        if return_record:
            rec.spikes = [s.detach() for s in rec.spikes]
            rec.outputs = outputs.detach()
            return scores, rec
        return scores

    def encode(
        self, images: torch.Tensor, time_steps: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if self.encoder is None:
            raise ValueError("this model has no encoder: call forward_spikes with a spike train")
        return self.encoder(images, self.time_steps if time_steps is None else time_steps, generator)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None, return_record: bool = False):
        """Encode ``images`` ``[B, ...]`` over ``time_steps`` and run the network.

        In layer mode a Bernoulli encoder feeding a ``Linear`` first layer hands its draws
        straight to the engine's sparse kernel (:func:`snn_lab.engine.bernoulli_linear`):
        the input train is never formed. With the engine's default ``bernoulli="torch"``
        the draws, hence the spikes, are the encoder's."""
        first_layer = self._bernoulli_first_current(images, generator)
        if first_layer is None:
            return self.forward_spikes(self.encode(images, generator=generator), return_record)
        out, scanned = first_layer  # the first layer's spikes (its scan ran in the kernel) or currents
        T, B = self.time_steps, images.shape[0]
        state = self._fresh_states()
        first = next(iter(self.spiking_layers))
        out = out.reshape(T, B, *out.shape[1:])
        x = out if scanned else first.neuron.multi_step(out, state[0])[0]
        rec = Record(spikes=[x])
        outputs = self._layer_by_layer(x, state, 1, bool(first.neuron.spiking), rec)
        return self._read_out(outputs, rec, return_record)

    def _bernoulli_first_current(self, images: torch.Tensor, generator: torch.Generator | None):
        """``(out, scanned)``: the first layer's input current ``[T*B, N]`` by
        :func:`engine.bernoulli_linear` -- or, ``scanned``, its spikes, when its neuron is a
        plain LIF whose scan the kernel runs -- or None when that path does not apply (then
        the encoder runs as usual)."""
        opts = engine.options()
        if (
            self.mode != "layer"
            or not opts.enabled
            or torch.jit.is_tracing()
            or type(self.encoder) is not BernoulliEncoder
        ):
            return None
        if opts.matmul not in ("auto", "sparse") or not torch.is_floating_point(images) or images.dim() < 2:
            return None
        first = next(iter(self.spiking_layers))
        linear = _linear_of(first.synapse) if type(first) is SpikingLayer else None  # (not a recurrent layer)
        if linear is None or linear.in_features != self.in_features:
            return None
        if images[0].numel() != self.in_features:
            return None  # (the encoder's path raises the error)
        p = images.reshape(images.shape[0], -1)
        if opts.matmul == "auto" and float(p.mean()) > opts.sparse_max_density:  # the expected spike density
            return None
        neuron = first.neuron
        scan = neuron.fixed_scan() if isinstance(neuron, LIF) else None
        out = engine.bernoulli_linear(p, linear.weight, linear.bias, self.time_steps, generator, opts.bernoulli, scan)
        return None if out is None else (out, scan is not None)
