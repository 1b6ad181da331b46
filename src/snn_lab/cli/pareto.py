"""The Pareto front of a multi-objective sweep (``objectives=[...]``, e.g.
``hparams_search=mnist_pareto``: best validation accuracy against synaptic operations
per sample), from the finished jobs' ``metrics.json``: ``pareto.csv`` (every finished
job, with a ``pareto`` flag), ``pareto.md`` (the front) and, for two objectives,
``pareto.png`` (matplotlib, from the ``sweep`` extra)."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..io import atomic_write_text

log = logging.getLogger("snn_lab.sweep")
DIRECTIONS = ("maximize", "minimize")


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True when ``a`` is no worse than ``b`` in every objective and better in one."""
    signs = [1.0 if d == "maximize" else -1.0 for d in directions]
    no_worse = all(s * x >= s * y for s, x, y in zip(signs, a, b))
    better = any(s * x > s * y for s, x, y in zip(signs, a, b))
    return no_worse and better


def front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[bool]:
    """For each point: is it on the Pareto front (dominated by no other point)?"""
    return [not any(dominates(q, p, directions) for q in points) for p in points]


def lookup(metrics: dict[str, Any], name: str) -> float | None:
    """The number at the dotted path ``name`` of a ``metrics.json`` dict, else None."""
    node: Any = metrics
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def collect(sweep_dir: Path, objectives: Sequence[str]) -> list[dict[str, Any]]:
    """One row per finished job (``metrics.json``) with every objective recorded."""
    rows = []
    for path in sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
        try:
            metrics = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        values = [lookup(metrics, name) if isinstance(metrics, dict) else None for name in objectives]
        if any(v is None for v in values):
            continue
        overrides_path = path.parent / ".hydra" / "overrides.yaml"
        overrides: Any = OmegaConf.load(overrides_path) if overrides_path.exists() else []
        rows.append({"job": path.parent.name, "overrides": " ".join(str(o) for o in overrides), "values": values})
    return rows


def write_pareto(sweep_dir: Path, objectives: Sequence[str], directions: Sequence[str]) -> list[dict[str, Any]]:
    """Write ``pareto.csv``/``pareto.md`` (and ``pareto.png`` for two objectives) into
    ``sweep_dir``; returns the rows (with ``pareto``)."""
    rows = collect(sweep_dir, objectives)
    on = front([r["values"] for r in rows], directions)
    for r, flag in zip(rows, on):
        r["pareto"] = flag
    # the front first, then by the first objective, best first
    s0 = -1.0 if directions[0] == "maximize" else 1.0
    rows.sort(key=lambda r: (not r["pareto"], s0 * r["values"][0]))
    fields = ["job", *objectives, "pareto", "overrides"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(fields)
    for r in rows:
        writer.writerow([r["job"], *r["values"], r["pareto"], r["overrides"]])
    atomic_write_text(sweep_dir / "pareto.csv", buf.getvalue())
    goal = ", ".join(f"{d} {o}" for o, d in zip(objectives, directions))
    # the table shows what differs between jobs (the searched values); pareto.csv has all
    common = set.intersection(*(set(r["overrides"].split()) for r in rows)) if len(rows) > 1 else set()
    md = [
        f"Pareto front ({goal}): {sum(on)} of {len(rows)} finished job(s); every job, with all its "
        "overrides, is in pareto.csv.",
        "",
        "| job | " + " | ".join(objectives) + " | overrides that differ between jobs |",
        "|" + "---|" * (len(objectives) + 2),
    ]
    for r in rows:
        if r["pareto"]:
            vals = " | ".join(_fmt(v) for v in r["values"])
            own = " ".join(o for o in r["overrides"].split() if o not in common).replace("|", "\\|")
            md.append(f"| {r['job']} | {vals} | {own} |")
    atomic_write_text(sweep_dir / "pareto.md", "\n".join(md) + "\n")
    if len(objectives) == 2 and rows:
        _plot(sweep_dir / "pareto.png", rows, objectives, directions)
    return rows


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4f}"


def _plot(path: Path, rows: list[dict[str, Any]], objectives: Sequence[str], directions: Sequence[str]) -> None:
    """The second objective on x (e.g. synops), the first on y (e.g. accuracy): every
    job, the front joined as a staircase."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print("snn_lab: pareto.png skipped: matplotlib is not installed (pip install -e '.[sweep]')")
        return
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = [r["values"][1] for r in rows]
    ys = [r["values"][0] for r in rows]
    ax.scatter(xs, ys, c="0.6", s=24, label="trial")
    best = sorted((r for r in rows if r["pareto"]), key=lambda r: r["values"][1])
    fx, fy = [r["values"][1] for r in best], [r["values"][0] for r in best]
    ax.plot(fx, fy, "o-", color="tab:red", drawstyle="steps-post", label="Pareto front")
    for r in rows:
        ax.annotate(r["job"], (r["values"][1], r["values"][0]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    if min(xs) > 0 and max(xs) / min(xs) >= 20:
        ax.set_xscale("log")
    ax.set_xlabel(f"{objectives[1]} ({directions[1]})")
    ax.set_ylabel(f"{objectives[0]} ({directions[0]})")
    ax.set_title(f"{sum(r['pareto'] for r in rows)} Pareto-optimal of {len(rows)} finished jobs")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
