"""A callback of one's own: the per-layer firing rates of the last validation epoch,
written to ``<run dir>/rates.json`` (snn_lab logs them as ``rates/layer<i>``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl


class RateReport(pl.Callback):
    def __init__(self, filename: str = "rates.json"):
        self.filename = filename

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rates = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("rates/")}
        if trainer.is_global_zero and rates:
            out = Path(trainer.default_root_dir) / self.filename
            out.write_text(json.dumps({"epoch": trainer.current_epoch, **rates}, indent=2))
