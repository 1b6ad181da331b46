"""Callbacks: firing-rate summaries, spike dashboards for TensorBoard, per-rank seeding,
weight averaging, checkpoints whose last.ckpt is the last epoch."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

from .datamodule import steps_into_epoch


def _ema_with_warmup(decay: float):
    """``AveragedModel``'s ``avg_fn``: an exponential moving average whose decay warms up
    as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates. Without the warm-up, a decay
    of 0.999 keeps the initial BatchNorm statistics (running_var = 1) in the average for
    thousands of steps: the averaged network stayed silent (chance accuracy) for the
    first epochs of a conv run. Integer buffers (``num_batches_tracked``) are copied."""

    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():
            return current
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        return averaged + (current - averaged) * (1.0 - d)

    return average


class WeightEMA(pl.callbacks.WeightAveraging):
    """An EMA of the weights and buffers (Lightning's weight averaging, the decay warmed
    up: :func:`_ema_with_warmup`), updated after every optimizer step; validation and
    checkpoints see the averaged weights. Lightning writes the average into a
    checkpoint's ``state_dict`` and the raw weights into ``current_model_state``, and on
    *any* load restores the raw ones; outside ``fit`` (testing best.ckpt after training)
    that would test weights that were never validated, so there the checkpoint's
    ``state_dict`` stays in place."""

    def __init__(self, decay: float = 0.999):
        super().__init__(use_buffers=True, avg_fn=_ema_with_warmup(decay))
        self.decay = decay

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.state.fn == "fit":  # resuming: the raw weights continue training
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class EpochCheckpoint(pl.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is rewritten at the end of *every* epoch.

    Lightning 2.6 writes ``last.ckpt`` only when it also writes a top-k checkpoint: with
    ``save_top_k=1`` on a monitored metric, an epoch that does not improve it leaves
    ``last.ckpt`` at the best epoch. A killed run would then resume from that older
    epoch (redoing the epochs since), and a recipe that reports its final epoch would
    test, deploy and count a checkpoint chosen by the monitored metric -- on the test set
    when it validates there. Here an epoch end that saved no checkpoint saves
    ``last.ckpt`` itself, in the same hook as the top-k save."""

    def _save_last_if_missing(self, trainer: pl.Trainer, at_train_epoch_end: bool) -> None:
        """After the parent's hook -- the one it saves in (train epoch end or validation
        end) -- write ``last.ckpt`` unless a checkpoint was saved at this step."""
        if (
            self.save_last
            and not self._should_skip_saving_checkpoint(trainer)
            and self._should_save_on_train_epoch_end(trainer) == at_train_epoch_end
            and self._last_global_step_saved != trainer.global_step
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer, pl_module):
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_if_missing(trainer, at_train_epoch_end=True)

    def on_validation_end(self, trainer, pl_module):
        super().on_validation_end(trainer, pl_module)
        self._save_last_if_missing(trainer, at_train_epoch_end=False)


class FiringRateLogger(pl.Callback):
    """Histograms of per-neuron firing rates of each layer on the first validation batch."""

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx != 0 or outputs is None or trainer.sanity_checking:
            return
        for logger in trainer.loggers:
            exp = getattr(logger, "experiment", None)
            if exp is None or not hasattr(exp, "add_histogram"):
                continue
            for i, spikes in enumerate(outputs.spikes):
                per_neuron = spikes.float().mean(dim=(0, 1)).flatten()
                exp.add_histogram(f"rates/layer{i}", per_neuron, global_step=trainer.global_step)


