"""Hydra callback: after a multirun, tabulate every job's metrics in the sweep dir
(``summary.csv`` and ``summary.md``), whatever the launcher or sweeper."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..io import atomic_write_text

COLUMNS = ("best_val_acc", "final_val_acc", "test_acc", "epochs", "wall_seconds", "train_samples_per_second")


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for metrics_path in sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
        job_dir = metrics_path.parent
        overrides_path = job_dir / ".hydra" / "overrides.yaml"
        overrides: Iterable[object] = OmegaConf.load(overrides_path) if overrides_path.exists() else []
        try:
            metrics = json.loads(metrics_path.read_text())
        except json.JSONDecodeError:
            continue
        row = {"job": job_dir.name, "overrides": " ".join(str(o) for o in overrides)}
        row.update({k: metrics.get(k) for k in COLUMNS})
        rows.append(row)
    return rows


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = collect(sweep_dir)
    fields = ["job", "overrides", *COLUMNS]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(sweep_dir / "summary.csv", buf.getvalue())
    md = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    for r in sorted(rows, key=lambda r: -(r["best_val_acc"] or 0)):
        md.append("| " + " | ".join(_fmt(r[f]) for f in fields) + " |")
    atomic_write_text(sweep_dir / "summary.md", "\n".join(md) + "\n")
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            rows = write_summary(sweep_dir)
            print(f"snn_lab: {len(rows)} job(s) summarised in {sweep_dir / 'summary.md'}")
