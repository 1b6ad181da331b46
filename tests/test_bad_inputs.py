"""The bad-input table (docs/ERRORS.md): each case fails with a one-line cause, a
non-zero exit, and leaves an existing run's results untouched."""

import csv
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
    elif kind == "dangling_link":  # a run dir kept elsewhere, whose target is gone
        p = tmp / "linked_run"
        p.symlink_to(tmp / "moved_away")
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
    ("output dir a dangling link", ["hydra.run.dir={dangling_link}"], "is a symbolic link to a missing"),
    ("finished run dir reused", ["hydra.run.dir={good}"], "already holds a finished run"),
    ("unknown deploy backend", ["deploy=onnxrntime"], "backend='onnxrntime' is unknown; available: aoti, eager"),
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
        "dangling_link",
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


# -- faults during a run, old checkpoints, bad data, reused sweep dirs, deploy sizes -----------

# A callback the run loads by `_target_` from its working directory (callbacks.extra): it
# simulates a fault of the file system from the start of training (tests run as root,
# where chmod does not stop writes, and a real full disk cannot be made here).
FAULT_MODULE = """
import errno, os
import pytorch_lightning as pl

class Fault(pl.Callback):
    def __init__(self, kind: str):
        self.kind = kind

    def on_train_start(self, trainer, pl_module):
        if self.kind == "enospc":  # the disk fills up while a checkpoint is being written
            import snn_lab.lit.checkpoint_io as cio

            real = cio.torch

            class FullDisk:
                def __getattr__(self, name):
                    return getattr(real, name)

                @staticmethod
                def save(obj, f):
                    f.write(b"\\0" * 4096)  # half a file, then no space left
                    f.flush()
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            cio.torch = FullDisk()
        elif self.kind == "readonly":  # the run dir turns read-only: no new file in it
            root = os.path.realpath(trainer.default_root_dir)
            os_open = os.open

            def guarded(path, flags, *a, **k):
                if os.path.realpath(path).startswith(root) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                    raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), path)
                return os_open(path, flags, *a, **k)

            os.open = guarded
"""


def _fault(tmp: Path, kind: str) -> list[str]:
    (tmp / "snn_fault.py").write_text(FAULT_MODULE)
    return ["+callbacks.extra.fault._target_=snn_fault.Fault", f"+callbacks.extra.fault.kind={kind}"]


def _one_line_error(r, expected: str) -> None:
    err = r.stderr.strip()
    assert r.returncode == 2, err[-1500:]
    assert "Traceback" not in err, err[-3000:]
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and expected in last, err[-1500:]


def test_disk_full_while_writing_a_checkpoint_keeps_the_last_good_one(tiny_run_copy, tmp_path):
    """Row 29: resuming a finished run for a second epoch, its checkpoint save hits ENOSPC
    halfway: one line, exit 2, the previous last.ckpt/best.ckpt and metrics.json are
    byte-identical and no temp file is left behind."""
    run = tiny_run_copy
    kept = ("checkpoints/last.ckpt", "checkpoints/best.ckpt", "metrics.json")
    before = {k: v for k, v in _digest(run).items() if k in kept}
    assert len(before) == 3
    args = [*TINY_RUN, "trainer.max_epochs=2", "ckpt_path=last", f"hydra.run.dir={run}", *_fault(tmp_path, "enospc")]
    r = train(args, tmp_path, timeout=240)
    _one_line_error(r, "No space left on device")
    assert "the previous checkpoint is kept" in r.stderr
    assert {k: v for k, v in _digest(run).items() if k in kept} == before
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_output_dir_turning_read_only_mid_run_fails_in_one_line(tiny_run_copy, tmp_path):
    """Row 30: the run dir turns read-only after training started: the first checkpoint
    save fails in one line, exit 2; no metrics.json; another run is untouched."""
    before = _digest(tiny_run_copy)
    r = train([*TINY_RUN, "hydra.run.dir=new", *_fault(tmp_path, "readonly")], tmp_path, timeout=240)
    _one_line_error(r, "Read-only file system")
    assert "no checkpoint was written" in r.stderr
    assert not (tmp_path / "new" / "metrics.json").exists()
    assert not list((tmp_path / "new").rglob(".tmp-*"))
    assert _digest(tiny_run_copy) == before


