"""The Lynxi KA200 backend up to the toolchain boundary.

lyngor and LynSDK cannot be installed here, so: the load/save graph, its manifest, the
batch-size rule and the missing-SDK error are tested for real; the runtime loop is
driven with ``MockLynSdkDevice`` below, a test double for the APU + LynSDK (hardware we
cannot have) that runs the load/save step on CPU and answers through a callback thread
like the SDK's receive stream. Nothing in the package uses this mock.
"""

from __future__ import annotations

import importlib.util
import json
import queue
import threading

import numpy as np
import pytest
import torch

from snn_lab.deploy import BackendUnavailableError, LoadSaveStep, UnsupportedError, create_backend
from snn_lab.deploy.api import compile_step
from snn_lab.deploy.backends.lynxi import LYNXI_BATCH_SIZES, LynxiStep, prepare_graph
from snn_lab.deploy.runtime import InputSource, Runtime, eager_reference

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lyngor") is not None,
    reason="lyngor is installed: these tests cover the SDK-less path",
)


class MockLynSdkDevice:
    """TEST DOUBLE of a KA200 running a lyngor-built load/save graph under LynSDK.

    ``submit`` queues a T-step input block; a device thread resets the DDR state, runs the
    load/save step T times (states go through snn_lab::state_load/state_save) and calls
    back with the T outputs, like LynSDK's recv stream callback."""

    def __init__(self, step: LoadSaveStep):
        self.step = step
        self.batch_size = step.batch_size
        self.resets = 0
        self.steps = 0
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._device, daemon=True)
        self._thread.start()

    def _device(self):
        while True:
            item = self._q.get()
            if item is None:
                return
            inputs, callback = item
            self.step.reset()
            self.resets += 1
            outs = []
            with torch.no_grad():
                for t in range(inputs[0].shape[0]):
                    outs.append(self.step(*[torch.from_numpy(np.array(x[t])) for x in inputs]).numpy())
                    self.steps += 1
            callback(np.stack(outs))

    def submit(self, inputs, callback):
        self._q.put((inputs, callback))

    def synchronize(self):
        pass

    def close(self):
        self._q.put(None)
        self._thread.join(timeout=10)


def test_without_lyngor_compile_writes_the_graph_then_says_what_to_install(tmp_path, tiny_net):
    with pytest.raises(BackendUnavailableError) as e:
        compile_step(tiny_net(), "lynxi", 28, tmp_path)
    msg = str(e.value)
    assert "lyngor" in msg and "Lynxi SDK" in msg and "pip install" in msg and "docs/DEPLOY.md" in msg
    assert (tmp_path / "step_loadsave.pt").is_file()
    graph = (tmp_path / "step_loadsave.graph.txt").read_text()
    assert graph.count("snn_lab::state_load") == 3 and graph.count("snn_lab::state_save") == 3
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [s["key"] for s in manifest["states"]] == ["layers.0.v", "layers.1.v", "layers.2.v"]
    assert manifest["states"][0]["shape"] == [28, 48] and manifest["batch_size"] == 28
    assert manifest["supported_batch_sizes"] == [1, 2, 4, 7, 14, 28]


@pytest.mark.parametrize("batch", [3, 5, 16, 32])
def test_unsupported_batch_size_is_rejected_before_tracing(batch, tmp_path, tiny_net):
    with pytest.raises(UnsupportedError, match="1, 2, 4, 7, 14, 28"):
        compile_step(tiny_net(), "lynxi", batch, tmp_path)
    assert not (tmp_path / "step_loadsave.pt").exists()


def test_supported_batch_sizes_pass_the_check():
    be = create_backend("lynxi")
    for b in LYNXI_BATCH_SIZES:
        be.check_batch_size(b)
    assert be.lowering == "loadsave"


@pytest.mark.parametrize("encode", ["host", "graph"])
def test_runtime_loop_over_mock_lynsdk_matches_eager(encode, tmp_path, tiny_net, mnist_like):
    net = tiny_net()
    B = 4
    step = LoadSaveStep(net, B, encode)
    info = prepare_graph(step, step.example_inputs(B), str(tmp_path))
    assert info["ops"] == {"state_load": 3, "state_save": 3, "state_sink": 1}
    device = MockLynSdkDevice(step)
    compiled = LynxiStep(device, step, {"traced": info["traced"]})
    images = mnist_like(10, seed=9)  # 3 batches, the last one padded
    T = net.time_steps
    src = InputSource(net, 5, T)
    res = Runtime(compiled, src, queue_depth=2, warmup=1).run(images)
    ref = eager_reference(net, src, images)
    assert np.array_equal(res.predictions, ref.argmax(1))
    assert np.array_equal(res.scores, ref)
    assert device.resets == 1 + 3 and device.steps == (1 + 3) * T  # warm-up + 3 batches, reset each
    compiled.close()


def test_device_side_encoding_is_refused_on_lynxi(tmp_path, tiny_net, mnist_like):
    net = tiny_net()
    step = LoadSaveStep(net, 2, "host")
    compiled = LynxiStep(MockLynSdkDevice(step), step, {})
    with pytest.raises(Exception, match="random op"):
        compiled.run_batch(mnist_like(2), None, np.zeros(2, np.uint32), net.time_steps)
    compiled.close()