class RunStats(pl.Callback):
    """Per-epoch validation accuracy history and training throughput (samples/s over
    the time spent in training batches, validation excluded)."""

    def __init__(self):
        self.history: list[dict] = []
        self.train_samples = 0
        self.train_seconds = 0.0
        self._t0 = None

    def on_train_epoch_start(self, trainer, pl_module):
        import time

        self._t0 = time.perf_counter()
        self._val_seconds = 0.0

    def on_validation_start(self, trainer, pl_module):
        import time

        self._v0 = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        import time

        if not trainer.sanity_checking and self._t0 is not None:
            self._val_seconds += time.perf_counter() - self._v0
        m = trainer.callback_metrics
        if "val/acc" in m and not trainer.sanity_checking:
            self.history.append(
                {
                    "epoch": trainer.current_epoch,
                    "step": trainer.global_step,
                    "val_acc": float(m["val/acc"]),
                    "val_loss": float(m.get("val/loss", float("nan"))),
                }
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_samples += len(batch[1])

    def on_train_epoch_end(self, trainer, pl_module):
        import time

        if self._t0 is not None:
            self.train_seconds += time.perf_counter() - self._t0 - self._val_seconds
            self._t0 = None

    @property
    def samples_per_second(self) -> float:
        return self.train_samples / self.train_seconds if self.train_seconds > 0 else float("nan")


class RankSeed(pl.Callback):
    """Per-rank global RNG streams under DDP.

    ``pl.seed_everything(seed)`` gives every rank the same global RNG, so dropout masks and
    the ``shift`` augmentation would repeat across ranks. Under DDP, at the start of every
    training epoch each rank reseeds torch/numpy/random with
    ``seed + 7919 * global_rank + 104729 * epoch``: streams differ across ranks, and a run
    resumed at an epoch boundary draws what the uninterrupted run drew. The first epoch
    of a run resumed *mid-epoch* is not reseeded: each rank continues its own torch stream,
    which the module saved per rank and restored at train start. The weights were
    initialised (identically) before fit, and DDP broadcasts rank 0's anyway.
    ``PL_GLOBAL_SEED`` is left alone. Single-process runs are not touched."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.world_size <= 1:
            return
        if steps_into_epoch(trainer, math.inf):  # the trainer's num_training_batches
            return  # resumed mid-epoch: the checkpoint's stream of this rank goes on
        import random

        import numpy as np

        base = int(getattr(pl_module, "hparams", {}).get("seed", 0))
        seed = base + 7919 * trainer.global_rank + 104729 * trainer.current_epoch
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)


class SpikeDashboard(pl.Callback):
    """Spike raster and membrane traces of one fixed validation sample, per epoch.

    The sample is the ``sample_index``-th image of the first validation batch (the
    validation loader does not shuffle, so it is the same image every epoch and after a
    resume). At the end of every ``every_n_epochs``-th validation epoch (and the last),
    on global rank 0 only, the network runs its explicit ``step`` loop on that image
    with its own ``torch.Generator(seed)`` -- the same input spikes every epoch, and the
    module's encoder generator is not advanced -- in eval mode without gradients, and
    logs to every TensorBoard logger:

    * ``spikes/raster`` (image): one panel per layer, input first, output last; x = time
      step, y = neuron (layers wider than ``max_raster_neurons`` show that many neurons,
      evenly spaced); the true class is marked in the output panel;
    * ``spikes/membrane`` (image): the membrane potential of ``neurons`` neurons per
      layer over time, with the threshold ``vth`` (dashed) and spikes (dots). The neurons
      are picked at the first render (the most active; the true class first in the
      output layer) and kept fixed;
    * ``spikes/sample`` (text): label, prediction, spike counts per layer, picked neurons.

    Rendering uses matplotlib's Agg canvas (no pyplot state); without matplotlib the
    callback warns once and logs nothing. Cost: one sample, one figure pair per epoch.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        sample_index: int = 0,
        neurons: int = 4,
        max_raster_neurons: int = 1024,
        seed: int = 0,
    ):
        if every_n_epochs < 1 or sample_index < 0 or neurons < 1 or max_raster_neurons < 1:
            raise ValueError(
                "SpikeDashboard: every_n_epochs, neurons and max_raster_neurons must be >= 1, sample_index >= 0"
            )
        self.every_n_epochs, self.sample_index = every_n_epochs, sample_index
        self.neurons, self.max_raster_neurons, self.seed = neurons, max_raster_neurons, seed
        # (image [1, ...] on the module's device, label int, index)
        self._sample: tuple[torch.Tensor, int, int] | None = None
        self._picked: list[list[int]] | None = None
        self._disabled = False

    # -- hooks --------------------------------------------------------------------------
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self._sample is None and batch_idx == 0 and dataloader_idx == 0 and trainer.is_global_zero:
            images, labels = batch
            i = min(self.sample_index, len(labels) - 1)
            self._sample = (images[i : i + 1].detach().clone(), int(labels[i]), i)

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero or self._sample is None or self._disabled:
            return
        last = bool(trainer.max_epochs and trainer.max_epochs > 0 and trainer.current_epoch + 1 >= trainer.max_epochs)
        if (trainer.current_epoch + 1) % self.every_n_epochs and not last:
            return
        writers = [lg.experiment for lg in trainer.loggers if hasattr(getattr(lg, "experiment", None), "add_image")]
        if not writers:
            return
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self._disabled = True
            from pytorch_lightning.utilities import rank_zero_warn

            rank_zero_warn(
                "SpikeDashboard needs matplotlib (pip install -e '.[sweep]'); spike rasters "
                "and membrane traces are not logged"
            )
            return
        net = getattr(pl_module, "net", pl_module)
        image, label, index = self._sample
        probe = self.probe(net, image)
        if self._picked is None:
            self._picked = self._pick(probe, label)
        raster = _render_raster(
            probe,
            label,
            self.max_raster_neurons,
            f"val sample {index} (label {label}, predicted {probe['pred']}), epoch {trainer.current_epoch}",
        )
        membrane = _render_membrane(
            probe, self._picked, f"membrane potential, val sample {index}, epoch {trainer.current_epoch}"
        )
        counts = ", ".join(f"{name}: {int(s.sum())}" for name, s in zip(probe["names"], probe["spikes"]))
        text = (
            f"sample {index}: label {label}, predicted {probe['pred']}, T={probe['spikes'][0].shape[0]}  \n"
            f"spike counts -- {counts}  \n"
            f"membrane traces of neurons {dict(zip(probe['names'][1:], self._picked))}"
        )
        step = trainer.global_step
        for w in writers:
            w.add_image("spikes/raster", raster, global_step=step, dataformats="HWC")
            w.add_image("spikes/membrane", membrane, global_step=step, dataformats="HWC")
            w.add_text("spikes/sample", text, global_step=step)

    # -- data ---------------------------------------------------------------------------
    @torch.no_grad()
    def probe(self, net, image: torch.Tensor) -> dict:
        """Run ``net`` step by step on ``image`` ``[1, ...]``; spikes and membranes as
        ``[T, neurons]`` CPU tensors per layer (input first for spikes)."""
        was_training = net.training
        net.eval()
        try:
            param = next(net.parameters(), None)
            if param is not None and param.is_floating_point():  # e.g. bf16-true precision
                image = image.to(param.dtype)
            gen = torch.Generator(device=image.device).manual_seed(self.seed)
            train = net.encode(image, generator=gen)
            T = train.shape[0]
            x = train.reshape(T, 1, *net.input_shape)
            state = net.init_state(1, device=x.device, dtype=x.dtype)
            outs, mems = [], []
            for t in range(T):
                record: list[torch.Tensor] = []
                _, state = net.step(x[t], state, record)
                outs.append([r.reshape(-1).float().cpu() for r in record])
                mems.append([layer.neuron.membrane(s).reshape(-1).float().cpu() for layer, s in zip(net.layers, state)])
        finally:
            net.train(was_training)
        layers = [torch.stack(seq) for seq in zip(*outs)]
        spiking = [bool(getattr(layer.neuron, "spiking", True)) for layer in net.layers]
        scores = layers[-1].mean(0)
        n = len(net.layers)
        names = ["input"] + [f"layer {i}" if i < n - 1 else "output" for i in range(n)]
        vth = []
        for layer in net.layers:
            v = getattr(layer.neuron, "vth", None)
            vth.append(float(v.detach().float().mean()) if torch.is_tensor(v) else v)
        return {
            "spikes": [train.reshape(T, -1).float().cpu(), *layers],
            "binary": [bool(getattr(net.encoder, "binary", True)), *spiking],
            "membrane": [torch.stack(seq) for seq in zip(*mems)],
            "vth": vth,
            "names": names,
            "pred": int(scores.argmax()),
        }

    def _pick(self, probe: dict, label: int) -> list[list[int]]:
        picked = []
        for i, (spk, mem) in enumerate(zip(probe["spikes"][1:], probe["membrane"])):
            k = min(self.neurons, spk.shape[1])
            activity = spk.sum(0) + 1e-3 * mem.mean(0)  # spikes first, then mean membrane
            order = [int(j) for j in torch.argsort(activity, descending=True, stable=True)]
            if i == len(probe["membrane"]) - 1 and label < spk.shape[1]:
                order = [label] + [j for j in order if j != label]
            picked.append(sorted(order[:k]) if i < len(probe["membrane"]) - 1 else order[:k])
        return picked


