"""The native-kernel package: cache key, one shared cache, fallback with one warning."""

from __future__ import annotations

import ast
import logging
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from snn_lab import _native
from snn_lab._native import build

HAS_CC = build.find_compiler() is not None
needs_cc = pytest.mark.skipif(not HAS_CC, reason="no C compiler")


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty cache and no remembered outcome, before and after the test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SNN_LAB_CACHE", str(cache))
    monkeypatch.delenv("SNN_LAB_NATIVE", raising=False)
    build.reset()
    yield cache
    build.reset()


def _warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "snn_lab.native" and r.levelno == logging.WARNING]


def test_native_imports_only_the_standard_library():
    pkg = Path(_native.__file__).parent
    for path in pkg.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in sys.stdlib_module_names | {"__future__"}, (path.name, name)


def test_cache_key_covers_sources_headers_compiler_and_flags(tmp_path, monkeypatch):
    csrc = tmp_path / "csrc"
    shutil.copytree(build.CSRC, csrc)
    monkeypatch.setattr(build, "CSRC", csrc)
    key = build.cache_key("engine", "/usr/bin/cc", version="cc 1.0")
    assert key == build.cache_key("engine", "/usr/bin/cc", version="cc 1.0")
    for f in ("engine.c", "common.h"):
        (csrc / f).write_text((csrc / f).read_text() + "\n/* changed */\n")
        new = build.cache_key("engine", "/usr/bin/cc", version="cc 1.0")
        assert new != key, f
        key = new
    assert build.cache_key("engine", "/usr/bin/cc", version="cc 1.1") != key
    assert build.cache_key("engine", "/usr/bin/clang", version="cc 1.0") != key
    assert build.cache_key("engine", "/usr/bin/cc", march_native=False, version="cc 1.0") != key
    assert build.cache_key("sparse_deploy", "/usr/bin/cc", version="cc 1.0") != key
    monkeypatch.setattr(build, "ABI_VERSION", build.ABI_VERSION + 1)
    assert build.cache_key("engine", "/usr/bin/cc", version="cc 1.0") != key


