"""Event data through tonic: N-MNIST, DVS Gesture and SHD, read by tonic's own classes
from small files written in the layouts tonic finds after a download
(tests/dataset_layouts.py), binned into frames, cached on disk, and trained on through
``encoder=passthrough``."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tonic", reason="the events extra (pip install -e '.[events]') is not installed")

from dataset_layouts import write_dvs_gesture, write_nmnist, write_shd
from helpers import QUIET, metrics, train
from snn_lab.data.events import EVENT_SETS, Binning, EventFrames
from snn_lab.encoders import PassthroughEncoder
from snn_lab.errors import ConfigError, DataError
from snn_lab.lit.datamodule import DVSGestureDataModule, NMNISTDataModule, SHDDataModule, check_data_fits

NMNIST, DVS, SHD = EVENT_SETS["nmnist"], EVENT_SETS["dvs_gesture"], EVENT_SETS["shd"]
TINY = ["data.val_split=20", "data.train_subset=40", "data.eval_subset=30", "trainer.max_epochs=1", *QUIET]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("events")
    write_nmnist(root)
    write_dvs_gesture(root)
    write_shd(root)
    return root


def _events(n: int, seed: int = 0, size: int = 34) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=np.dtype([("x", int), ("y", int), ("t", int), ("p", int)]))
    ev["x"], ev["y"], ev["p"] = rng.integers(0, size, n), rng.integers(0, size, n), rng.integers(0, 2, n)
    ev["t"] = np.sort(rng.integers(0, 100_000, n))
    return ev


# -- binning --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bins", ["time", "events", "window", "count"])
def test_every_binning_gives_exactly_frames_frames_of_counts(bins):
    ev = _events(500)
    frames = Binning(bins, frames=7, time_window=5000.0, event_count=40)(ev, NMNIST, "s")
    assert frames.shape == (7, 2, 34, 34) and frames.dtype == np.int16 and frames.min() >= 0
    kept = int(frames.sum())
    if bins == "window":  # the first 7 windows of 5 ms from the first event
        assert kept == int(((ev["t"] - ev["t"][0]) < 7 * 5000).sum())
    elif bins == "count":  # the first 7 frames of 40 events
        assert kept == 7 * 40
    else:  # the whole recording, less what tonic's slicing leaves out at its end
        assert 490 <= kept <= 500


def test_window_bins_pad_a_short_recording_with_empty_frames():
    ev = _events(100)
    ev["t"] = np.linspace(0, 9_999, 100).astype(int)
    frames = Binning("window", frames=5, time_window=5000.0)(ev, NMNIST, "s")
    assert frames[:2].sum() >= 99 and frames[2:].sum() == 0


def test_downsample_is_sum_pooling_of_the_full_resolution_frames():
    ev = _events(400, seed=1)
    full = torch.from_numpy(Binning(frames=4)(ev, NMNIST, "s")).float()
    half = Binning(frames=4, downsample=2)(ev, NMNIST, "s")
    pooled = torch.nn.functional.avg_pool2d(full.flatten(0, 1).unsqueeze(1), 2).squeeze(1) * 4
    assert half.shape == (4, 2, 17, 17) and np.array_equal(half, pooled.reshape(4, 2, 17, 17).round().numpy())
    shd = np.zeros(10, dtype=np.dtype([("t", int), ("x", int), ("p", int)]))
    shd["t"], shd["x"], shd["p"] = np.arange(10) * 100, np.arange(10) * 70 + 5, 1
    assert Binning(frames=2, downsample=7)(shd, SHD, "s").shape == (2, 100)


def test_events_outside_the_sensor_name_the_sample():
    ev = _events(10)
    ev["x"][3] = 40
    with pytest.raises(DataError, match=r"N-MNIST sample f.bin has events outside the 34x34x2 sensor"):
        Binning()(ev, NMNIST, "f.bin")


@pytest.mark.parametrize(
    "kwargs,key",
    [({"bins": "slices"}, "data.bins"), ({"frames": 0}, "data.frames"), ({"time_window": -1.0}, "data.time_window")],
)
def test_bad_binning_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Binning(**kwargs)


# -- the readers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec,size,shape,classes",
    [(NMNIST, 10_000, (5, 2, 34, 34), 10), (DVS, 110, (5, 2, 32, 32), 11), (SHD, 120, (5, 700), 20)],
)
def test_tonic_reads_each_layout(data_dir, spec, size, shape, classes, tmp_path):
    binning = Binning(frames=5, downsample=4 if spec is DVS else 1)
    ds = EventFrames(spec, data_dir, True, binning, cache_dir=tmp_path)
    assert len(ds) == size
    x, y = ds[7]
    assert tuple(x.shape) == shape and x.dtype == torch.int16 and int(x.sum()) > 0 and 0 <= y < classes
    # sample i is the same in a second listing; one fixed shuffle mixes the classes
    assert torch.equal(EventFrames(spec, data_dir, True, binning)[7][0], x)
    assert len({int(ds.labels[i]) for i in range(30)}) > 3
    if ds.files is not None:  # one file per sample: its label is tonic's (folder or file name)
        assert str(y) in Path(ds.files[7]).parts[-1] or Path(ds.files[7]).parent.name == str(y)
    assert len(EventFrames(spec, data_dir, False, binning)) > 0


def test_the_cache_is_keyed_by_the_binning_and_written_atomically(data_dir, tmp_path, monkeypatch):
    ds = EventFrames(SHD, data_dir, True, Binning(frames=6), cache_dir=tmp_path)
    first = ds[3][0]
    (cache,) = list(tmp_path.iterdir())
    assert sorted(p.name for p in cache.iterdir()) == ["3.npy", "params.json"]
    assert '"frames": 6' in (cache / "params.json").read_text()
    # read from the cache: tonic is not asked again
    monkeypatch.setattr(type(ds._ds), "__getitem__", lambda self, i: (_ for _ in ()).throw(AssertionError))
    assert torch.equal(ds[3][0], first)
    monkeypatch.undo()
    # other parameters: another directory, never these frames
    other = EventFrames(SHD, data_dir, True, Binning(frames=6, bins="window", time_window=100_000.0), tmp_path)
    other[3]
    assert len(list(tmp_path.iterdir())) == 2 and other.cache.dir != ds.cache.dir
    # a damaged cache file is rebuilt, not trusted
    (cache / "3.npy").write_bytes(b"\x93NUMPY garbage")
    assert torch.equal(ds[3][0], first)
    assert not list(cache.glob(".tmp-*"))


def test_changed_source_files_get_a_new_cache(tmp_path):
    write_shd(tmp_path, n_train=20, n_test=10)
    a = EventFrames(SHD, tmp_path, True, Binning(frames=4), cache_dir=tmp_path / "c")
    write_shd(tmp_path, n_train=20, n_test=10, seed=1)
    b = EventFrames(SHD, tmp_path, True, Binning(frames=4), cache_dir=tmp_path / "c")
    assert a.cache.dir != b.cache.dir


def test_a_listing_survives_pickling_for_worker_processes(data_dir):
    ds = EventFrames(DVS, data_dir, True, Binning(frames=3, downsample=4))
    again = pickle.loads(pickle.dumps(ds))
    assert torch.equal(again[5][0], ds[5][0]) and again[5][1] == ds[5][1]


@pytest.mark.parametrize("name", ["nmnist", "dvs_gesture", "shd"])
def test_a_missing_data_set_names_its_path_and_the_download_without_trying_it(name, tmp_path):
    with pytest.raises(DataError) as e:
        EventFrames(EVENT_SETS[name], tmp_path, True, Binning())
    msg = str(e.value)
    folder = EVENT_SETS[name].tonic_class
    assert f"is missing or incomplete in {tmp_path}/{folder}" in msg and "data.download=true" in msg
    assert "\n" not in msg


def test_a_partial_or_corrupt_data_set_fails_naming_it(tmp_path):
    base = write_nmnist(tmp_path, per_split=10_000, distinct=20)
    for p in sorted((base / "Train" / "3").glob("*.bin"))[:50]:  # an interrupted extraction
        p.unlink()
    with pytest.raises(DataError, match=r"N-MNIST is missing or incomplete in .*NMNIST .*data.download=true"):
        EventFrames(NMNIST, tmp_path, True, Binning())
    ds = EventFrames(NMNIST, tmp_path, False, Binning())
    broken = Path(ds.files[0])
    broken.unlink()  # a hard link: the others stay intact
    broken.write_bytes(b"\x01\x02\x03\x04\x05\x06\x07")  # not a whole number of 5-byte events
    with pytest.raises(DataError, match=rf"N-MNIST sample {broken} cannot be read"):
        ds[0]


def test_a_failed_download_is_one_line(tmp_path, monkeypatch):
    """No network here: tonic's downloader failing (as it does offline) becomes one line."""
    import tonic

    def offline(self):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(tonic.datasets.SHD, "download", offline)
    with pytest.raises(DataError, match=r"downloading SHD into .*SHD failed \(<urlopen error .*\); check the network"):
        SHDDataModule(root=str(tmp_path), download=True).prepare_data()


