#!/usr/bin/env python
"""Aggregate finished runs over seeds: one table (mean +- std, min, epochs, wall time,
efficiency, deploy throughput, machine), per-epoch curves (PNG) and, for the reference
recipe, its per-epoch accuracy beside the reference tutorial's published points.

    python experiments/plot_results.py \\
        tutorial_mnist=outputs/results/tutorial_mnist_s20231026,outputs/results/tutorial_mnist_s1,... \\
        best_fc=<dir>,<dir>,<dir> --tutorial tutorial_mnist \\
        --deploy tutorial_mnist=<deploy_report.json> --out docs

Each ``name=dir,dir,...`` is one row: the seeds of one recipe. Every figure is read from
the runs' ``metrics.json`` (``test_acc`` is what its ``selection`` says: the final epoch
when the run validated on the test set, else the checkpoint selected on held-out
training images; ``history`` holds the per-epoch validation accuracy) and, for the loss
curve, their TensorBoard events. ``--deploy name=report.json`` adds a deploy report's
throughput (``python -m snn_lab.deploy``). Writes ``<out>/results_curves.png`` and
``<out>/results_table.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

# the reference tutorial's published test accuracies after these epochs (0-based; docs/REFERENCE.md)
TUTORIAL_POINTS = {0: 92.63, 9: 96.83, 10: 96.94, 11: 96.97, 12: 97.02, 29: 97.08}


def _train_loss(run: Path) -> list[float]:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return []
    values: dict[int, float] = {}
    for ev in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(ev))
        acc.Reload()
        if "train/loss_epoch" in acc.Tags()["scalars"]:
            for e in acc.Scalars("train/loss_epoch"):
                values[e.step] = e.value
    return [values[k] for k in sorted(values)]


def _stats(values: list[float]) -> tuple[float, float, float, float]:
    """mean, sample std (0 for one run), min, max."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std, min(values), max(values)


def _load(group: str) -> list[tuple[Path, dict]]:
    runs = []
    for part in group.split(","):
        path = Path(part)
        m = path / "metrics.json"
        if not m.exists():
            raise SystemExit(f"error: {m} does not exist (is the run finished?)")
        runs.append((path, json.loads(m.read_text())))
    return runs


def _machine(runs: list[tuple[Path, dict]]) -> str:
    hosts = {json.dumps(m.get("host"), sort_keys=True) for _, m in runs}
    if hosts == {"null"}:
        return "not recorded"
    host = next(m["host"] for _, m in runs if m.get("host"))
    loads = [x for _, m in runs if m.get("host") for x in m["host"].get("loadavg_1m", [])]
    load = f", load {min(loads):.1f}-{max(loads):.1f}" if loads else ""
    return f"{host.get('cpu', '?')}, {host.get('cpu_count', '?')} cores, {host.get('gpu', 'no GPU')}{load}"


def _row(name: str, runs: list[tuple[Path, dict]], deploy: dict | None, decimals: int = 2) -> str:
    accs = [100 * m["test_acc"] for _, m in runs]
    mean, std, lo, _ = _stats(accs)
    selected = {m.get("selection", {}).get("validated_on", "?") for _, m in runs}
    weights = {m.get("selection", {}).get("weights", "?") for _, m in runs}
    how = (
        "final epoch (validated on the test set)" if weights == {"final"} else f"best on {', '.join(sorted(selected))}"
    )
    epochs = sorted({m["epochs"] for _, m in runs})
    walls = [m["wall_seconds"] / 60 for _, m in runs]
    sps = [m["train_samples_per_second"] for _, m in runs if m.get("train_samples_per_second")]
    effs = [m.get("efficiency") or {} for _, m in runs]
    synops = [e["synops"] for e in effs if e.get("synops") is not None]
    sparsity = [e["activation_sparsity"] for e in effs if e.get("activation_sparsity") is not None]
    syn = f"{statistics.fmean(synops) / 1e6:.2f} M" if synops else "n/a"
    spa = f"{statistics.fmean(sparsity):.3f}" if sparsity else "n/a"
    dep = (
        f"{deploy['throughput']:,.0f}/s ({deploy['backend']}, batch {deploy['batch_size']})"
        if deploy
        else "not measured"
    )
    return (
        f"| {name} | {len(runs)} | **{mean:.{decimals}f} +- {std:.{decimals}f}%** | {lo:.2f}% | {how} | "
        f"{'/'.join(map(str, epochs))} | {statistics.fmean(walls):.1f} min "
        f"({min(walls):.1f}-{max(walls):.1f}) | "
        f"{statistics.fmean(sps):,.0f} | {syn} | {spa} | {dep} | {_machine(runs)} |"
    )


