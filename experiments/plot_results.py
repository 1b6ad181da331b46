#!/usr/bin/env python
"""Compare finished runs: per-epoch accuracy curves (PNG) and a Markdown table.

    python experiments/plot_results.py seed=outputs/tutorial_mnist/runs/<ts> \
        best_fc=outputs/best_fc/runs/<ts> conv=outputs/conv_mnist/runs/<ts> --out docs

Reads each run's ``metrics.json`` (final metrics and the per-epoch validation history; a run with
``data.val_split=0``, like tutorial_mnist, validates on the test set)
and, when present, the training loss per epoch from its TensorBoard events. Writes
``<out>/results_curves.png`` and prints the table (also ``<out>/results_table.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="name=run_dir")
    ap.add_argument("--out", default="docs")
    ap.add_argument(
        "--tutorial",
        action="store_true",
        help="also mark the test accuracies the reference tutorial reports (after epochs 1, 10, 30)",
    )
    args = ap.parse_args(argv)
    runs = {}
    for item in args.runs:
        name, _, path = item.partition("=")
        m = Path(path) / "metrics.json"
        if not m.exists():
            print(f"error: {m} does not exist (is the run finished?)", file=sys.stderr)
            return 2
        runs[name] = (Path(path), json.loads(m.read_text()))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, (run, m) in runs.items():
        hist = m["history"]
        ax1.plot([h["epoch"] + 1 for h in hist], [100 * h["val_acc"] for h in hist], marker=".", label=name)
        loss = _train_loss(run)
        if loss:
            ax2.plot(range(1, len(loss) + 1), loss, marker=".", label=name)
    if args.tutorial:  # the reference tutorial (docs/REFERENCE.md): 92.63 after epoch 0, 96.83 after 9, 97.08 final
        ax1.plot([1, 10, 30], [92.63, 96.83, 97.08], "k*", markersize=9, label="reference tutorial (test)")
    ax1.set(xlabel="epoch", ylabel="held-out accuracy (%)", title="accuracy per epoch", ylim=(90, 100))
    ax2.set(xlabel="epoch", ylabel="training loss", title="training loss per epoch", yscale="log")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / "results_curves.png", dpi=120)

    rows = ["| run | test acc | best val acc | epochs | wall time | train samples/s |", "|---|---|---|---|---|---|"]
    for name, (_, m) in runs.items():
        t = m.get("test_acc")
        rows.append(
            f"| {name} | {100 * t:.2f}% | {100 * m['best_val_acc']:.2f}% | {m['epochs']} | "
            f"{m['wall_seconds'] / 60:.1f} min | {m.get('train_samples_per_second')} |"
        )
    table = "\n".join(rows) + "\n"
    (out / "results_table.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
