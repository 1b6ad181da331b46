"""Packaging hook: the repository keeps its Hydra configs in the top-level ``conf/``;
a built wheel (and a non-editable install) ships them inside the package as
``snn_lab/conf``, where ``snn_lab.cli`` looks first. Everything else is in pyproject.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithConf(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads conf/ in place
            return
        target = Path(self.build_lib) / "snn_lab" / "conf"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(ROOT / "conf", target, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildPyWithConf})
