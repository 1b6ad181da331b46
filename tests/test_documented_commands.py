"""Every training command the README and docs/ advertise composes and passes validation,
as written (sweep lists at their first value, placeholders filled in). A renamed key or
a dropped option breaks this test before it breaks a reader."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import snn_lab.cli.bench_app  # noqa: F401  (stores the bench schema)
from snn_lab.bench import BenchConfig
from snn_lab.cli import CONFIG_DIR
from snn_lab.cli.deploy_app import backend_from_config
from snn_lab.config import register_configs, validate
from snn_lab.config.build import to_plain_dict
from snn_lab.deploy import create_backend
from snn_lab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "examples" / "custom_components" / "README.md",
]
COMMAND = re.compile(r"^(python -m snn_lab\.(train|deploy|bench)|snn-(train|eval|deploy|bench))\b")
# what a command may need that this machine lacks: then validation must say so
ENVIRONMENT = ("no CUDA device", "lyngor")


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), re.S):
            for raw in block.replace("\\\n", " ").splitlines():
                line = raw.split("  #")[0].strip()
                if COMMAND.match(line):
                    found.append((doc.name, line))
    return found


def _first_of_sweep(arg: str) -> str:
    """``key=a,b,c`` (a multirun sweep) -> ``key=a``; commas inside brackets, parentheses
    or quotes belong to the value."""
    key, sep, value = arg.partition("=")
    depth, quote = 0, None
    for i, ch in enumerate(value):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            return key + sep + value[:i]
    return arg


def overrides_of(command: str, tmp: Path) -> tuple[str, list[str]]:
    command = re.sub(r"<[^>]+>", str(tmp), command.replace("<same overrides>", ""))
    words = shlex.split(command)
    tool = words[2].split(".")[-1] if words[0] == "python" else words[0].removeprefix("snn-")
    config_name = {"eval": "eval", "deploy": "deploy", "bench": "bench"}.get(tool, "train")
    args = words[3:] if words[0] == "python" else words[1:]
    out = []
    for arg in args:
        if arg in ("-m", "--multirun"):
            continue
        out.append(_first_of_sweep(arg))
    return config_name, out


CASES = documented_commands()


def test_the_docs_advertise_commands():
    assert len(CASES) >= 20
    assert any("experiment=bars" in c for _, c in CASES) and any(c.startswith("snn-eval") for _, c in CASES)


@pytest.mark.parametrize("doc,command", CASES, ids=[f"{d}: {c[:80]}" for d, c in CASES])
def test_documented_command_composes_and_validates(doc, command, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "custom_components" / "src"))  # pkg://snn_custom.conf
    register_configs()
    config_name, overrides = overrides_of(command, tmp_path)
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=overrides)
    if config_name == "bench":
        BenchConfig(**to_plain_dict(cfg, "bench"))  # the bench's own typed options
        return
    if config_name == "deploy":
        name, options = backend_from_config(cfg)
        backend = create_backend(name)  # a registered backend, with options it knows
        assert set(options) <= set(backend.default_options), (name, options)
        return
    try:
        validate(cfg)
    except ConfigError as e:
        if not any(reason in str(e) for reason in ENVIRONMENT):
            raise
        pytest.skip(f"needs what this machine lacks: {e}")
    assert sys.modules["snn_lab.config"]  # composed and validated


#: appended to a documented training command to make it a tiny run (later overrides win)
TINY_TAIL = [
    "data.train_subset=200",
    "data.eval_subset=100",
    "data.val_split=100",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=none",
    "print_config=false",
    "hydra.sweeper.n_trials=2",
]
#: what cannot run here: a cluster, a device, an SDK, the internet (a data set's download)
#: (composed and validated above instead)
CANNOT_RUN = (
    "submitit_slurm",
    "slurm_ddp",
    "target=gpu",
    "target=apu",
    "<run dir>",
    "<that run dir>",
    "data.download=true",
)


def _runnable(command: str) -> bool:
    return command.startswith(("python -m snn_lab.train", "snn-train"))


RUN_CASES = [(d, c) for d, c in CASES if _runnable(c) and not any(x in c for x in CANNOT_RUN)]


@pytest.mark.slow
@pytest.mark.parametrize("doc,command", RUN_CASES, ids=[f"{d}: {c[:80]}" for d, c in RUN_CASES])
def test_documented_training_command_runs_a_tiny_epoch(doc, command, tmp_path, monkeypatch):
    """The same commands, run as a user would (a subprocess), shrunk to one tiny epoch
    (a sweep to its first point)."""
    from helpers import run_cli

    _, overrides = overrides_of(command, tmp_path)
    multirun = any(w in ("-m", "--multirun") for w in command.split()) or "hparams_search=" in command
    where = ["hydra.sweep.dir=sweep"] if multirun else ["hydra.run.dir=run"]
    tail = [t for t in TINY_TAIL if not t.startswith("hydra.sweeper") or "hparams_search=" in command]
    if "experiment=bars" in command:  # the example's own data module has its own keys
        tail = [t for t in tail if not t.startswith("data.")] + [
            "data.n_train=200",
            "data.n_val=100",
            "data.n_test=100",
        ]
    args = ["-m"] * ("-m" in command.split()) + [*overrides, *tail, *where]
    if "paths.root_dir=" in command:  # the command moves the outputs itself
        args = [a for a in args if not a.startswith("paths.root_dir=")] + [f"paths.root_dir={tmp_path / 'root'}"]
    env_path = str(ROOT / "examples" / "custom_components" / "src")
    monkeypatch.setenv("PYTHONPATH", env_path)
    r = run_cli("snn_lab.train", args, tmp_path, timeout=900, fresh=True)  # as a user runs it (joblib hangs forked)
    assert r.returncode == 0, f"{command}\n{r.stderr[-3000:]}"
    assert list(tmp_path.rglob("metrics.json")), "no run finished"