@pytest.mark.slow  # about a minute of CLI runs on 2 cores; runs with -m slow
def test_checkpoint_of_an_older_version_loads_and_rebuilds_as_trained(tiny_run_copy, tmp_path, mnist_like):
    """Row 31: a checkpoint written before `model.mode` was stored (its net config lacks
    the key; today's default is `layer`) rebuilds the network it was trained as (`step`,
    `upgrade_net_config`), with the same weights and outputs, in Python and in
    `train=false`; the good run is untouched."""
    import torch

    from helpers import metrics
    from snn_lab.models import load_network, read_checkpoint

    good = tiny_run_copy / "checkpoints" / "best.ckpt"
    before = _digest(tiny_run_copy)
    ckpt = read_checkpoint(good)
    ckpt["hyper_parameters"]["net"]["model"].pop("mode")
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)

    new_net, old_net = load_network(good), load_network(old)
    assert (new_net.mode, old_net.mode) == ("layer", "step")  # as each was trained
    assert old_net.state_dict().keys() == new_net.state_dict().keys()
    x = mnist_like(8)
    outs = [net(x, generator=torch.Generator().manual_seed(0)) for net in (new_net, old_net)]
    torch.testing.assert_close(outs[1], outs[0])  # step and layer modes: the same spikes

    accs = []
    for name, path in (("eval_new", good), ("eval_old", old)):
        r = train([*TINY_RUN, "train=false", f"ckpt_path={path}", f"hydra.run.dir={name}"], tmp_path, timeout=240)
        assert r.returncode == 0, r.stderr[-2000:]
        accs.append(metrics(tmp_path / name)["test_acc"])
    assert accs[0] is not None and accs[1] == accs[0]
    assert _digest(tiny_run_copy) == before


NAN_DATA_MODULE = '''
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class NaNPixels(pl.LightningDataModule):
    """200 random images, one of them with a NaN pixel; takes (and ignores) data.* keys."""

    def __init__(self, batch_size: int = 50, **data_keys):
        super().__init__()
        self.batch_size = batch_size

    def _loader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.rand(200, 1, 28, 28, generator=g)
        x[7, 0, 3, 4] = float("nan")
        return DataLoader(TensorDataset(x, torch.randint(0, 10, (200,), generator=g)), batch_size=self.batch_size)

    train_dataloader = val_dataloader = test_dataloader = _loader
'''


def test_nan_pixels_in_a_dataset_fail_in_one_line_naming_the_data(tmp_path):
    """Row 32: a data module (`data._target_`) whose images hold a NaN fails with one line
    naming the data, before any step trains on it (not a NaN loss deep in training)."""
    (tmp_path / "nan_data.py").write_text(NAN_DATA_MODULE)
    r = train([*TINY_RUN, "+data._target_=nan_data.NaNPixels", "hydra.run.dir=new"], tmp_path, timeout=240)
    _one_line_error(r, "non-finite pixel")
    assert "data (nan_data.NaNPixels): train batch 0 holds a non-finite pixel" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "new" / "metrics.json").exists()


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("sweep")
    args = ["-m", *TINY_RUN, "seed=0,1", "hydra.sweep.dir=sweep"]
    r = train(args, root, timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (root / "sweep" / "0" / "metrics.json").exists() and (root / "sweep" / "1" / "metrics.json").exists()
    return root, args


def test_reused_sweep_dir_leaves_the_finished_jobs_byte_identical(finished_sweep):
    """Row 33: the same sweep again into `hydra.sweep.dir=<a finished sweep>` fails
    (non-zero exit) and leaves every file of the finished jobs byte-identical."""
    root, args = finished_sweep
    before = {k: v for k, v in _digest(root / "sweep").items() if "/" in k}  # the jobs' files
    r = train(args, root, timeout=400)
    assert r.returncode != 0
    assert "already holds a finished run" in r.stderr
    after = _digest(root / "sweep")
    assert {k: after.get(k) for k in before} == before
    # the summary keeps the finished jobs' metrics; the refusal is in their error column
    rows = list(csv.DictReader((root / "sweep" / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["best_val_acc"] for r in rows)
    assert all("already holds a finished run" in r["error"] for r in rows)


@pytest.mark.slow  # about a minute of CLI runs on 2 cores; runs with -m slow
def test_reused_sweep_dir_fails_in_one_line_per_job(finished_sweep):
    """Row 33: each finished job is refused with one `error:` line, no traceback."""
    root, args = finished_sweep
    r = train(args, root, timeout=400)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert any(line.startswith("error: ") and "already holds a finished run" in line for line in r.stderr.splitlines())


def test_deploy_batch_larger_than_the_test_set_fails_in_one_line(tiny_run_copy, tmp_path):
    """Row 34: `batch_size=` above the number of test samples would time one partial
    batch and report its size as the batch: refused in one line, before compiling."""
    from helpers import deploy

    before = _digest(tiny_run_copy)
    ckpt = tiny_run_copy / "checkpoints" / "best.ckpt"
    args = [f"ckpt_path={ckpt}", "backend=eager", "batch_size=64", "num_samples=10", "hydra.run.dir=dep"]
    r = deploy(args, tmp_path)
    _one_line_error(r, "batch_size=64 is larger than the 10 samples to deploy on (num_samples)")
    assert not (tmp_path / "dep" / "deploy_report.json").exists()
    assert _digest(tiny_run_copy) == before
