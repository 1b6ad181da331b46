"""``python -m snn_lab.train [overrides]``: train an SNN from the composed config.

Writes to the Hydra run dir: ``.hydra/`` (composed config), ``tensorboard/`` (events,
HPARAMS with final metrics), ``checkpoints/{last,best}.ckpt``, ``metrics.json`` (with an
``efficiency`` section: docs/EFFICIENCY.md). Returns the monitored metric (best
``val/acc``) for sweepers, or the ``objectives`` list's values (a multi-objective
search); a failed job of a multirun returns ``"failed: <error>"`` and leaves
``failed.json`` in its dir (docs/SWEEPS.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from .. import _native, engine
from ..config import deploy_backend_name, register_configs, validate
from ..config.build import build_datamodule, build_trainer, net_config, to_dict
from ..deploy import run_deploy
from ..errors import CheckpointError, ConfigError, RunError, SnnLabError
from ..host import loadavg, machine_info
from ..io import atomic_write_json, atomic_write_text
from ..lit.callbacks import RunStats
from ..lit.module import SNNLitModule
from ..models import load_weights, net_diff, read_checkpoint, upgrade_net_config
from ..models.efficiency import EnergyModel
from .errors import one_line, user_errors
from .sweep import FAILED_FILE, OBJECTIVES, lookup

log = logging.getLogger("snn_lab.train")
register_configs()


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Mute Lightning's known-harmless advice on a CPU machine, for this call only."""
    with warnings.catch_warnings():
        for pattern in (".*does not have many workers.*", ".*GPU available but not used.*", ".*LeafSpec.*"):
            warnings.filterwarnings("ignore", message=pattern)
        yield


def _resolve_ckpt(cfg: DictConfig, ckpt_dir: Path, net: dict) -> str | None:
    """``None``: start fresh; ``last``: the run dir's ``last.ckpt``, which must exist;
    ``auto``: ``last.ckpt`` when it exists, else start fresh; else a path."""
    if cfg.ckpt_path is None:
        return None
    last = ckpt_dir / "last.ckpt"
    if cfg.ckpt_path == "auto":
        if not last.exists():
            return None
        log.info("ckpt_path=auto: resuming from %s", last)
    path = last if cfg.ckpt_path in ("last", "auto") else Path(cfg.ckpt_path)
    if cfg.ckpt_path == "last" and not path.exists():
        raise CheckpointError(
            f"ckpt_path=last but {path} does not exist; resume inside the killed run's "
            "directory with hydra.run.dir=<that run dir> ckpt_path=last (or ckpt_path=auto: "
            "resume when last.ckpt exists, else start fresh)"
        )
    ckpt = read_checkpoint(path)
    theirs = upgrade_net_config(ckpt["hyper_parameters"]["net"])
    if theirs != net:
        raise CheckpointError(
            f"ckpt_path={path} was trained with another network (differs in "
            f"{', '.join(net_diff(net, theirs))}); "
            "use the same overrides as that run"
        )
    return str(path)


def _prepare_run_dir(cfg: DictConfig) -> Path:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if (run_dir / "metrics.json").exists() and (cfg.ckpt_path is None or not cfg.train):
        raise RunError(
            f"{run_dir} already holds a finished run (metrics.json); choose another "
            "hydra.run.dir, or pass ckpt_path=last to continue it"
        )
    if not os.access(run_dir, os.W_OK):
        raise RunError(f"run dir {run_dir} is not writable; set hydra.run.dir to a writable path")
    return run_dir


def _rank_zero() -> bool:
    """True on global rank 0 (and without DDP). Lightning sets ``rank_zero_only.rank`` on
    import; the decorator's stub does not declare the attribute."""
    return getattr(rank_zero_only, "rank", 0) == 0


def _set_up_process(cfg: DictConfig) -> None:
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    if cfg.target.threads:
        torch.set_num_threads(cfg.target.threads)
    engine.configure(**to_dict(cfg.engine))


def _host(trainer: pl.Trainer, load_start: list[float] | None) -> dict[str, Any]:
    """metrics.json's ``host``: the machine, and the 1-minute load at the start and end."""
    return {
        **machine_info(trainer.strategy.root_device),
        "loadavg_1m": [x[0] for x in (load_start, loadavg()) if x is not None],
    }


