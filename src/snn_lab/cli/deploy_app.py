"""``python -m snn_lab.deploy ckpt_path=... [backend=...] [batch_size=...]``: the deploy CLI.

Exit codes: 0 verified (agreement >= min_agreement), 2 rejected (bad checkpoint,
unknown/unavailable backend, unsupported batch size or network, bad option), 3 the
deployed predictions disagree with eager beyond ``min_agreement``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ..config import register_configs
from ..config.build import to_plain_dict
from ..deploy import run_deploy
from ..errors import DeployError
from . import CONFIG_DIR
from .errors import fail, user_errors

log = logging.getLogger("snn_lab.deploy")
register_configs()  # the target group's schema


def backend_from_config(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """``(name, options)``: the backend group if chosen, else the target's deploy backend
    with the options of ``conf/backend/<name>.yaml``."""
    if cfg.get("backend"):
        opts = cfg.backend.get("options")
        return str(cfg.backend.name), (to_plain_dict(opts, "backend.options") if opts else {})
    name = str(cfg.target.deploy_backend)
    path = Path(CONFIG_DIR) / "backend" / f"{name}.yaml"
    group = OmegaConf.load(path) if path.is_file() else None
    opts = group.get("options") if isinstance(group, DictConfig) else None
    return name, (to_plain_dict(opts, f"{path}: options") if opts else {})


def run(cfg: DictConfig) -> dict:
    if not cfg.ckpt_path:
        raise DeployError("ckpt_path is required: python -m snn_lab.deploy ckpt_path=<run dir>/checkpoints/best.ckpt")
    name, options = backend_from_config(cfg)
    out_dir = cfg.out_dir or HydraConfig.get().runtime.output_dir
    keys = (
        "encode",
        "seed",
        "num_samples",
        "split",
        "data_root",
        "time_steps",
        "threads",
        "latency_batch1",
        "latency_samples",
        "warmup",
        "passes",
        "queue_depth",
        "verify",
        "min_agreement",
        "eager_batch_size",
    )
    kwargs = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k] for k in keys}
    return run_deploy(
        cfg.ckpt_path, backend=name, batch_size=int(cfg.batch_size), out_dir=out_dir, backend_options=options, **kwargs
    )


def summary(r: dict) -> str:
    lat = r["latency_ms"]
    b1 = lat.get("batch1") or {}
    parts = [
        f"snn_lab deploy: backend={r['backend']} batch={r['batch_size']} T={r['time_steps']} "
        f"encode={r['encode']}{' (in-kernel draws)' if r['device_encoding'] else ''}",
        f"  throughput {r['throughput']:.1f} samples/s (encoding included; "
        + (
            f"median of {len(r['throughput_passes'])} passes over {r['samples']} samples: "
            + ", ".join(f"{x:.0f}" for x in r["throughput_passes"])
            if len(r.get("throughput_passes", [])) > 1
            else f"{r['samples']} samples in {r['wall_seconds']:.2f} s"
        )
        + ")",
        f"  latency per batch p50 {lat['batch']['p50']:.2f} ms p99 {lat['batch']['p99']:.2f} ms"
        + (f"; batch-1 p50 {b1['p50']:.3f} ms p99 {b1['p99']:.3f} ms" if b1.get("p50") is not None else ""),
    ]
    if r.get("agreement") is not None:
        parts.append(
            f"  accuracy deployed {100 * r['deployed_accuracy']:.2f}% eager {100 * r['eager_accuracy']:.2f}% "
            f"agreement {100 * r['agreement']:.3f}% ({r['disagreements']} differ) "
            f"-> {'verified' if r['verified'] else 'NOT verified'}"
        )
    else:
        parts.append(f"  accuracy deployed {100 * r['deployed_accuracy']:.2f}% (eager check skipped)")
    info = r.get("backend_info") or {}
    if info.get("adds_per_sample") and info.get("machine_adds_per_s"):  # the sparse kernel counts its adds
        rate = r["throughput"] * info["adds_per_sample"]
        parts.append(
            f"  work: {info['adds_per_sample']:,} adds/sample; at this throughput {rate / 1e9:.1f} G adds/s = "
            f"{100 * rate / info['machine_adds_per_s']:.1f}% of this machine's add rate "
            f"({info['machine_adds_per_s'] / 1e9:.1f} G adds/s, measured in this run, {info.get('threads', 1)} threads)"
        )
    others = r["host"].get("cpu_share_used_by_other_processes")
    if others is not None and others > 0.1:
        parts.append(
            f"  note: other processes used {100 * others:.0f}% of this machine's CPU during the run; "
            "throughput is lower than on an idle machine"
        )
    parts.append(f"  report: {r['report_path']}")
    return "\n".join(parts)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="deploy")
def main(cfg: DictConfig) -> None:
    with user_errors():
        report = run(cfg)
    print(summary(report))
    if report.get("verified") is False:
        fail(
            f"deployed predictions agree with eager on {100 * report['agreement']:.3f}% of samples, "
            f"below min_agreement={report['min_agreement']}",
            code=3,
        )