def _tutorial_table(runs: list[tuple[Path, dict]]) -> str:
    rows = [
        "| epoch | reference tutorial | mean | min | max |",
        "|---|---|---|---|---|",
    ]
    for epoch, published in TUTORIAL_POINTS.items():
        accs = [100 * h["val_acc"] for _, m in runs for h in m["history"] if h["epoch"] == epoch]
        if len(accs) != len(runs):
            continue
        mean, _, lo, hi = _stats(accs)
        rows.append(f"| {epoch} | {published:.2f} | {mean:.2f} | {lo:.2f} | {hi:.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="name=run_dir[,run_dir...]: one row, its seeds")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--tutorial", metavar="NAME", help="the row that runs the reference tutorial's recipe")
    ap.add_argument("--deploy", action="append", default=[], metavar="NAME=REPORT", help="a deploy_report.json")
    ap.add_argument(
        "--decimals",
        type=int,
        default=2,
        help="decimals of the mean and std (3 where rounding to 2 would carry a mean past a mark it misses)",
    )
    args = ap.parse_args(argv)
    groups: dict[str, list[tuple[Path, dict]]] = {}
    for item in args.runs:
        name, _, paths = item.partition("=")
        if not paths:
            print(f"error: {item!r} is not name=run_dir[,run_dir...]", file=sys.stderr)
            return 2
        groups[name] = _load(paths)
    deploys: dict[str, dict] = {}
    for item in args.deploy:
        name, _, path = item.partition("=")
        deploys[name] = json.loads(Path(path).read_text())
    if args.tutorial and args.tutorial not in groups:
        print(f"error: --tutorial {args.tutorial}: no such row", file=sys.stderr)
        return 2

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in groups.items():
        n = min(len(m["history"]) for _, m in runs)
        per_epoch = [[100 * m["history"][i]["val_acc"] for _, m in runs] for i in range(n)]
        x = [m_["epoch"] + 1 for m_ in runs[0][1]["history"][:n]]
        line = ax1.plot(x, [statistics.fmean(v) for v in per_epoch], marker=".", label=f"{name} ({len(runs)} seeds)")
        ax1.fill_between(
            x, [min(v) for v in per_epoch], [max(v) for v in per_epoch], alpha=0.2, color=line[0].get_color()
        )
        losses = [loss for loss in (_train_loss(run) for run, _ in runs) if loss]
        if losses:
            k = min(len(loss) for loss in losses)
            ax2.plot(
                range(1, k + 1),
                [statistics.fmean(loss[i] for loss in losses) for i in range(k)],
                marker=".",
                label=name,
            )
    if args.tutorial:
        ax1.plot(
            [e + 1 for e in TUTORIAL_POINTS],
            list(TUTORIAL_POINTS.values()),
            "k*",
            markersize=9,
            label="reference tutorial",
        )
    ax1.set(
        xlabel="epochs trained",
        ylabel="validation accuracy (%)",
        title="accuracy per epoch (mean, min-max)",
        ylim=(90, 100),
    )
    ax2.set(xlabel="epochs trained", ylabel="training loss", title="training loss per epoch (mean)", yscale="log")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / "results_curves.png", dpi=120)

    rows = [
        "| run | seeds | test accuracy (mean +- std) | min | selected | epochs | wall time (mean, range) | "
        "train samples/s | synops/sample | activation sparsity | deploy throughput | machine |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows += [_row(name, runs, deploys.get(name), args.decimals) for name, runs in groups.items()]
    text = "\n".join(rows) + "\n"
    if args.tutorial:
        text += f"\nPer-epoch test accuracy of `{args.tutorial}` (%), beside the reference tutorial's:\n\n"
        text += _tutorial_table(groups[args.tutorial]) + "\n"
    (out / "results_table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
