"""``python -m snn_lab.train [overrides]``: train an SNN from the composed config.

Writes to the Hydra run dir: ``.hydra/`` (composed config), ``tensorboard/`` (events,
HPARAMS with final metrics), ``checkpoints/{last,best}.ckpt``, ``metrics.json``.
Returns the monitored metric (best ``val/acc``) for sweepers.
"""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core box spinning threads
# slowed a 2-epoch run from ~80 s to ~10 min (docs/BENCHMARKS.md). Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging
import math
import shutil
import sys
import time
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, register_configs, validate
from .data.mnist import DataError
from .io import atomic_write_json

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
log = logging.getLogger("snn_lab.train")
register_configs()

# Known-harmless chatter from Lightning on a CPU box.
for pattern in (".*does not have many workers.*", ".*GPU available but not used.*",
                ".*LeafSpec.*", ".*is deprecated.*"):
    warnings.filterwarnings("ignore", message=pattern)


class RunError(RuntimeError):
    """The run cannot proceed (output dir holds a finished run, unwritable...)."""


def _resolve_ckpt(cfg: DictConfig, ckpt_dir: Path, net: dict) -> str | None:
    from .lit.module import CheckpointError, read_checkpoint

    if cfg.ckpt_path is None:
        return None
    path = ckpt_dir / "last.ckpt" if cfg.ckpt_path == "last" else Path(cfg.ckpt_path)
    if cfg.ckpt_path == "last" and not path.exists():
        raise CheckpointError(f"ckpt_path=last but {path} does not exist; resume inside the killed run's "
                              "directory with hydra.run.dir=<that run dir> ckpt_path=last")
    ckpt = read_checkpoint(path)
    if ckpt["hyper_parameters"]["net"] != net:
        theirs = ckpt["hyper_parameters"]["net"]
        diff = sorted(k for k in set(net) | set(theirs) if net.get(k) != theirs.get(k))
        raise CheckpointError(f"ckpt_path={path} was trained with another network (differs in "
                              f"{', '.join(diff)}); use the same overrides as that run")
    return str(path)


def run(cfg: DictConfig) -> float:
    import pytorch_lightning as pl
    import torch

    from .config.build import build_datamodule, build_trainer, net_config, to_dict
    from .lit.callbacks import RunStats
    from .lit.module import SNNLitModule

    validate(cfg)  # before any data is touched
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    ckpt_dir = run_dir / "checkpoints"
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists() and cfg.ckpt_path is None:
        raise RunError(f"{run_dir} already holds a finished run (metrics.json); choose another "
                       "hydra.run.dir, or pass ckpt_path=last to continue it")
    if not os.access(run_dir, os.W_OK):
        raise RunError(f"run dir {run_dir} is not writable; set hydra.run.dir to a writable path")
    net = net_config(cfg)
    ckpt_path = _resolve_ckpt(cfg, ckpt_dir, net)
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank == 0:  # DDP children (rank > 0) share rank 0's run dir
        _save_config(cfg, run_dir)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    if cfg.target.threads:
        torch.set_num_threads(cfg.target.threads)
    dm = build_datamodule(cfg.data)
    model = SNNLitModule(net=net, optimizer=to_dict(cfg.optimizer), lr_schedule=to_dict(cfg.lr_schedule),
                         seed=cfg.seed)
    trainer = build_trainer(cfg, str(run_dir), str(ckpt_dir), cfg.monitor)
    stats = RunStats()
    trainer.callbacks.append(stats)

    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    fit_seconds = time.perf_counter() - t0
    if trainer.interrupted:
        raise RunError("training was interrupted; resume with ckpt_path=last in the same run dir")

    ckpt_cb = trainer.checkpoint_callback
    best_path = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
    test_acc = None
    if cfg.test and not cfg.trainer.fast_dev_run:
        res = trainer.test(model, datamodule=dm, ckpt_path=best_path, weights_only=True, verbose=False)
        test_acc = float(res[0]["test/acc"]) if res else None
    final_val = stats.history[-1]["val_acc"] if stats.history else None
    best_val = float(ckpt_cb.best_model_score) if best_path and ckpt_cb.best_model_score is not None else (
        max((h["val_acc"] for h in stats.history), default=None))
    if not trainer.is_global_zero:  # DDP: rank 0 alone writes metrics.json, deploys, logs HPARAMS
        return best_val if best_val is not None else float("nan")
    metrics = {
        "best_val_acc": best_val, "final_val_acc": final_val, "test_acc": test_acc,
        "epochs": trainer.current_epoch, "global_step": trainer.global_step,
        "wall_seconds": round(time.perf_counter() - t0, 2), "fit_seconds": round(fit_seconds, 2),
        "train_samples_per_second": round(stats.samples_per_second, 1)
        if not math.isnan(stats.samples_per_second) else None,
        "history": stats.history, "checkpoints": {"best": best_path, "last": str(ckpt_dir / "last.ckpt")
                                                  if (ckpt_dir / "last.ckpt").exists() else None},
        "run_dir": str(run_dir), "monitor": cfg.monitor, "world_size": trainer.world_size,
    }
    if cfg.deploy:
        metrics["deploy"] = _deploy(cfg, best_path or metrics["checkpoints"]["last"], run_dir)
    atomic_write_json(metrics_path, metrics)
    _log_hparams(trainer, cfg, metrics)
    shown = f"{100 * test_acc:.2f}%" if test_acc is not None else "n/a"
    print(f"snn_lab: test/acc={shown} best {cfg.monitor}="
          f"{'n/a' if best_val is None else f'{100 * best_val:.2f}%'} "
          f"epochs={trainer.current_epoch} wall={metrics['wall_seconds']:.0f}s run_dir={run_dir}")
    return best_val if best_val is not None else float("nan")