def _check_efficiency(cfg: DictConfig) -> None:
    """The efficiency section and the objectives, before any data is touched."""
    for key in ("ac_pj", "mac_pj"):
        try:
            EnergyModel(**{key: cfg.efficiency[key]})
        except ValueError as e:
            raise ConfigError(f"efficiency.{e}") from None
    for name in cfg.objectives:
        if name not in OBJECTIVES:
            raise ConfigError(f"objectives: {name!r} is unknown; accepted: {', '.join(OBJECTIVES)}")
        if name.startswith("efficiency.") and not cfg.efficiency.enabled:
            raise ConfigError(f"objectives: {name} needs efficiency.enabled=true")


def _objective(cfg: DictConfig, metrics: dict[str, Any], monitored: float | None) -> float | list[float]:
    """What the run returns to a sweeper: the monitored value, or the ``objectives``
    (NaN where metrics.json has no such value)."""
    if not cfg.objectives:
        return monitored if monitored is not None else float("nan")
    values = [lookup(metrics, name) for name in cfg.objectives]
    return [float("nan") if v is None else v for v in values]


def run(cfg: DictConfig) -> float | list[float]:
    if cfg.print_config and _rank_zero():
        print(config_tree(cfg), flush=True)
    validate(cfg)  # before any data is touched
    _check_efficiency(cfg)
    if not cfg.train:
        return evaluate(cfg)
    finished = Path(HydraConfig.get().runtime.output_dir) / "metrics.json"
    if cfg.ckpt_path == "auto" and finished.exists():
        return _report_finished(cfg, finished)
    run_dir = _prepare_run_dir(cfg)
    ckpt_dir = run_dir / "checkpoints"
    net = net_config(cfg)
    ckpt_path = _resolve_ckpt(cfg, ckpt_dir, net)
    _set_up_process(cfg)
    # every part is built before anything is written, so a bad part leaves no trace
    dm = build_datamodule(cfg.data)
    model = SNNLitModule(
        net=net,
        optimizer=to_dict(cfg.optimizer),
        lr_schedule=to_dict(cfg.lr_schedule),
        seed=cfg.seed,
        efficiency=to_dict(cfg.efficiency),
    )
    trainer = build_trainer(cfg, str(run_dir), str(ckpt_dir), cfg.monitor)
    stats = RunStats()
    # Trainer.callbacks is assigned by Lightning's CallbackConnector, not declared on the class
    trainer.callbacks.append(stats)  # type: ignore[attr-defined]
    if _rank_zero():  # DDP children (rank > 0) share rank 0's run dir
        _save_config(cfg, run_dir)
        _log_config(trainer, cfg)

    load_start = loadavg()
    t0 = time.perf_counter()
    with quiet_lightning():
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    fit_seconds = time.perf_counter() - t0
    # every epoch's figures, before testing the best checkpoint loads its own (shorter) history
    efficiency_history = list(model.efficiency_history)
    if trainer.interrupted:
        raise RunError("training was interrupted; resume with ckpt_path=last in the same run dir")

    ckpt_cb = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
    best_path = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
    last_path = str(ckpt_dir / "last.ckpt") if (ckpt_dir / "last.ckpt").exists() else None
    selection = _selection(dm, cfg)
    # validated on the test set: the final epoch's weights are tested, deployed and counted
    # (picking the best of them would select on the set reported)
    selected_path = last_path if selection["weights"] == "final" else best_path
    test_acc = None
    if cfg.test and not cfg.trainer.get("fast_dev_run"):
        test_ckpt = best_path if selection["weights"] == "best" else None  # None: the weights in memory
        with quiet_lightning():
            res = trainer.test(model, datamodule=dm, ckpt_path=test_ckpt, weights_only=True, verbose=False)
        test_acc = float(res[0]["test/acc"]) if res else None
    final_val = stats.history[-1]["val_acc"] if stats.history else None
    best_val = (
        float(ckpt_cb.best_model_score)
        if best_path and ckpt_cb is not None and ckpt_cb.best_model_score is not None
        else (max((h["val_acc"] for h in stats.history if h["val_acc"] is not None), default=None))
    )
    if not trainer.is_global_zero:  # DDP: rank 0 alone writes metrics.json, deploys, logs HPARAMS
        return best_val if best_val is not None else float("nan")
    metrics: dict[str, Any] = {
        "mode": "train",
        "best_val_acc": best_val,
        "final_val_acc": final_val,
        "test_acc": test_acc,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "fit_seconds": round(fit_seconds, 2),
        "train_samples_per_second": round(stats.samples_per_second, 1)
        if not math.isnan(stats.samples_per_second)
        else None,
        "selection": selection,
        "history": stats.history,
        "efficiency": _efficiency_section(
            cfg, model, best_path if selection["weights"] == "best" else None, efficiency_history
        ),
        "checkpoints": {"best": best_path, "last": last_path, "selected": selected_path},
        "run_dir": str(run_dir),
        "monitor": cfg.monitor,
        "world_size": trainer.world_size,
        "tags": list(cfg.tags),
        "kernels": _native.describe(),
        "engine": dataclasses.asdict(engine.options()),
        # the wall times above depend on the machine and on what else ran on it
        "host": _host(trainer, load_start),
    }
    if cfg.deploy:
        metrics["deploy"] = _deploy(cfg, selected_path or last_path, run_dir)
    atomic_write_json(run_dir / "metrics.json", metrics)
    _log_final(trainer, cfg, metrics)
    shown = f"{100 * test_acc:.2f}%" if test_acc is not None else "n/a"
    if test_acc is not None:
        final = selection["weights"] == "final"
        shown += " (final epoch: validated on the test set)" if final else " (best checkpoint)"
    print(
        f"snn_lab: test/acc={shown} best {cfg.monitor}="
        f"{'n/a' if best_val is None else f'{100 * best_val:.2f}%'} "
        f"epochs={trainer.current_epoch} wall={metrics['wall_seconds']:.0f}s run_dir={run_dir}"
    )
    eff = metrics["efficiency"]
    if eff and eff.get("synops") is not None:
        sparsity = eff["activation_sparsity"]
        energy_uj = eff["energy"]["pj_per_sample"] / 1e6
        print(
            f"snn_lab efficiency (validation, epoch {eff['epoch']}): {eff['synops']:.4g} synops/sample "
            f"({eff['effective_acs']:.4g} ACs, {eff['effective_macs']:.4g} MACs), activation sparsity "
            f"{'n/a' if sparsity is None else f'{sparsity:.4f}'}, ~{energy_uj:.4g} uJ/sample "
            "(arithmetic-only estimate)"
        )
    return _objective(cfg, metrics, best_val)


