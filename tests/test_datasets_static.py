"""Static image sets beyond MNIST: Fashion-MNIST, CIFAR-10, a user's IDX files and an
ImageFolder tree, each read from small files written in its real on-disk layout
(tests/dataset_layouts.py) through the code a downloaded copy goes through.

The MD5 check (``data.verify``) needs the real files, which cannot be downloaded here:
the training runs pass ``data.verify=false`` (only that check is bypassed), and
``test_verify_refuses_files_that_are_not_torchvision_s`` shows the check firing on the
test files.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from dataset_layouts import (
    cifar_batch_bytes,
    image_set,
    malicious_pickle,
    write_cifar10,
    write_fashion_mnist,
    write_idx,
    write_idx_set,
    write_image_folder,
)
from helpers import QUIET, metrics, train
from snn_lab.data import cifar, images
from snn_lab.data.idx import parse_idx
from snn_lab.errors import ConfigError, DataError
from snn_lab.lit.datamodule import (
    CIFAR10DataModule,
    FashionMNISTDataModule,
    IDXDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    check_data_fits,
)
from snn_lab.lit.image_data import _elastic_field, _gaussian_matrix, channel_stats

TINY = ["data.val_split=20", "data.train_subset=60", "data.eval_subset=40", "trainer.max_epochs=1", *QUIET]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Every static set of this module, under one ``paths.data_dir``."""
    root = tmp_path_factory.mktemp("data")
    write_fashion_mnist(root, n_train=200, n_test=60)
    write_cifar10(root, per_batch=30, n_test=60)
    x, y = image_set(150, (3, 28, 28), seed=5)  # 4-dim IDX images: [N, C, H, W]
    write_idx(root / "idx" / "train-images-idx3-ubyte", x, gz=True)
    write_idx(root / "idx" / "train-labels-idx1-ubyte", y, gz=True)
    x, y = image_set(60, (3, 28, 28), seed=6)
    write_idx(root / "idx" / "t10k-images-idx3-ubyte", x)
    write_idx(root / "idx" / "t10k-labels-idx1-ubyte", y)
    write_image_folder(root / "image_folder", per_class=12, classes=tuple(f"c{i}" for i in range(10)), size=(28, 28))
    return root


def _digest(run: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(run.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(run)).encode() + p.read_bytes())
    return h.hexdigest()


# -- the readers ----------------------------------------------------------------------------------
def test_fashion_mnist_reads_torchvisions_layout(data_dir):
    x, y = images.load_fashion_mnist("train", data_dir, verify=False)
    want_x, want_y = image_set(200, (28, 28), seed=1)
    assert x.dtype == torch.uint8 and tuple(x.shape) == (200, 1, 28, 28)
    assert torch.equal(x[:, 0], torch.from_numpy(want_x)) and torch.equal(y, torch.from_numpy(want_y).long())
    assert len(images.load_fashion_mnist("test", data_dir, verify=False)[0]) == 60


