"""``python -m snn_lab.bench [key=value ...]`` (Hydra; primary config ``conf/bench.yaml``).

Prints the table and writes ``bench.json`` (atomically) into the Hydra run dir
(``outputs/bench/runs/<time>/``), or to ``output=<path>`` when given.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ..config import register_configs
from ..io import atomic_write_json
from .runner import BenchConfig, run, table

CONFIG_DIR = str(Path(__file__).resolve().parents[3] / "conf")
register_configs()  # the target group's schema (shared with train/deploy)
ConfigStore.instance().store(name="bench_schema", node=BenchConfig)
log = logging.getLogger("snn_lab.bench")


@hydra.main(config_path=CONFIG_DIR, config_name="bench", version_base=None)
def main(cfg: DictConfig) -> None:
    conf = BenchConfig(**OmegaConf.to_container(cfg, resolve=True))
    try:
        res = run(conf)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    out = Path(conf.output) if conf.output else Path(HydraConfig.get().runtime.output_dir) / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, res)
    print(table(res))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