def _selection(dm: Any, cfg: DictConfig) -> dict[str, Any]:
    """metrics.json's ``selection``: which weights ``test_acc`` belongs to, and why. A run
    that validates on the test set (``data.val_split=0``, the reference tutorial's
    protocol) reports its final epoch, as the tutorial reports its 97.08%; otherwise the
    best checkpoint by ``monitor`` on the held-out validation samples."""
    if getattr(dm, "validates_on_test", False):
        return {
            "weights": "final",
            "validated_on": "test set",
            "note": f"validation ran on the test set, so no checkpoint was selected on it: test_acc is "
            f"the final epoch's; best_val_acc is the best test-set {cfg.monitor} over epochs, not a "
            "held-out figure",
        }
    held_out = (
        f"{dm.val_split} held-out training samples"
        if hasattr(dm, "validates_on_test")
        else "the data module's validation set"
    )
    return {
        "weights": "best",
        "validated_on": held_out,
        "note": f"test_acc is the checkpoint with the best {cfg.monitor} on {held_out}",
    }


def _efficiency_section(
    cfg: DictConfig, model: SNNLitModule, best_path: str | None, history: list[dict]
) -> dict[str, Any] | None:
    """metrics.json's ``efficiency``: the validation counts of the best checkpoint's
    weights (its own record, saved with it), else of the last validation epoch's, and
    every validation epoch's headline figures (``history``)."""
    if not cfg.efficiency.enabled:
        return None
    record, weights = None, "the weights after the last validation epoch (no best checkpoint)"
    if best_path:
        record = read_checkpoint(best_path).get("efficiency")
        weights = f"the weights of the best checkpoint ({Path(best_path).name}, best {cfg.monitor})"
    if record is None:
        record, weights = model.efficiency, "the weights after the last validation epoch"
    if record is None:
        return {"measured_on": "nothing: no validation epoch ran (trainer.limit_val_batches=0?)"}
    out: dict[str, Any] = {
        "measured_on": f"validation set, {record['samples']} samples, epoch {record['epoch']}, {weights}"
    }
    out.update(record)
    out["history"] = history
    return out