def test_verify_refuses_files_that_are_not_torchvision_s(data_dir):
    """verify=true checks the files against the MD5 sums torchvision publishes; the test
    files are not the real ones, so the check must fail, naming the file."""
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz is corrupt or partial \(its MD5"):
        images.load_fashion_mnist("train", data_dir, verify=True)
    with pytest.raises(DataError, match=r"cifar-10-batches-py/batches.meta is corrupt or partial"):
        cifar.load_cifar10("train", data_dir, verify=True)


def test_cifar10_safe_reader_equals_a_plain_unpickle_of_the_same_files(data_dir):
    x, y = cifar.load_cifar10("train", data_dir, verify=False)
    assert x.dtype == torch.uint8 and tuple(x.shape) == (150, 3, 32, 32) and y.dtype == torch.int64
    base = data_dir / "cifar-10-batches-py"
    # what torchvision's CIFAR10 does, on files this test wrote itself (trusted)
    plain = [pickle.loads((base / f"data_batch_{i}").read_bytes(), encoding="latin1") for i in range(1, 6)]
    assert np.array_equal(x.numpy().reshape(150, -1), np.concatenate([b["data"] for b in plain]))
    assert y.tolist() == [label for b in plain for label in b["labels"]]
    assert len(cifar.load_cifar10("test", data_dir, verify=False)[0]) == 60


def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    write_cifar10(tmp_path, per_batch=4, n_test=4)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(malicious_pickle(f"touch {tmp_path / 'pwned'}"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"data_batch_3 refers to os.system, which a CIFAR-10 batch never does"):
        cifar.load_cifar10("train", tmp_path, verify=False)
    assert not (tmp_path / "pwned").exists()
    # another global any pickle could name: refused the same way
    batch.write_bytes(b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1q\x85R.")
    with pytest.raises(DataError, match=r"refers to builtins.eval"):
        cifar.safe_load(batch)


@pytest.mark.parametrize(
    "damage,message",
    [
        ("truncate", "cannot be read"),
        ("delete", "is missing; rerun with data.download=true"),
        ("floats", "not uint8 [N, 3072]"),
    ],
)
def test_a_partial_or_wrong_cifar_batch_fails_naming_it(damage, message, tmp_path):
    write_cifar10(tmp_path, per_batch=4, n_test=4)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    if damage == "truncate":
        batch.write_bytes(batch.read_bytes()[:200])
    elif damage == "delete":
        batch.unlink()
    else:
        x, y = image_set(4, (3, 32, 32))
        batch.write_bytes(cifar_batch_bytes(x.astype(np.uint16), y, b"b"))
    with pytest.raises(DataError, match="data_batch_2") as e:
        cifar.load_cifar10("train", tmp_path, verify=False)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_idx_reader_checks_header_and_body(tmp_path):
    x, _ = image_set(5, (6, 7))
    path = write_idx(tmp_path / "imgs", x)
    assert np.array_equal(parse_idx(path.read_bytes(), "f", 3), x)
    with pytest.raises(DataError, match="truncated: 209 of 210 values"):
        parse_idx(path.read_bytes()[:-1], "f", 3)
    with pytest.raises(DataError, match="not an IDX file with 1 dims"):
        parse_idx(path.read_bytes(), "f", 1)
    with pytest.raises(DataError, match="labels are not a 1-dim integer"):
        images.images_and_labels(x, x.astype(np.float32), "f")


def test_idx_module_takes_its_shape_and_classes_from_the_files(data_dir, tmp_path):
    dm = IDXDataModule(root=str(data_dir / "idx"), val_split=30)
    assert dm.input_shape == (3, 28, 28) and dm.num_classes == 10
    dm.setup()
    assert len(dm.train_set) == 120 and len(dm.val_set) == 30 and len(dm.test_set) == 60
    # labels beyond data.num_classes, test images of another size: one line each
    with pytest.raises(DataError, match=r"label 9 is outside \[0, 5\) \(data.num_classes\)"):
        IDXDataModule(root=str(data_dir / "idx"), num_classes=5).setup()
    write_idx_set(tmp_path, 20, 10, gz=False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", image_set(10, (27, 28))[0])
    with pytest.raises(DataError, match=r"holds \[1, 27, 28\] images, the training file \[1, 28, 28\]"):
        IDXDataModule(root=str(tmp_path)).setup()


def test_image_folder_grayscale_resize_and_errors(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=4, size=(20, 24))
    dm = ImageFolderDataModule(root=str(root), grayscale=True, size=[8, 10], eval_subset=6)
    assert dm.input_shape == (1, 8, 10) and dm.num_classes == 3
    dm.setup()
    x, y = dm.train_set.tensors
    assert x.dtype == torch.uint8 and tuple(x.shape) == (12, 1, 8, 10) and sorted(set(y.tolist())) == [0, 1, 2]
    # one fixed shuffle of the class-sorted files: the first images are not one class
    assert len(set(dm.test_set.tensors[1].tolist())) > 1
    assert ImageFolderDataModule(root=str(root)).input_shape == (3, 20, 24)
    from PIL import Image

    Image.new("RGB", (30, 30)).save(root / "train" / "cat" / "big.png")
    with pytest.raises(DataError, match=r"is \d+x\d+, the first image .* \d+x\d+; set data.size=\[H,W\] to resize"):
        ImageFolderDataModule(root=str(root)).setup()
    (root / "train" / "cat" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad.png cannot be read"):
        ImageFolderDataModule(root=str(root), size=[8, 8]).setup()
    (root / "test" / "wolf").mkdir()
    Image.new("RGB", (24, 20)).save(root / "test" / "wolf" / "w.png")
    with pytest.raises(DataError, match="classes the training folder lacks: wolf"):
        images.load_image_folder(root, "test", ["cat", "dog", "fox"])
    with pytest.raises(DataError, match=r"image folder .*nope/train is missing"):
        _ = ImageFolderDataModule(root=str(tmp_path / "nope")).num_classes


def test_missing_files_fail_in_one_line_naming_path_and_download(tmp_path):
    for dm, path in (
        (FashionMNISTDataModule(root=str(tmp_path)), "FashionMNIST/raw/train-images-idx3-ubyte.gz is missing"),
        (CIFAR10DataModule(root=str(tmp_path)), "cifar-10-batches-py/batches.meta is missing"),
    ):
        with pytest.raises(DataError) as e:
            dm.setup()
        assert path in str(e.value) and "data.download=true" in str(e.value) and "\n" not in str(e.value)


# -- normalisation and augmentation ---------------------------------------------------------------
def test_normalize_measures_the_training_split_and_scales_on_the_device(data_dir):
    dm = CIFAR10DataModule(root=str(data_dir), verify=False, val_split=50)
    dm.setup()
    train = dm.train_set.tensors[0]
    want = train.double().div(255).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(dm.mean, want.mean(1).float(), atol=1e-6)
    assert torch.allclose(dm.std, want.std(1, unbiased=False).float(), atol=1e-6)
    batch = dm.on_after_batch_transfer((train[:8], torch.zeros(8)), 0)[0]  # no trainer: no augmentation
    expected = (train[:8].float() / 255 - dm.mean.view(1, 3, 1, 1)) / dm.std.view(1, 3, 1, 1)
    assert torch.allclose(batch, expected, atol=1e-6)
    fixed = CIFAR10DataModule(root=str(data_dir), verify=False, val_split=50, mean=[0.5], std=[0.25])
    fixed.setup()
    assert torch.allclose(fixed.on_after_batch_transfer((train[:2], None), 0)[0], (train[:2] / 255 - 0.5) / 0.25)


def test_channel_stats_match_numpy():
    x = torch.randint(0, 256, (37, 3, 5, 4), dtype=torch.uint8)
    mean, std = channel_stats(x, chunk=8)
    a = x.numpy().astype(np.float64) / 255
    assert np.allclose(mean.numpy(), a.mean((0, 2, 3)), atol=1e-6)
    assert np.allclose(std.numpy(), a.std((0, 2, 3)), atol=1e-6)


class _Training:
    training = True


@pytest.mark.parametrize("augment", ["shift", "flip", "crop_flip", "affine", "elastic"])
def test_augmentation_keeps_shape_and_moves_pixels_while_training_only(augment):
    dm = CIFAR10DataModule(augment=augment, normalize=False)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(dm.on_after_batch_transfer((x, None), 0)[0], x.float() / 255)  # not training
    dm.trainer = _Training()  # type: ignore[assignment]
    torch.manual_seed(0)
    out = dm.on_after_batch_transfer((x, None), 0)[0]
    assert out.shape == x.shape and not torch.equal(out, x.float() / 255)
    if augment == "flip":  # each image as it was, or mirrored
        same = (out == x.float() / 255).flatten(1).all(1)
        mirrored = (out == x.flip(-1).float() / 255).flatten(1).all(1)
        assert bool((same | mirrored).all()) and 0 < int(mirrored.sum()) < 16


def test_shift_translates_each_image_by_its_own_offset():
    """MNIST's shift: per image a draw of dx, then dy, in [-2, 2], zero padding."""
    dm = MNISTDataModule(augment="shift")
    dm.trainer = _Training()  # type: ignore[assignment]
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    torch.manual_seed(3)
    out = dm.on_after_batch_transfer((x, None), 0)[0]
    torch.manual_seed(3)
    padded = torch.nn.functional.pad(x.float() / 255, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (8,)), torch.randint(0, 5, (8,))
    for i in range(8):
        assert torch.equal(out[i, 0], padded[i, 0, dy[i] : dy[i] + 28, dx[i] : dx[i] + 28])


def _affine(dm, x, seed):
    dm.trainer = _Training()  # type: ignore[assignment]
    torch.manual_seed(seed)
    return dm.on_after_batch_transfer((x, None), 0)[0]


def _centre_of_mass(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.arange(images.shape[-1], dtype=torch.float32) - (images.shape[-1] - 1) / 2
    w = images[:, 0]
    mass = w.sum((1, 2))
    return (w.sum(1) * coords).sum(1) / mass, (w.sum(2) * coords).sum(1) / mass


def test_affine_without_motion_is_the_identity_and_shifts_stay_within_max_shift():
    x = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    still = MNISTDataModule(augment="affine", max_rotate=0, max_scale=0, max_shift=0)
    assert torch.allclose(_affine(still, x, 0), x.float() / 255, atol=1e-5)
    blob = torch.zeros(256, 1, 28, 28, dtype=torch.uint8)
    blob[:, 0, 11:17, 11:17] = 255  # a centred square, well inside the frame
    out = _affine(MNISTDataModule(augment="affine", max_rotate=0, max_scale=0, max_shift=3), blob, 2)
    cx, cy = _centre_of_mass(out)
    assert float(cx.abs().max()) <= 3.01 and float(cy.abs().max()) <= 3.01
    assert float(cx.abs().max()) > 2.5 and float(cy.abs().max()) > 2.5  # 256 draws reach near the bound
    assert float(cx.std()) > 1 and abs(float(cx.mean())) < 0.5  # spread both ways


def test_affine_rotates_about_the_centre_within_its_bounds():
    """A centred bar keeps its centre of mass; rotated by at most max_rotate degrees and
    scaled by at most max_scale, its second moments stay within those bounds."""
    x = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    x[:, 0, 13:15, 4:24] = 255  # a horizontal bar through the centre
    out = _affine(MNISTDataModule(augment="affine", max_rotate=30, max_scale=0.0, max_shift=0), x, 1)
    cx, cy = _centre_of_mass(out)
    coords = torch.arange(28, dtype=torch.float32) - 13.5
    w = out[:, 0]
    mass = w.sum((1, 2))
    assert cy.abs().max() < 0.3 and cx.abs().max() < 0.3
    # orientation of the bar from the second moments
    yy, xx = coords.view(28, 1), coords.view(1, 28)
    mxx, myy, mxy = ((w * xx * xx).sum((1, 2)), (w * yy * yy).sum((1, 2)), (w * xx * yy).sum((1, 2)))
    angle = torch.rad2deg(0.5 * torch.atan2(2 * mxy, mxx - myy)).abs()
    assert float(angle.max()) <= 30.5 and float(angle.max()) > 15  # 64 draws in [-30, 30]
    assert abs(float(mass.mean()) - float(x[:, 0].float().div(255).sum((1, 2)).mean())) < 2  # no scaling


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), sigma=st.floats(0.3, 12.0), seed=st.integers(0, 2**31 - 1))
def test_gaussian_matrix_is_the_reflect_padded_gaussian_filter(n, sigma, seed):
    """The elastic field's smoothing matrix does what a Gaussian filter with reflected
    borders does (pad, then convolve), for any side and sigma -- radius past the side too."""
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    x = np.random.default_rng(seed).uniform(-1, 1, n)

    def source(i: int) -> int:  # numpy's "reflect" (edge not repeated): -1 -> 1, n -> n - 2
        while not 0 <= i < n:
            i = -i if i < 0 else 2 * (n - 1) - i
        return i

    expected = [sum(w * x[source(i + k - radius)] for k, w in enumerate(taps)) for i in range(n)] if n > 1 else x
    got = _gaussian_matrix(n, sigma).numpy() @ x
    assert np.allclose(got, expected, atol=1e-12)
    if n > 1 and radius < n:  # the same as numpy's pad, wherever the pad fits once
        assert np.allclose(np.convolve(np.pad(x, radius, mode="reflect"), taps, mode="valid"), got, atol=1e-12)


def test_elastic_field_is_smooth_bounded_and_scaled_by_alpha():
    torch.manual_seed(0)
    f = _elastic_field(256, 28, 28, 34.0, 4.0, device=torch.device("cpu"), dtype=torch.float32)
    assert f.shape == (256, 2, 28, 28) and float(f.abs().max()) <= 34.0  # a weighted mean of [-1, 1], x alpha
    assert abs(float(f.mean())) < 0.1 and 1.0 < float(f.std()) < 3.0  # ~1.7 px: a few pixels, not tens
    step = (f[..., 1:] - f[..., :-1]).abs().mean()  # neighbours move together ...
    torch.manual_seed(0)
    rough = _elastic_field(256, 28, 28, 34.0, 0.0, device=torch.device("cpu"), dtype=torch.float32)
    assert float(step) < 0.2 * float((rough[..., 1:] - rough[..., :-1]).abs().mean())  # ... unlike raw noise
    torch.manual_seed(0)
    half = _elastic_field(4, 28, 28, 17.0, 4.0, device=torch.device("cpu"), dtype=torch.float32)
    assert torch.allclose(half * 2, f[:4])


def test_elastic_without_motion_is_the_identity_and_distorts_with_it():
    x = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    still = dict(max_rotate=0, max_scale=0, max_shift=0)
    plain = _affine(MNISTDataModule(augment="elastic", elastic_alpha=0, **still), x, 0)
    assert torch.allclose(plain, x / 255, atol=1e-5)
    warped = _affine(MNISTDataModule(augment="elastic", **still), x, 0)
    assert not torch.allclose(warped, x / 255, atol=0.05)
    blob = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    blob[:, 0, 9:19, 9:19] = 255  # a centred square: distorted locally, not moved away
    cx, cy = _centre_of_mass(_affine(MNISTDataModule(augment="elastic", **still), blob, 1))
    assert float(cx.abs().max()) < 3 and float(cy.abs().max()) < 3


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"augment": "rotate"}, "data.augment"),
        ({"max_shift": -1}, "data.max_shift"),
        ({"max_rotate": 200}, "data.max_rotate"),
        ({"max_scale": 1.0}, "data.max_scale"),
        ({"elastic_alpha": -1.0}, "data.elastic_alpha"),
        ({"elastic_sigma": float("nan")}, "data.elastic_sigma"),
        ({"std": [0.0]}, "data.std"),
    ],
)
def test_bad_options_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        CIFAR10DataModule(**kwargs)


