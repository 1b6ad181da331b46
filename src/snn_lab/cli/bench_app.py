"""``python -m snn_lab.bench [key=value ...]`` (Hydra; primary config ``conf/bench.yaml``).

Prints the table and writes ``bench.json`` (atomically) into the Hydra run dir
(``outputs/bench/runs/<time>/``), or to ``output=<path>`` when given.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ..bench.runner import BenchConfig, run, table
from ..config import register_configs
from ..config.build import to_plain_dict
from ..io import atomic_write_json
from . import CONFIG_DIR
from .errors import user_errors

register_configs()  # the target group's schema (shared with train/deploy)
ConfigStore.instance().store(name="bench_schema", node=BenchConfig)
log = logging.getLogger("snn_lab.bench")


@hydra.main(config_path=CONFIG_DIR, config_name="bench", version_base=None)
def main(cfg: DictConfig) -> None:
    conf = BenchConfig(**to_plain_dict(cfg, "bench"))
    with user_errors():
        res = run(conf)
    out = Path(conf.output) if conf.output else Path(HydraConfig.get().runtime.output_dir) / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, res)
    print(table(res))
    print(f"wrote {out}")