def _report_finished(cfg: DictConfig, path: Path) -> float | list[float]:
    """``ckpt_path=auto`` in a run dir that holds a finished run: nothing is trained or
    written; its ``metrics.json`` is reported again (the monitored value is returned)."""
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunError(f"{path} cannot be read ({e}); move it away to train this run again") from None
    best = metrics.get("best_val_acc")
    test_acc = metrics.get("test_acc")
    print(
        f"snn_lab: already finished, skipped (ckpt_path=auto): test/acc="
        f"{'n/a' if test_acc is None else f'{100 * test_acc:.2f}%'} best {metrics.get('monitor', 'val/acc')}="
        f"{'n/a' if best is None else f'{100 * best:.2f}%'} run_dir={path.parent}"
    )
    return _objective(cfg, metrics, float(best) if isinstance(best, (int, float)) else None)


def _overridden(key: str) -> bool:
    """True when ``key=...`` was given on the command line."""
    return any(o.lstrip("+~").split("=", 1)[0] == key for o in HydraConfig.get().overrides.task)


def evaluate(cfg: DictConfig) -> float | list[float]:
    """``train=false`` / ``snn-eval``: the test metrics of ``ckpt_path`` on the configured
    data, logged to the configured loggers and written to ``metrics.json``. The network
    comes from the checkpoint; ``time_steps=`` on the command line changes its T."""
    run_dir = _prepare_run_dir(cfg)
    path = Path(cfg.ckpt_path).resolve()
    ckpt = read_checkpoint(path)
    net = upgrade_net_config(ckpt["hyper_parameters"]["net"])
    if _overridden("time_steps"):
        net["time_steps"] = int(cfg.time_steps)
    _set_up_process(cfg)
    dm = build_datamodule(cfg.data)
    model = SNNLitModule(net=net, seed=cfg.seed)
    load_weights(model.net, ckpt, path)  # the file is read once
    trainer = build_trainer(cfg, str(run_dir), str(run_dir / "checkpoints"), cfg.monitor)
    if _rank_zero():
        _save_config(cfg, run_dir)
        _log_config(trainer, cfg)
    log.info("evaluating %s (T=%d); the model/neuron/encoder groups are not used", path, net["time_steps"])
    load_start = loadavg()
    t0 = time.perf_counter()
    with quiet_lightning():
        res = trainer.test(model, datamodule=dm, verbose=False)
    if not trainer.is_global_zero:
        return float("nan")
    out = res[0] if res else {}
    metrics: dict[str, Any] = {
        "mode": "eval",
        "checkpoint": str(path),
        "test_acc": float(out["test/acc"]) if "test/acc" in out else None,
        "test_loss": float(out["test/loss"]) if "test/loss" in out else None,
        "time_steps": net["time_steps"],
        "data": to_dict(cfg.data),
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "run_dir": str(run_dir),
        "tags": list(cfg.tags),
        "kernels": _native.describe(),
        # the wall times above depend on the machine and on what else ran on it
        "host": _host(trainer, load_start),
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    _log_final(trainer, cfg, metrics)
    acc = metrics["test_acc"]
    print(
        f"snn_lab eval: test/acc={'n/a' if acc is None else f'{100 * acc:.2f}%'} T={net['time_steps']} "
        f"checkpoint={path} run_dir={run_dir}"
    )
    return _objective(cfg, metrics, acc)


def config_tree(cfg: DictConfig) -> str:
    """The composed config as a tree: one branch per top-level key."""
    lines = ["config"]
    keys = list(cfg.keys())
    for n, key in enumerate(keys):
        last = n == len(keys) - 1
        value = cfg[key]
        name = str(key)  # a str in Hydra's configs
        body = OmegaConf.to_yaml(value, resolve=False) if OmegaConf.is_config(value) else f"{value}\n"
        if not OmegaConf.is_config(value) or not body.strip() or body.strip() in ("{}", "[]"):
            lines.append(f"{'└──' if last else '├──'} {name}: {body.strip() or 'null'}")
            continue
        lines.append(f"{'└──' if last else '├──'} {name}")
        pad = "    " if last else "│   "
        lines.extend(pad + line for line in body.rstrip().splitlines())
    return "\n".join(lines)


def _save_config(cfg: DictConfig, run_dir: Path) -> None:
    hc = HydraConfig.get()
    out = run_dir / ".hydra"
    out.mkdir(exist_ok=True)
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(out / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(hc.overrides.task))))
    atomic_write_text(
        out / "hydra.yaml",
        OmegaConf.to_yaml(OmegaConf.create({"hydra": OmegaConf.to_container(hc, resolve=False)}), resolve=False),
    )