def test_model_must_fit_the_data():
    net = {"model": {"input_shape": [1, 28, 28], "num_classes": 10}, "encoder": {"name": "direct"}, "time_steps": 4}
    with pytest.raises(ConfigError, match=r"model.input_shape=\[1, 28, 28\] does not fit the data: data.name=cifar10"):
        check_data_fits(CIFAR10DataModule(), net)
    net["model"]["input_shape"] = [3, 32, 32]
    check_data_fits(CIFAR10DataModule(), net)
    net["encoder"] = {"name": "passthrough"}
    with pytest.raises(ConfigError, match=r"encoder=passthrough feeds event frames, but data.name=cifar10 gives"):
        check_data_fits(CIFAR10DataModule(), net)


# -- training runs, as a user would ----------------------------------------------------------------
@pytest.fixture(scope="module")
def recipe_runs(data_dir, tmp_path_factory) -> Path:
    """``experiment=fashion_conv,cifar10_conv`` (the recipes) as one multirun, each shrunk
    to a tiny epoch; only the MD5 check is bypassed. ``data.verify`` is given as a sweep
    (``choice(false)``): a multirun composes first without the swept experiment, whose
    data option is the one with that key."""
    out = tmp_path_factory.mktemp("recipes")
    args = ["-m", "experiment=fashion_conv,cifar10_conv", "data.verify=choice(false)", f"paths.data_dir={data_dir}"]
    r = train([*args, "time_steps=2", *TINY, "hydra.sweep.dir=sweep"], out, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return out / "sweep"


def test_the_recipes_train_a_tiny_epoch_on_each_layout(recipe_runs):
    for job, shape in (("0", [1, 28, 28]), ("1", [3, 32, 32])):
        m = metrics(recipe_runs / job)
        assert m["test_acc"] is not None and m["epochs"] == 1 and len(m["history"]) == 1
        cfg = OmegaConf.load(recipe_runs / job / ".hydra" / "config.yaml")
        assert list(cfg.model.input_shape) == shape and cfg.data.verify is False


@pytest.mark.slow  # a CLI run (tens of seconds); lighter tests cover the same code in the default run
def test_a_users_idx_files_and_image_folder_train_a_tiny_epoch(data_dir, tmp_path):
    r = train(
        [
            "-m",
            "data=idx,image_folder",
            f"paths.data_dir={data_dir}",
            "model.input_shape=[3,28,28]",
            "model.hidden=[32]",
            "time_steps=2",
            "data.normalize=true",
            "data.augment=crop_flip",
            "encoder=direct",
            *TINY,
            "hydra.sweep.dir=sweep",
        ],
        tmp_path,
        timeout=600,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    for job in ("0", "1"):
        m = metrics(tmp_path / "sweep" / job)
        assert m["test_acc"] is not None and m["epochs"] == 1


def test_missing_data_fails_in_one_line_and_leaves_a_good_run_untouched(recipe_runs, tmp_path):
    good = recipe_runs / "0"
    before = _digest(good)
    r = train(
        ["experiment=fashion_conv", f"paths.data_dir={tmp_path / 'empty'}", *TINY, "hydra.run.dir=new"],
        tmp_path,
        timeout=300,
    )
    assert r.returncode == 2, (r.stdout + r.stderr)[-2000:]
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: Fashion-MNIST file ") and "Traceback" not in r.stderr
    assert f"{tmp_path / 'empty'}/FashionMNIST/raw/train-images-idx3-ubyte.gz is missing" in lines[-1]
    assert "data.download=true" in lines[-1]
    assert not (tmp_path / "new" / "metrics.json").exists() and not (tmp_path / "new" / "checkpoints").exists()
    assert _digest(good) == before


def test_a_model_that_does_not_fit_the_data_fails_validation_naming_both(compose_cfg, tmp_path):
    """config.validate (before any data is read or anything is written) builds the data
    module and checks the network against it."""
    from snn_lab.config import validate

    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(["data=cifar10"]))
    assert str(e.value) == (
        "model.input_shape=[1, 28, 28] does not fit the data: data.name=cifar10 gives samples of "
        "[3, 32, 32]; set model.input_shape=[3,32,32]"
    )
    with pytest.raises(ConfigError, match=r"model.num_classes=10 does not fit the data: data.name=image_folder"):
        root = write_image_folder(tmp_path, per_class=2, size=(28, 28))
        validate(compose_cfg(["data=image_folder", f"data.root={root}", "model.input_shape=[3,28,28]"]))


def test_download_failures_are_one_line(tmp_path, monkeypatch):
    """No network here: torchvision's downloader failing (as it does offline) becomes one line."""
    import torchvision.datasets.utils as tv

    def offline(url, *args, **kwargs):
        raise OSError(f"<urlopen error [Errno -3] Temporary failure in name resolution> ({url})")

    monkeypatch.setattr(tv, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match=r"downloading CIFAR-10 from https://.* failed \(<urlopen error"):
        CIFAR10DataModule(root=str(tmp_path), download=True).prepare_data()
    with pytest.raises(DataError, match=r"downloading Fashion-MNIST train-images-idx3-ubyte.gz into .* failed"):
        FashionMNISTDataModule(root=str(tmp_path), download=True).prepare_data()
    assert not os.listdir(tmp_path)
