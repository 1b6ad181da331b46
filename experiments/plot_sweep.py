#!/usr/bin/env python
"""Plot a multirun: accuracy vs each swept hyperparameter, learning curves, sweep history.

    python experiments/plot_sweep.py outputs/optuna/multirun/<timestamp>
    python experiments/plot_sweep.py <sweep dir> --out figs --metric test_acc

Reads every ``<sweep dir>/<job>/metrics.json`` (final metrics and the per-epoch
validation history) and ``<job>/.hydra/overrides.yaml`` (the job's overrides; the keys
whose values differ between jobs are the swept hyperparameters), plus the training
curves in ``<job>/tensorboard/`` when TensorBoard is installed. Writes PNGs (default
``<sweep dir>/plots/``):

* ``acc_vs_<key>.png``    the metric of every job against each swept key (numeric keys
                          on a linear or log axis, mean per value joined; categorical
                          keys as a strip); the best job is starred
* ``learning_curves.png`` validation accuracy and loss per epoch for every job (and the
                          training loss per epoch from TensorBoard)
* ``history.png``         the metric in job order with the best-so-far line (for Optuna:
                          the optimisation history)

Needs matplotlib (``pip install -e ".[sweep]"``). Exit status 2 with a one-line message
when the directory holds no finished job.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

METRICS = ("best_val_acc", "final_val_acc", "test_acc")


def _value(text: str):
    """An override's value as int/float when it is one, else the string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _overrides(job_dir: Path) -> dict:
    import yaml

    path = job_dir / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.exists() else None
    out = {}
    for item in items or []:
        if isinstance(item, str) and "=" in item:
            key, val = item.split("=", 1)
            out[key.lstrip("+~")] = _value(val)
    return out


