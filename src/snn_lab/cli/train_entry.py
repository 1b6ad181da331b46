"""The Hydra entry of ``snn-train`` / ``snn-eval``: compose ``conf/`` and type-check the
command line's overrides against the schemas (:mod:`snn_lab.config.schema`) *before*
torch and Lightning load, so a wrong override (``neuron.vth=abc``, an unknown key) fails
with Hydra's one-line message in about a second instead of after the heavy imports; the
job itself (:func:`snn_lab.cli.train_app.run_job`) loads them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ..config import register_configs
from . import CONFIG_DIR
from .errors import fail

register_configs()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | list[float] | str:
    from .train_app import run_job  # torch, Lightning: only for a config that composed

    return run_job(cfg)


def check_output_dir(argv: list[str]) -> None:
    """Fail with one line, before Hydra starts, when the run/sweep dir cannot be created
    (Hydra itself would print a traceback)."""
    keys = ("hydra.run.dir", "hydra.sweep.dir", "paths.log_dir", "paths.root_dir")
    if not any(a.lstrip("+").partition("=")[0] in keys for a in argv):
        argv = [*argv, "hydra.run.dir=outputs"]
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+") not in keys:
            continue
        anc = Path(value.split("${", 1)[0] or ".")
        while not anc.exists() and anc != anc.parent:
            if anc.is_symlink():  # Hydra's mkdir would fail on it with a traceback
                fail(
                    f"{key}={value}: {anc} is a symbolic link to a missing directory "
                    f"({os.readlink(anc)}); create it or choose another {key}"
                )
            anc = anc.parent
        if not anc.is_dir():
            fail(f"{key}={value}: {anc} is a file, not a directory; choose another {key}")
        try:
            with tempfile.TemporaryFile(dir=anc):
                pass
        except OSError as e:
            fail(f"{key}={value}: {anc} is not writable ({e.strerror}); choose another {key}")