def test_dvs_files_are_loaded_without_unpickling(tmp_path):
    base = write_dvs_gesture(tmp_path, users=10, events=20)
    ds = EventFrames(DVS, tmp_path, True, Binning(frames=2, downsample=4))
    np.save(ds.files[2], np.array([{"x": 1}], dtype=object), allow_pickle=True)  # an object (pickled) array
    with pytest.raises(DataError, match=r"DVS Gesture sample .* cannot be read \(ValueError: .*allow_pickle"):
        ds[2]
    assert base.is_dir()


def test_a_corrupt_shd_file_fails_naming_it(tmp_path):
    write_shd(tmp_path, n_train=10, n_test=5)
    (tmp_path / "SHD" / "shd_train.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match=r"SHD in .*SHD cannot be read \(OSError"):
        EventFrames(SHD, tmp_path, True, Binning())


# -- data modules, encoder, checks ----------------------------------------------------------------
def test_data_modules_give_frames_batches_for_the_passthrough_encoder(data_dir, tmp_path):
    dm = SHDDataModule(root=str(data_dir), frames=6, val_split=20, batch_size=8, cache_dir=str(tmp_path))
    assert dm.input_shape == (700,) and dm.num_classes == 20 and dm.frames == 6
    dm.setup()
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.dtype == torch.float32 and tuple(x.shape) == (8, 6, 700) and y.dtype == torch.int64
    train = PassthroughEncoder()(x, 6)
    assert tuple(train.shape) == (6, 8, 700) and torch.equal(train[2], x[:, 2])
    spikes = PassthroughEncoder(binary=True)(x * 3, 6)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0} and torch.equal(spikes > 0, x.transpose(0, 1) > 0)
    with pytest.raises(ConfigError, match=r"the data gives 6 frames per sample but the network runs time_steps=4"):
        PassthroughEncoder()(x, 4)
    assert DVSGestureDataModule(root=str(data_dir)).input_shape == (2, 32, 32)
    assert NMNISTDataModule(root=str(data_dir), downsample=2).input_shape == (2, 17, 17)


def test_event_data_and_the_network_must_agree():
    dm = NMNISTDataModule(frames=10)
    net = {"model": {"input_shape": [2, 34, 34], "num_classes": 10}, "encoder": {"name": "passthrough"}}
    check_data_fits(dm, {**net, "time_steps": 10})
    with pytest.raises(ConfigError, match=r"data.frames=10 does not match time_steps=12"):
        check_data_fits(dm, {**net, "time_steps": 12})
    with pytest.raises(ConfigError, match=r"encoder=bernoulli encodes images, but data.name=nmnist gives event frames"):
        check_data_fits(dm, {**net, "encoder": {"name": "bernoulli"}, "time_steps": 10})
    with pytest.raises(ConfigError, match=r"model.num_classes=10 does not fit the data: data.name=dvs_gesture"):
        check_data_fits(DVSGestureDataModule(frames=10), {**net, "time_steps": 10, "model": {"num_classes": 10}})


def test_without_tonic_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tonic", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"data=shd reads its events with tonic.*pip install 'snn_lab\[events\]'"):
        SHDDataModule()


# -- training runs, as a user would ----------------------------------------------------------------
def test_the_recipes_train_a_tiny_epoch_on_nmnist_and_shd(data_dir, tmp_path):
    r = train(
        [
            "-m",
            "experiment=nmnist_conv,shd_rsnn",
            f"paths.data_dir={data_dir}",
            "time_steps=4",
            *TINY,
            "hydra.sweep.dir=s",
        ],
        tmp_path,
        timeout=600,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    for job in ("0", "1"):
        m = metrics(tmp_path / "s" / job)
        assert m["test_acc"] is not None and m["epochs"] == 1
    # the frames were cached under <data dir>/frames_cache, one directory per data set and split
    names = sorted(p.name.rsplit("-", 1)[0] for p in (data_dir / "frames_cache").iterdir())
    assert {"nmnist-train", "nmnist-test", "shd-train", "shd-test"} <= set(names)


@pytest.mark.slow  # a CLI run (tens of seconds); lighter tests cover the same code in the default run
def test_dvs_gesture_trains_a_tiny_epoch(data_dir, tmp_path):
    args = [
        "data=dvs_gesture",
        "encoder=passthrough",
        "encoder.binary=true",
        "model=conv",
        "model.input_shape=[2,32,32]",
        "model.num_classes=11",
        "model.channels=[4]",
        "model.fc=16",
        f"paths.data_dir={data_dir}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "time_steps=3",
        *TINY,
        "hydra.run.dir=run",
    ]
    r = train(args, tmp_path, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert metrics(tmp_path / "run")["test_acc"] is not None
    assert len(list((tmp_path / "cache").iterdir())) == 2  # train, test


@pytest.mark.slow  # a CLI run (tens of seconds); lighter tests cover the same code in the default run
def test_missing_event_data_fails_in_one_line(tmp_path):
    r = train(["experiment=nmnist_conv", f"paths.data_dir={tmp_path}", *TINY, "hydra.run.dir=run"], tmp_path)
    assert r.returncode == 2, (r.stdout + r.stderr)[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert (
        last.startswith(f"error: N-MNIST is missing or incomplete in {tmp_path}/NMNIST") and "Traceback" not in r.stderr
    )
    assert "data.download=true lets tonic download it" in last
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_without_tonic_the_cli_says_which_extra_to_install(tmp_path):
    # `python -m` puts the working directory first on sys.path: a `tonic` there that
    # fails to import stands for an environment without it
    (tmp_path / "tonic.py").write_text("raise ModuleNotFoundError(\"No module named 'tonic'\", name='tonic')\n")
    args = ["data=shd", "encoder=passthrough", "model.input_shape=[700]", "model.num_classes=20", "hydra.run.dir=run"]
    r = train([*args, *QUIET], tmp_path)
    assert r.returncode == 2, (r.stdout + r.stderr)[-2000:]
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'snn_lab[events]'" in lines[0], r.stderr
    assert not (tmp_path / "run").exists()