def _tb_scalars(job_dir: Path, tags=("train/loss_epoch", "train/acc")) -> dict:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return {}
    curves: dict[str, list] = {}
    for ev in sorted((job_dir / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(ev), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in tags:
            if tag in acc.Tags().get("scalars", []):
                curves.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return curves


def load_jobs(sweep_dir: Path, tensorboard: bool = True) -> list[dict]:
    jobs = []
    for mpath in sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
        try:
            metrics = json.loads(mpath.read_text())
        except json.JSONDecodeError:
            continue
        job = {"job": mpath.parent.name, "dir": mpath.parent, "metrics": metrics, "overrides": _overrides(mpath.parent)}
        job["train_curves"] = _tb_scalars(mpath.parent) if tensorboard else {}
        jobs.append(job)
    return jobs


def swept_keys(jobs: list[dict]) -> list[str]:
    keys = sorted({k for j in jobs for k in j["overrides"]})
    return [k for k in keys if len({repr(j["overrides"].get(k)) for j in jobs}) > 1]


def _label(job: dict, keys: list[str]) -> str:
    parts = []
    for k in keys:
        v = job["overrides"].get(k)
        v = f"{v:.3g}" if isinstance(v, float) else v
        parts.append(f"{k.split('.')[-1]}={v}")
    return f"job {job['job']}" + (": " + " ".join(parts) if parts else "")


def _fig(w=6.0, h=4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_vs_param(jobs, key, metric, out: Path) -> Path:
    pts = [(j["overrides"].get(key), j["metrics"].get(metric), j) for j in jobs]
    pts = [(x, y, j) for x, y, j in pts if x is not None and y is not None]
    fig = _fig()
    ax = fig.add_subplot()
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _, _ in pts)
    if numeric:
        xs = [float(x) for x, _, _ in pts]
        ys = [100 * y for _, y, _ in pts]
        ax.scatter(xs, ys, color="tab:blue", zorder=3)
        means = {}
        for x, y in zip(xs, ys):
            means.setdefault(x, []).append(y)
        ux = sorted(means)
        if len(ux) > 1:
            ax.plot(ux, [sum(means[x]) / len(means[x]) for x in ux], color="tab:blue", alpha=0.5)
        if min(xs) > 0 and max(xs) / min(xs) >= 20:
            ax.set_xscale("log")
        bx, by = xs[max(range(len(ys)), key=ys.__getitem__)], max(ys)
    else:
        cats = sorted({str(x) for x, _, _ in pts})
        xs = [cats.index(str(x)) for x, _, _ in pts]
        ys = [100 * y for _, y, _ in pts]
        ax.scatter(xs, ys, color="tab:blue", zorder=3)
        ax.set_xticks(range(len(cats)), cats)
        bx, by = xs[max(range(len(ys)), key=ys.__getitem__)], max(ys)
    ax.scatter([bx], [by], marker="*", s=200, color="tab:red", zorder=4, label=f"best {by:.2f}%")
    ax.set_xlabel(key)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{metric} vs {key} ({len(pts)} jobs)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
    return _save(fig, out / f"acc_vs_{safe}.png")


def plot_learning_curves(jobs, keys, out: Path) -> Path:
    has_train = any(j["train_curves"].get("train/loss_epoch") for j in jobs)
    n = 3 if has_train else 2
    fig = _fig(4.0 * n, 4.0)
    axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    for i, job in enumerate(jobs):
        color = cmap(i / max(1, len(jobs) - 1))
        hist = job["metrics"].get("history") or []
        ep = [h["epoch"] + 1 for h in hist]
        label = _label(job, keys) if len(jobs) <= 12 else None
        axes[0].plot(ep, [100 * h["val_acc"] for h in hist], "o-", color=color, ms=3, label=label)
        axes[1].plot(ep, [h.get("val_loss", math.nan) for h in hist], "o-", color=color, ms=3)
        if has_train:
            tl = job["train_curves"].get("train/loss_epoch", [])
            axes[2].plot(range(1, len(tl) + 1), tl, "o-", color=color, ms=3)
    from matplotlib.ticker import MaxNLocator

    for ax, title in zip(axes, ("validation accuracy (%)", "validation loss", "training loss")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    if len(jobs) <= 12:
        axes[0].legend(fontsize=7, loc="best")
    return _save(fig, out / "learning_curves.png")


def plot_history(jobs, metric, out: Path) -> Path:
    ys = [(int(j["job"]) if j["job"].isdigit() else i, j["metrics"].get(metric)) for i, j in enumerate(jobs)]
    ys = sorted((x, 100 * y) for x, y in ys if y is not None)
    fig = _fig()
    ax = fig.add_subplot()
    ax.scatter([x for x, _ in ys], [y for _, y in ys], color="tab:blue", label=metric, zorder=3)
    best, run = [], -math.inf
    for _, y in ys:
        run = max(run, y)
        best.append(run)
    ax.step([x for x, _ in ys], best, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("job (trial) number")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title("sweep history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / "history.png")


def plot_sweep(
    sweep_dir: Path, out: Path | None = None, metric: str = "best_val_acc", tensorboard: bool = True
) -> list[Path]:
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir, tensorboard)
    if not jobs:
        raise FileNotFoundError(f"{sweep_dir} holds no finished job (no */metrics.json)")
    out = Path(out) if out is not None else sweep_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    keys = swept_keys(jobs)
    written = [plot_vs_param(jobs, k, metric, out) for k in keys]
    written.append(plot_learning_curves(jobs, keys, out))
    written.append(plot_history(jobs, metric, out))
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("sweep_dir", type=Path, help="a multirun directory (holds <job>/metrics.json)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: <sweep_dir>/plots)")
    p.add_argument("--metric", default="best_val_acc", choices=METRICS, help="metric on the y axis")
    p.add_argument("--no-tensorboard", action="store_true", help="skip the training curves from TensorBoard")
    args = p.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("error: plot_sweep needs matplotlib: pip install -e '.[sweep]'", file=sys.stderr)
        return 2
    try:
        written = plot_sweep(args.sweep_dir, args.out, args.metric, not args.no_tensorboard)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