def test_broken_compiler_falls_back_with_one_warning(fresh, tmp_path, monkeypatch, caplog):
    from snn_lab.engine import native

    cc = tmp_path / "broken-cc"
    cc.write_text("#!/bin/sh\necho 'broken-cc: internal error' >&2\nexit 1\n")
    cc.chmod(cc.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setattr(native, "_loaded", {})  # the engine may have loaded the real kernels already
    caplog.set_level(logging.WARNING, logger="snn_lab.native")
    assert not native.available() and not native.available()
    with pytest.raises(build.NativeUnavailableError, match="broken-cc: internal error"):
        build.load("engine")
    (rec,) = _warnings(caplog)
    assert "engine" in rec.getMessage() and "broken-cc" in rec.getMessage() and "PyTorch" in rec.getMessage()
    st = native.status()
    assert st["available"] is False and st["kernels"] == "pytorch" and st["library"] is None
    assert "broken-cc: internal error" in st["error"] and st["disabled"] is False
    assert _native.describe()["engine"]["kernels"] == "pytorch"
    assert not list(fresh.glob("*.so")) and not list(fresh.glob(".build-*"))  # nothing half-written left


def test_missing_compiler_reported(fresh, monkeypatch, caplog):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CC", raising=False)
    caplog.set_level(logging.WARNING, logger="snn_lab.native")
    with pytest.raises(build.NativeUnavailableError, match="no C compiler"):
        build.load("engine")
    assert len(_warnings(caplog)) == 1
    assert build.status("engine")["kernels"] == "pytorch"


def test_snn_lab_native_0_disables_the_engine_kernels(fresh, monkeypatch, caplog):
    monkeypatch.setenv("SNN_LAB_NATIVE", "0")
    caplog.set_level(logging.WARNING, logger="snn_lab.native")
    for _ in range(2):
        with pytest.raises(build.NativeUnavailableError, match="SNN_LAB_NATIVE=0"):
            build.load("engine")
    assert len(_warnings(caplog)) == 1
    st = build.status("engine")
    assert st["disabled"] is True and st["kernels"] == "pytorch" and "SNN_LAB_NATIVE" in st["error"]
    assert not fresh.exists() or not list(fresh.iterdir())  # nothing was compiled


@needs_cc
def test_engine_and_sparse_share_one_cache_and_build_once(fresh, tmp_path, monkeypatch, caplog):
    from snn_lab.deploy.backends import sparse

    caplog.set_level(logging.WARNING, logger="snn_lab.native")
    assert build.status("engine")["kernels"] == "not loaded"
    build.load("engine")
    lib = sparse.build_kernel()
    libs = sorted(fresh.glob("*.so"))
    assert [p.name.split("-")[0] for p in libs] == ["libsnn_engine", "libsnn_sparse_deploy"]
    assert Path(lib._name) in libs and not list(fresh.glob(".build-*"))
    desc = _native.describe()
    assert desc["engine"]["kernels"] == desc["sparse_deploy"]["kernels"] == "native"
    assert desc["engine"]["compiled"] and desc["sparse_deploy"]["compiled"]
    mtimes = {p: p.stat().st_mtime_ns for p in libs}

    build.reset()  # a new process, as far as the build is concerned
    monkeypatch.chdir(tmp_path)  # the deploy output directory plays no part
    build.load("engine")
    assert sparse.build_kernel()._name == lib._name
    desc = _native.describe()
    assert not desc["engine"]["compiled"] and not desc["sparse_deploy"]["compiled"]
    assert {p: p.stat().st_mtime_ns for p in sorted(fresh.glob("*.so"))} == mtimes
    assert not _warnings(caplog)


@needs_cc
def test_sparse_backend_errors_and_weight_tiles(fresh, tmp_path, monkeypatch):
    from snn_lab.deploy import BackendUnavailableError
    from snn_lab.deploy.backends import sparse

    with pytest.raises(BackendUnavailableError, match="no C compiler was found"):
        sparse.build_kernel("no-such-cc-xyz")
    cc = tmp_path / "broken-cc"
    cc.write_text("#!/bin/sh\nexit 3\n")
    cc.chmod(cc.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(BackendUnavailableError, match=r"could not build.*exit 3.*install a working C compiler"):
        sparse.build_kernel(str(cc))
    monkeypatch.setenv("SNN_LAB_NATIVE", "0")  # applies only to kernels with a PyTorch fallback
    lib = sparse.build_kernel()
    rng = np.random.default_rng(0)
    for n_out, n_in in ((10, 7), (64, 5), (100, 33), (200, 3)):
        w = rng.standard_normal((n_out, n_in)).astype(np.float32)
        n_pad = -(-n_out // 8) * 8
        wt = np.zeros((n_in, n_pad), np.float32)
        wt[:, :n_out] = w.T
        parts, c0 = [], 0  # the layout: 64-column tiles while they fit, then 8-column ones
        while c0 < n_pad:
            width = 64 if c0 + 64 <= n_pad else 8
            parts.append(wt[:, c0 : c0 + width].ravel())
            c0 += width
        assert np.array_equal(sparse.pack_weights(lib, w, n_pad), np.concatenate(parts))


def test_huge_page_floats_are_aligned_disjoint_and_writable():
    """The sparse backend's weight buffers: one mapping, the first array on a 2 MB
    boundary (where transparent huge pages can back it), each on a 4 KB one, disjoint."""
    from snn_lab.deploy.backends import sparse

    arrays, mapping = sparse.huge_page_floats([10, 4097, 3])
    addrs = [a.ctypes.data for a in arrays]
    assert addrs[0] % sparse.HUGE_PAGE == 0 and all(x % 4096 == 0 for x in addrs)
    assert [a.size for a in arrays] == [10, 4097, 3] and all(a.dtype == np.float32 for a in arrays)
    assert addrs[1] - addrs[0] >= 4 * 10 and addrs[2] - addrs[1] >= 4 * 4097  # in order, disjoint
    for i, a in enumerate(arrays):
        a[:] = i
    assert [float(a.sum()) for a in arrays] == [0.0, 4097.0, 6.0]
    assert mapping is not None


def test_one_cache_dir_and_unknown_library(monkeypatch):
    monkeypatch.delenv("SNN_LAB_CACHE", raising=False)
    assert build.cache_dir() == Path.home() / ".cache" / "snn_lab"
    with pytest.raises(KeyError, match="sparse_deploy"):
        build.load("nope")


@needs_cc
@pytest.mark.parametrize("encode", ["graph", "host"])
@pytest.mark.parametrize("readout", ["rate", "membrane"])
@pytest.mark.parametrize("hidden", [(70, 40), (60, 136)])  # full tiles, tails, a tile past n_out
def test_sparse_whole_sequence_run_equals_stepping(tmp_path, tiny_net, mnist_like, encode, readout, hidden):
    """``run_batch`` (one kernel call for all T steps, layer by layer over the sequence)
    gives the very floats of stepping the kernel T times (complement off), and with the
    complement the eager network's outputs within rounding, with in-kernel draws and with
    host spikes; the report side counts the adds and measures the machine's add rate."""
    from snn_lab.deploy.api import compile_step
    from snn_lab.deploy.backends.base import CompiledStep
    from snn_lab.deploy.runtime import InputSource

    net = tiny_net("lif", readout=readout, hidden=hidden, time_steps=9)
    images = mnist_like(10)
    for threads in (1, 2):
        _, compiled, _ = compile_step(net, "sparse", 10, tmp_path / f"{encode}{threads}", encode, {"threads": threads})
        source = InputSource(net, 5, 9)
        ids = np.arange(10)
        steps, keys = source.step_inputs(compiled, images, ids)
        stepped = CompiledStep.run_batch(compiled, images, steps, keys, 9)  # T calls of the one-step kernel
        compiled.complement = False
        rows_before = compiled._spikes.copy()
        assert np.array_equal(compiled.run_batch(images, steps, keys, 9), stepped)
        plain_rows = compiled._spikes - rows_before
        compiled.complement = True  # bright inputs once, minus where silent: other rounding
        whole = compiled.run_batch(images, steps, keys, 9)
        comp_rows = compiled._spikes - rows_before - plain_rows
        # the input and the hidden layer both have inputs firing at most steps: fewer rows
        assert (comp_rows[:2] < plain_rows[:2]).all() and comp_rows[2] == plain_rows[2]
        eager = net.forward_spikes(source.spike_train(images, ids)).detach().numpy() * 9
        for got in (whole, stepped):
            if readout == "membrane":
                np.testing.assert_allclose(got, eager, rtol=1e-4, atol=1e-4)
            else:  # spike counts: a spike may flip where a membrane ties vth to rounding
                assert np.abs(got - eager).sum() <= 2
        info = compiled.describe()
        assert info["adds_per_sample"] > 0 and info["machine_adds_per_s"] > 0
        assert info["kernel_fraction_of_machine_add_rate"] > 0
        compiled.close()