def _canvas(fig):
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _render_raster(probe: dict, label: int, max_neurons: int, title: str):
    import numpy as np
    from matplotlib.figure import Figure

    spikes = probe["spikes"]
    T = spikes[0].shape[0]
    heights = [max(1.0, min(3.0, s.shape[1] ** 0.5 / 8)) for s in spikes]
    fig = Figure(figsize=(7, 1.2 + 1.1 * sum(heights)), dpi=80)
    axes = fig.subplots(len(spikes), 1, sharex=True, gridspec_kw={"height_ratios": heights})
    for k, (ax, s, binary, name) in enumerate(zip(axes, spikes, probe["binary"], probe["names"])):
        n = s.shape[1]
        rows = np.arange(n) if n <= max_neurons else np.linspace(0, n - 1, max_neurons).round().astype(int)
        data = s[:, rows].numpy()
        if binary:
            t_idx, r_idx = np.nonzero(data > 0)
            ax.scatter(t_idx, rows[r_idx], s=4 if len(rows) > 64 else 14, marker="|", c="k", linewidths=1)
            ax.set_ylim(n - 0.5, -0.5)  # neuron 0 on top, as in the image panels
        else:
            ax.imshow(
                data.T, aspect="auto", interpolation="nearest", cmap="viridis", extent=(-0.5, T - 0.5, n - 0.5, -0.5)
            )
        shown = f"{n}" if n <= max_neurons else f"{len(rows)} of {n}"
        ax.set_ylabel(f"{name}\n({shown})", fontsize=8)
        ax.tick_params(labelsize=7)
        if k == len(spikes) - 1 and label < n:
            ax.axhspan(label - 0.5, label + 0.5, color="tab:green", alpha=0.25, lw=0)
            if n <= 20:
                ax.set_yticks(range(n))
    axes[-1].set_xlim(-0.5, T - 0.5)
    axes[-1].set_xlabel("time step", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _canvas(fig)


def _render_membrane(probe: dict, picked: list[list[int]], title: str):
    from matplotlib.figure import Figure

    mems, spikes = probe["membrane"], probe["spikes"][1:]
    fig = Figure(figsize=(7, 0.6 + 1.5 * len(mems)), dpi=80)
    axes = fig.subplots(len(mems), 1, sharex=True, squeeze=False)[:, 0]
    T = mems[0].shape[0]
    for ax, mem, spk, idx, vth, binary, name in zip(
        axes, mems, spikes, picked, probe["vth"], probe["binary"][1:], probe["names"][1:]
    ):
        for j, c in zip(
            idx,
            (
                "tab:blue",
                "tab:orange",
                "tab:green",
                "tab:red",
                "tab:purple",
                "tab:brown",
                "tab:pink",
                "tab:gray",
                "tab:olive",
                "tab:cyan",
            )
            * 4,
        ):
            ax.plot(range(T), mem[:, j].numpy(), color=c, lw=1.2, label=f"#{j}")
            if binary:
                t_sp = spk[:, j].nonzero().flatten().numpy()
                ax.plot(t_sp, mem[t_sp, j].numpy(), "o", color=c, ms=3)
        if vth is not None:
            ax.axhline(vth, color="k", ls="--", lw=0.8)
        ax.set_ylabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="upper left", ncol=min(len(idx), 5), frameon=False)
    axes[-1].set_xlabel("time step", fontsize=8)
    fig.suptitle(title + " (dashed: vth, dots: spikes)", fontsize=9)
    fig.tight_layout()
    return _canvas(fig)
