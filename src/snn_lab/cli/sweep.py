"""Hydra callback: after a multirun, tabulate every job in the sweep dir
(``summary.csv`` and ``summary.md``), whatever the launcher or sweeper, and end the
sweep with a non-zero exit when a job failed. Before it, create the directory of an
SQLite Optuna storage (SQLite creates the file, not its directory)."""

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
from .errors import EXIT_JOBS_FAILED, fail

COLUMNS = ("best_val_acc", "final_val_acc", "test_acc", "epochs", "wall_seconds", "train_samples_per_second")
FIELDS = ("job", "status", "overrides", *COLUMNS, "error")
FAILED_FILE = "failed.json"  # written by a failed job (cli.train), in its run dir


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job dir holding ``metrics.json`` or ``failed.json``, in job order.

    ``status`` is ``ok`` for a job whose run finished (its ``metrics.json``), ``failed``
    otherwise; ``error`` is the latest attempt's one-line error (``failed.json``, removed
    when the job starts again). A finished job whose rerun was refused (the same sweep
    dir again, without ``ckpt_path=auto``) keeps its metrics and status ok, with the
    refusal in ``error``: a rerun never loses a good row."""
    rows = []
    job_dirs = {p.parent for name in ("metrics.json", FAILED_FILE) for p in sweep_dir.glob(f"*/{name}")}
    for job_dir in sorted(job_dirs, key=lambda p: (len(p.name), p.name)):
        failed = _read_json(job_dir / FAILED_FILE) if (job_dir / FAILED_FILE).exists() else None
        metrics = _read_json(job_dir / "metrics.json") if (job_dir / "metrics.json").exists() else None
        if failed is None and metrics is None:
            continue
        overrides_path = job_dir / ".hydra" / "overrides.yaml"
        overrides: Iterable[object]
        if metrics is None and failed is not None:
            overrides = failed.get("overrides") or []
        else:
            overrides = OmegaConf.load(overrides_path) if overrides_path.exists() else []
        row: dict[str, Any] = {
            "job": job_dir.name,
            "status": "ok" if metrics is not None else "failed",
            "overrides": " ".join(str(o) for o in overrides),
        }
        row.update({k: (metrics or {}).get(k) for k in COLUMNS})
        row["error"] = failed.get("error") if failed is not None else None
        rows.append(row)
    return rows


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = collect(sweep_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(sweep_dir / "summary.csv", buf.getvalue())
    md = ["| " + " | ".join(FIELDS) + " |", "|" + "---|" * len(FIELDS)]
    for r in sorted(rows, key=lambda r: (r["status"] != "ok", -(r["best_val_acc"] or 0))):
        md.append("| " + " | ".join(_fmt(r[f]) for f in FIELDS) + " |")
    atomic_write_text(sweep_dir / "summary.md", "\n".join(md) + "\n")
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v).replace("|", "\\|")


def sqlite_path(storage: object) -> Path | None:
    """The file of an ``sqlite:///<path>`` storage URL (relative paths: to the working
    directory), else None."""
    if not isinstance(storage, str) or not storage.startswith("sqlite:///"):
        return None
    return Path(storage[len("sqlite:///") :])


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        db = sqlite_path(OmegaConf.select(config, "hydra.sweeper.storage", default=None))
        if db is None:
            return
        import sqlalchemy  # Optuna's dependency; the sweeper is Optuna's

        if int(sqlalchemy.__version__.split(".")[0]) >= 2:
            fail(
                f"hydra.sweeper.storage={config.hydra.sweeper.storage}: the Optuna sweeper's optuna 2.x "
                f"cannot use SQLAlchemy {sqlalchemy.__version__}; pip install 'sqlalchemy<2' 'alembic<1.14', "
                "or pass hydra.sweeper.storage=null (an in-memory study)"
            )
        db.parent.mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = write_summary(sweep_dir)
        summary = sweep_dir / "summary.md"
        print(f"snn_lab: {len(rows)} job(s) summarised in {summary}")
        n_failed = sum(r["error"] is not None for r in rows)  # this attempt failed (maybe a refused rerun)
        if n_failed:
            fail(
                f"{n_failed} of {len(rows)} job(s) failed; see the status and error columns of {summary}",
                EXIT_JOBS_FAILED,
            )
