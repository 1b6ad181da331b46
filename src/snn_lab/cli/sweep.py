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
from .pareto import DIRECTIONS, lookup, write_pareto

COLUMNS = ("best_val_acc", "final_val_acc", "test_acc", "epochs", "wall_seconds", "train_samples_per_second")
#: efficiency columns (metrics.json's ``efficiency`` section, docs/EFFICIENCY.md)
EFFICIENCY_COLUMNS = {
    "synops": "efficiency.synops",
    "activation_sparsity": "efficiency.activation_sparsity",
    "energy_pj": "efficiency.energy.pj_per_sample",
}
FIELDS = ("job", "status", "overrides", *COLUMNS, *EFFICIENCY_COLUMNS, "error")
FAILED_FILE = "failed.json"  # written by a failed job (cli.train_app), in its run dir

#: the metrics.json values a run can return to a sweeper (``objectives=[...]``), with
#: the direction each is better in (the Pareto table's default, when the sweeper names none)
OBJECTIVES = {
    "best_val_acc": "maximize",
    "final_val_acc": "maximize",
    "test_acc": "maximize",
    "efficiency.synops": "minimize",
    "efficiency.effective_acs": "minimize",
    "efficiency.effective_macs": "minimize",
    "efficiency.activation_sparsity": "maximize",
    "efficiency.energy.pj_per_sample": "minimize",
    "efficiency.footprint.total_bytes": "minimize",
}


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
        row.update({k: lookup(metrics or {}, path) for k, path in EFFICIENCY_COLUMNS.items()})
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
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4f}"
    return "" if v is None else str(v).replace("|", "\\|")


def sqlite_path(storage: object) -> Path | None:
    """The file of an ``sqlite:///<path>`` storage URL (relative paths: to the working
    directory), else None."""
    if not isinstance(storage, str) or not storage.startswith("sqlite:///"):
        return None
    return Path(storage[len("sqlite:///") :])


def objective_directions(config: DictConfig) -> list[str]:
    """The direction of each of ``config.objectives``: the sweeper's ``direction`` when it
    has one per objective (Optuna), else each objective's own (:data:`OBJECTIVES`)."""
    objectives = list(config.get("objectives") or [])
    direction = OmegaConf.select(config, "hydra.sweeper.direction", default=None)
    if OmegaConf.is_list(direction) and len(direction) == len(objectives):
        return [str(getattr(d, "name", d)) for d in direction]
    return [OBJECTIVES.get(name, "maximize") for name in objectives]


def check_directions(config: DictConfig) -> None:
    """A sweeper with ``direction`` needs one value per returned objective (one when
    ``objectives`` is empty: the monitored value); Optuna would fail every trial."""
    direction = OmegaConf.select(config, "hydra.sweeper.direction", default=None)
    if direction is None:
        return
    directions = [str(getattr(d, "name", d)) for d in direction] if OmegaConf.is_list(direction) else [str(direction)]
    objectives = list(config.get("objectives") or [])
    if len(directions) != max(1, len(objectives)):
        fail(
            f"hydra.sweeper.direction has {len(directions)} direction(s) but each run returns "
            f"{max(1, len(objectives))} value(s) (objectives={objectives}); give one direction per objective"
        )
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        fail(f"hydra.sweeper.direction: {bad[0]!r} is unknown; accepted: {', '.join(DIRECTIONS)}")


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_directions(config)
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
        objectives = list(config.get("objectives") or [])
        if len(objectives) >= 2:
            done = write_pareto(sweep_dir, objectives, objective_directions(config))
            n_front = sum(r["pareto"] for r in done)
            print(f"snn_lab: Pareto front: {n_front} of {len(done)} finished job(s) in {sweep_dir / 'pareto.md'}")
        n_failed = sum(r["error"] is not None for r in rows)  # this attempt failed (maybe a refused rerun)
        if n_failed:
            fail(
                f"{n_failed} of {len(rows)} job(s) failed; see the status and error columns of {summary}",
                EXIT_JOBS_FAILED,
            )
