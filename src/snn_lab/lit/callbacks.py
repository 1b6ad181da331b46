"""Callbacks: firing-rate summaries for TensorBoard."""

from __future__ import annotations

import pytorch_lightning as pl


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
            self.history.append({"epoch": trainer.current_epoch, "step": trainer.global_step,
                                 "val_acc": float(m["val/acc"]),
                                 "val_loss": float(m.get("val/loss", float("nan")))})

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