def _save_config(cfg: DictConfig, run_dir: Path) -> None:
    hc = HydraConfig.get()
    out = run_dir / ".hydra"
    out.mkdir(exist_ok=True)
    from .io import atomic_write_text

    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(out / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(hc.overrides.task))))
    atomic_write_text(out / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": OmegaConf.to_container(
        hc, resolve=False)}), resolve=False))


def _deploy(cfg: DictConfig, ckpt: str | None, run_dir: Path) -> dict:
    if ckpt is None:
        raise RunError("deploy needs a checkpoint: keep callbacks.checkpoint=true")
    from .config import deploy_backend_name
    from .deploy import run_deploy

    report = run_deploy(ckpt, backend=deploy_backend_name(cfg), batch_size=cfg.deploy_batch_size,
                        out_dir=run_dir / "deploy")
    return {k: report.get(k) for k in ("backend", "batch_size", "throughput", "deployed_accuracy",
                                       "eager_accuracy", "agreement", "report_path")}


def _log_hparams(trainer, cfg: DictConfig, metrics: dict) -> None:
    from pytorch_lightning.loggers import TensorBoardLogger

    flat = {}
    for group in ("neuron", "surrogate", "encoder", "readout", "model", "optimizer", "lr_schedule", "data"):
        for k, v in OmegaConf.to_container(cfg[group], resolve=True).items():
            flat[f"{group}.{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    flat.update(time_steps=cfg.time_steps, seed=cfg.seed, max_epochs=cfg.trainer.max_epochs)
    final = {f"hparams/{k}": v for k, v in metrics.items()
             if k in ("best_val_acc", "final_val_acc", "test_acc", "train_samples_per_second")
             and v is not None}
    for lg in trainer.loggers:
        if isinstance(lg, TensorBoardLogger):
            lg.log_hyperparams(flat, final)
            lg.finalize("success")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    from .lit.module import CheckpointError

    try:
        return run(cfg)
    except (ConfigError, DataError, CheckpointError, RunError, FloatingPointError) as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        if run_dir.is_dir() and set(os.listdir(run_dir)) <= {f"{HydraConfig.get().job.name}.log"}:
            shutil.rmtree(run_dir, ignore_errors=True)  # rejected before it wrote anything
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def check_output_dir(argv: list[str]) -> None:
    """Fail with one line, before Hydra starts, when the run/sweep dir cannot be created
    (Hydra itself would print a traceback)."""
    import tempfile

    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+") not in ("hydra.run.dir", "hydra.sweep.dir"):
            continue
        anc = Path(value.split("${", 1)[0] or ".")
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        if not anc.is_dir():
            _fail(f"{key}={value}: {anc} is a file, not a directory; choose another {key}")
        try:
            with tempfile.TemporaryFile(dir=anc):
                pass
        except OSError as e:
            _fail(f"{key}={value}: {anc} is not writable ({e.strerror}); choose another {key}")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    check_output_dir(sys.argv[1:] or [])
    if not any(a.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for a in sys.argv[1:]):
        check_output_dir(["hydra.run.dir=outputs"])
    main()