def _deploy(cfg: DictConfig, ckpt: str | None, run_dir: Path) -> dict:
    if ckpt is None:
        raise RunError("deploy needs a checkpoint: keep callbacks.checkpoint=true")
    report = run_deploy(
        ckpt, backend=deploy_backend_name(cfg), batch_size=cfg.deploy_batch_size, out_dir=run_dir / "deploy"
    )
    return {
        k: report.get(k)
        for k in (
            "backend",
            "batch_size",
            "throughput",
            "deployed_accuracy",
            "eager_accuracy",
            "agreement",
            "report_path",
        )
    }


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as ``{"neuron.vth": 0.4, ...}`` with plain values, for loggers."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = node if isinstance(node, (int, float, str, bool)) or node is None else str(node)

    walk("", OmegaConf.to_container(cfg, resolve=True))
    return out


def _log_config(trainer: pl.Trainer, cfg: DictConfig) -> None:
    """Every logger gets the composed config at the start. TensorBoard gets it at the end
    instead, with the final metrics, which its HParams dashboard shows side by side."""
    params = flat_config(cfg)
    for lg in trainer.loggers:
        if not isinstance(lg, TensorBoardLogger):
            lg.log_hyperparams(params)


def _log_final(trainer: pl.Trainer, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """Every logger gets the run's final metrics (``final/...``) at the end."""
    keys = ("best_val_acc", "final_val_acc", "test_acc", "test_loss", "train_samples_per_second")
    final = {k: float(v) for k, v in metrics.items() if k in keys and isinstance(v, (int, float))}
    for key, path in (("synops", "efficiency.synops"), ("activation_sparsity", "efficiency.activation_sparsity")):
        value = lookup(metrics, path)
        if value is not None:
            final[key] = value
    for lg in trainer.loggers:
        if isinstance(lg, TensorBoardLogger):
            lg.log_hyperparams(flat_config(cfg), {f"hparams/{k}": v for k, v in final.items()})
        else:
            lg.log_metrics({f"final/{k}": v for k, v in final.items()}, step=trainer.global_step)
        lg.finalize("success")


def run_job(cfg: DictConfig) -> float | list[float] | str:
    """The job of ``snn-train``/``snn-eval`` once Hydra has composed and type-checked
    ``cfg`` (:func:`snn_lab.cli.train_entry.main`): one run, or one job of a multirun."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    if hc.mode == RunMode.MULTIRUN:
        return _sweep_job(cfg, run_dir)

    def remove_rejected_run() -> None:  # rejected before it wrote anything
        if run_dir.is_dir() and set(os.listdir(run_dir)) <= {f"{hc.job.name}.log"}:
            shutil.rmtree(run_dir, ignore_errors=True)

    with user_errors(cleanup=remove_rejected_run):
        return run(cfg)
    raise AssertionError("unreachable")  # user_errors exits


def _sweep_job(cfg: DictConfig, run_dir: Path) -> float | list[float] | str:
    """One job of a multirun. A failure does not end the sweep: it is recorded in the
    job's ``failed.json`` (read by the summary, which makes the sweep exit non-zero) and
    the job returns ``"failed: <error>"``, which no sweeper takes for a score (the Optuna
    sweeper marks the trial failed). A bug (not a SnnLabError) keeps its traceback in the
    job's log."""
    failed = run_dir / FAILED_FILE
    failed.unlink(missing_ok=True)  # from an earlier attempt of this job
    try:
        value = run(cfg)
    except SnnLabError as e:
        error = one_line(str(e))
        log.error("job failed: %s", error)
    except Exception as e:  # a bug: traceback in the log, the sweep goes on
        error = f"{type(e).__name__}: {e}".splitlines()[0]
        log.exception("job failed with a bug: %s", error)
    else:
        # a sweeper cannot rank a run without its monitored value (or objectives)
        if isinstance(value, list):
            missing = [name for name, v in zip(cfg.objectives, value) if math.isnan(v)]
            return f"failed: no {', '.join(missing)} was recorded" if missing else value
        if math.isnan(value):
            return f"failed: no {cfg.monitor} was recorded"
        return value
    if _rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        overrides = [str(o) for o in HydraConfig.get().overrides.task]
        atomic_write_json(failed, {"status": "failed", "error": error, "overrides": overrides})
    print(f"error: job {run_dir.name} failed: {error}", file=sys.stderr)
    return f"failed: {error}"
