"""The bad-input table (docs/ERRORS.md): each case fails with a one-line cause, a
non-zero exit, and leaves an existing run's results untouched."""

import gzip
import hashlib
import pickle
import shutil
from pathlib import Path

import pytest

from helpers import TINY_RUN, train
from snn_lab.data.mnist import BUNDLED_DIR


def _digest(run: Path) -> dict:
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.suffix != ".log"
    }


class _Evil:
    def __reduce__(self):
        return (print, ("this would run arbitrary code",))


def _make(kind: str, tmp: Path, good: Path) -> str:
    """Build the bad file for a case; returns its path."""
    ckpt = good / "checkpoints" / "last.ckpt"
    if kind == "truncated_ckpt":
        p = tmp / "truncated.ckpt"
        p.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif kind == "garbage_ckpt":
        p = tmp / "garbage.ckpt"
        p.write_bytes(b"not a checkpoint at all" * 100)
    elif kind == "unsafe_ckpt":
        p = tmp / "unsafe.ckpt"
        with open(p, "wb") as f:
            pickle.dump({"state_dict": {}, "hyper_parameters": {"net": _Evil()}}, f)
    elif kind == "empty_data_dir":
        p = tmp / "nodata"
        p.mkdir()
    elif kind == "corrupt_data_dir":
        p = tmp / "corrupt"
        shutil.copytree(BUNDLED_DIR, p)
        raw = bytearray(gzip.decompress((p / "train-images-idx3-ubyte.gz").read_bytes()))
        raw[5000] ^= 0xFF  # one flipped byte
        (p / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(raw), compresslevel=1))
    elif kind == "truncated_data_dir":
        p = tmp / "truncgz"
        shutil.copytree(BUNDLED_DIR, p)
        f = p / "t10k-labels-idx1-ubyte.gz"
        f.write_bytes(f.read_bytes()[:100])
    elif kind == "file":
        p = tmp / "a_file"
        p.write_text("x")
    else:
        raise KeyError(kind)
    return str(p)


# (case id, overrides with {placeholders}, expected text in the one-line error)
CASES = [
    ("wrong type", ["neuron.vth=abc"], "neuron.vth"),
    ("float for int", ["time_steps=2.5"], "time_steps"),
    ("out of range T", ["time_steps=0"], "time_steps=0 is invalid"),
    ("out of range decay", ["neuron.decay=1.5"], "neuron.decay=1.5 is invalid"),
    ("unknown group option", ["neuron=lfi"], "neuron/lfi"),
    ("bad choice value", ["model.mode=fused"], "model.mode='fused' is invalid: accepted: step, layer"),
    ("gpu without cuda", ["target=gpu"], "no CUDA device"),
    ("missing data file", ["data.source=dir", "data.root={empty_data_dir}"], "is missing"),
    ("corrupt data file", ["data.source=dir", "data.root={corrupt_data_dir}"], "is corrupt: sha256"),
    ("truncated data file", ["data.source=dir", "data.root={truncated_data_dir}"], "cannot be read"),
    ("truncated checkpoint", ["ckpt_path={truncated_ckpt}"], "cannot be loaded safely"),
    ("garbage checkpoint", ["ckpt_path={garbage_ckpt}"], "cannot be loaded safely"),
    ("unsafe checkpoint", ["ckpt_path={unsafe_ckpt}"], "cannot be loaded safely"),
    (
        "checkpoint of another architecture",
        ["model.hidden=[32]", "ckpt_path={good}/checkpoints/last.ckpt"],
        "another network",
    ),
    ("missing checkpoint", ["ckpt_path={tmp}/nope.ckpt"], "does not exist"),
    ("NaN loss", ["optimizer.lr=1e38"], "non-finite gradient in net.layers.0"),
    ("unwritable output dir", ["hydra.run.dir={file}/run"], "is a file, not a directory"),
    ("finished run dir reused", ["hydra.run.dir={good}"], "already holds a finished run"),
    ("unknown deploy backend", ["deploy=onnxrntime"], "backend='onnxrntime' is unknown; available: eager"),
    ("missing deploy toolchain", ["target=apu", "deploy=auto"], "needs lyngor (Lynxi SDK)"),
    ("val split too large", ["data.val_split=60000", "data.train_subset=null"], "leaves no training images"),
]


@pytest.mark.parametrize("name,overrides,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, overrides, expected, tiny_run_copy, tmp_path):
    good_run = tiny_run_copy  # a finished run, which every case must leave untouched
    before = _digest(good_run)
    fills = {"good": str(good_run), "tmp": str(tmp_path)}
    for kind in (
        "truncated_ckpt",
        "garbage_ckpt",
        "unsafe_ckpt",
        "empty_data_dir",
        "corrupt_data_dir",
        "truncated_data_dir",
        "file",
    ):
        if any("{" + kind + "}" in o for o in overrides):
            fills[kind] = _make(kind, tmp_path, good_run)
    args = [o.format(**fills) for o in overrides]
    if not any(a.startswith("hydra.run.dir=") for a in args):
        args.append("hydra.run.dir=new")
    r = train([*TINY_RUN, *args], tmp_path, timeout=240)
    assert r.returncode != 0
    err = r.stderr.strip()
    assert expected in err, err[-1500:]
    assert "Traceback" not in err and "this would run" not in r.stdout + err
    if err.splitlines()[-1].startswith("error:"):
        assert expected in err.splitlines()[-1]  # our errors: the cause on one line
    assert _digest(good_run) == before  # the existing run is untouched
    assert not (tmp_path / "new" / "metrics.json").exists()
