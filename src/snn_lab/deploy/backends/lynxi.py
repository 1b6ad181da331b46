"""``lynxi``: the Lynxi KA200 APU path of the seed, up to the toolchain boundary.

What runs everywhere (and is tested): the load/save lowering of the step
(:class:`~snn_lab.deploy.step.LoadSaveStep`: each membrane read by
``snn_lab::state_load`` and written by ``snn_lab::state_save`` under a stable key, so the
compiled graph keeps membranes in DDR between steps), its TorchScript trace with the
ops checked present (``step_loadsave.pt`` + ``step_loadsave.graph.txt``), a manifest of
inputs and DDR state buffers, and the batch-size check: the KA200 build supports batch
sizes 1, 2, 4, 7, 14 and 28 only.

What needs the Lynxi SDK (not installable here, so NOT exercised by our tests):

* ``lyngor`` (the compiler, Lynxi's wheel from the SDK) -- :func:`lyngor_build` loads the
  traced graph with ``lyn.DLModel().load(..., model_type="Pytorch")`` and builds it for
  ``target="apu"`` at the chosen batch size into ``<out>/lynxi/``. lyngor must be taught
  the three ``snn_lab::`` ops (map them to its DDR load/save annotations); point option
  ``op_plugin`` at a module that registers those converters with your lyngor version.
* ``pylynchipsdk`` (LynSDK runtime) -- :class:`LynSdkDevice` loads the built model,
  resets its state per sample batch, sends T steps asynchronously on one stream and
  receives outputs on another, delivering each batch's outputs by stream callback, as
  the tutorial's runtime does; the deploy runtime's feeder/reader threads drive it.

Without lyngor, ``compile`` writes the graph artifacts and then fails with
:class:`BackendUnavailableError` naming what to install. The test-suite drives the same
runtime loop with a *mock* of the LynSDK device (tests/test_deploy_lynxi.py), which runs
the load/save step on CPU; that mock stands in for hardware we do not have and is not
shipped with the package.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from ...errors import BackendUnavailableError, DeployError
from ...io import atomic_write_json, atomic_write_text
from ..ops import graph_ops
from ..registry import register_backend
from ..step import LoadSaveStep, trace_torchscript
from .base import Backend, CompiledStep

LYNXI_BATCH_SIZES = (1, 2, 4, 7, 14, 28)
INSTALL_HINT = (
    "lyngor is the Lynxi SDK's compiler and is not on PyPI: on a host with the KA200 driver, "
    "install the lyngor and pylynchipsdk wheels shipped with the Lynxi SDK "
    "(pip install lyngor-*.whl pylynchipsdk-*.whl); see docs/DEPLOY.md"
)


def prepare_graph(step: LoadSaveStep, example_inputs, out_dir: str) -> dict:
    """Trace the load/save step, check the ops, write graph + manifest (no SDK needed)."""
    if not isinstance(step, LoadSaveStep):
        raise DeployError("lynxi backend needs the load/save lowering (LoadSaveStep)")
    os.makedirs(out_dir, exist_ok=True)
    traced = trace_torchscript(step, example_inputs)
    graph_text = str(traced.graph)
    counts = graph_ops(graph_text)
    n = len(step.slots)
    if counts["state_load"] != n or counts["state_save"] != n or counts["state_sink"] != 1:
        raise DeployError(
            f"load/save graph is malformed: {counts} for {n} states; expected one load and one "
            "save per state and one sink"
        )
    pt = os.path.join(out_dir, "step_loadsave.pt")
    traced.save(pt)
    txt = os.path.join(out_dir, "step_loadsave.graph.txt")
    atomic_write_text(txt, graph_text)
    manifest = {
        "batch_size": step.batch_size,
        "encode": step.encode,
        "inputs": [
            {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
            for name, t in zip(step.input_names, example_inputs)
        ],
        "states": [{"key": s.key, "shape": [step.batch_size, *s.shape], "dtype": "float32"} for s in step.slots],
        "ops": counts,
        "supported_batch_sizes": list(LYNXI_BATCH_SIZES),
    }
    mpath = os.path.join(out_dir, "manifest.json")
    atomic_write_json(mpath, manifest)
    return {"traced": pt, "graph_text": txt, "manifest": mpath, "ops": counts, "manifest_data": manifest}


def lyngor_build(traced_path: str, manifest: dict, out_dir: str, version: int = 0, op_plugin: str | None = None) -> str:
    """Compile the traced load/save graph with lyngor for the APU. Untested (no SDK here)."""
    try:
        lyn = importlib.import_module("lyngor")
    except ImportError as e:
        raise BackendUnavailableError(
            f"backend 'lynxi' needs lyngor (Lynxi SDK), which cannot be imported ({e}); {INSTALL_HINT}"
        ) from None
    if op_plugin:
        importlib.import_module(op_plugin)  # registers the snn_lab::state_* converters with lyngor
    inputs = {
        f"data_{i}": tuple(x["shape"][1:] if manifest["batch_size"] > 1 else x["shape"])
        for i, x in enumerate(manifest["inputs"])
    }
    model = lyn.DLModel()
    model.load(torch.jit.load(traced_path), model_type="Pytorch", inputs_dict=inputs)
    builder = lyn.Builder(target="apu")
    kwargs: dict[str, Any] = {"out_path": out_dir}
    import inspect

    params = inspect.signature(builder.build).parameters
    if "batch_size" in params:
        kwargs["batch_size"] = manifest["batch_size"]
    if "version" in params:
        kwargs["version"] = version
    builder.build(model.graph, model.params, **kwargs)
    net = os.path.join(out_dir, "Net_0")
    return net if os.path.isdir(net) else out_dir


class LynDevice(Protocol):
    """What the runtime needs from an APU (implemented by LynSdkDevice; mocked in tests)."""

    batch_size: int

    def submit(self, inputs: list[np.ndarray], callback: Callable[[np.ndarray], None]) -> None:
        """Reset the model state, run ``inputs`` (each ``[T, B, ...]``) for T steps,
        then call ``callback(outputs [T, B, C])`` from the device's callback thread."""

    def synchronize(self) -> None: ...

    def close(self) -> None: ...


class LynSdkDevice:
    """LynSDK (``pylynchipsdk``) runtime for a model built by :func:`lyngor_build`.

    One context and two streams (send, receive) on ``device_id``; ``submit`` copies the
    T-step input block to device memory, resets the model's DDR state, queues T
    ``send_input`` / ``recv_output`` pairs and a callback that copies the T outputs back.
    Written against the LynSDK Python API as used by Lynxi's published samples; it has
    not been run here (no KA200): treat as a starting point on real hardware.
    """

    def __init__(self, model_dir: str, device_id: int = 0, time_steps: int = 20, slots: int = 3):
        try:
            self.sdk = sdk = importlib.import_module("pylynchipsdk")
        except ImportError as e:
            raise BackendUnavailableError(
                f"backend 'lynxi' needs pylynchipsdk (LynSDK) to run, which cannot be imported ({e}); {INSTALL_HINT}"
            ) from None
        self.time_steps = int(time_steps)
        self.ctx, ret = sdk.lyn_create_context(int(device_id))
        self._check(ret, "lyn_create_context")
        self._check(sdk.lyn_set_current_context(self.ctx), "lyn_set_current_context")
        self.s_send, ret = sdk.lyn_create_stream()
        self._check(ret, "lyn_create_stream")
        self.s_recv, ret = sdk.lyn_create_stream()
        self._check(ret, "lyn_create_stream")
        self.done_event, ret = sdk.lyn_create_event()
        self._check(ret, "lyn_create_event")
        self.model, ret = sdk.lyn_load_model(model_dir)
        self._check(ret, "lyn_load_model")
        desc, ret = sdk.lyn_model_get_desc(self.model)
        self._check(ret, "lyn_model_get_desc")
        self.batch_size = int(desc.inputTensorAttrArray[0].batchSize)
        self.in_len, self.out_len = int(desc.inputDataLen), int(desc.outputDataLen)
        self.out_shape = list(desc.outputTensorAttrArray[0].dims)
        block_in = self.in_len * self.batch_size * self.time_steps
        block_out = self.out_len * self.batch_size * self.time_steps
        import queue

        self._free: queue.Queue = queue.Queue()
        self._bufs = []
        for _ in range(slots):
            dev_in, ret = sdk.lyn_malloc(block_in)
            self._check(ret, "lyn_malloc")
            dev_out, ret = sdk.lyn_malloc(block_out)
            self._check(ret, "lyn_malloc")
            self._bufs.append((dev_in, dev_out))
            self._free.put((dev_in, dev_out))
        self._submitted = 0
        self._inflight: dict[int, np.ndarray] = {}

    @staticmethod
    def _check(ret, what: str) -> None:
        if ret:
            raise DeployError(f"LynSDK {what} failed with code {ret}; check the driver (lynxi-smi) and device_id")

    def submit(self, inputs: list[np.ndarray], callback) -> None:
        sdk, B, T = self.sdk, self.batch_size, self.time_steps
        host = np.ascontiguousarray(np.concatenate([x.reshape(T, B, -1).astype(np.float32) for x in inputs], -1))
        dev_in, dev_out = self._free.get()
        sdk.lyn_set_current_context(self.ctx)
        self._check(
            sdk.lyn_memcpy_async(
                self.s_send, dev_in, sdk.lyn_numpy_to_ptr(host), host.nbytes, sdk.lyn_memcpy_dir_t.ClientToServer
            ),
            "lyn_memcpy_async",
        )
        if self._submitted:
            sdk.lyn_stream_wait_event(self.s_send, self.done_event)  # previous batch fully read out
        self._check(sdk.lyn_model_reset_async(self.s_send, self.model), "lyn_model_reset_async")
        pin, pout = dev_in, dev_out
        for _ in range(T):
            self._check(sdk.lyn_model_send_input_async(self.s_send, self.model, pin, pout, B), "send_input")
            self._check(sdk.lyn_model_recv_output_async(self.s_recv, self.model), "recv_output")
            pin = sdk.lyn_addr_seek(pin, self.in_len * B)
            pout = sdk.lyn_addr_seek(pout, self.out_len * B)
        sdk.lyn_record_event(self.s_recv, self.done_event)
        key = id(host)
        self._inflight[key] = host  # the host block must live until the copy ran

        def on_done(_params):
            out = np.empty((T, B, self.out_len // 4), dtype=np.float32)
            sdk.lyn_memcpy(sdk.lyn_numpy_to_ptr(out), dev_out, out.nbytes, sdk.lyn_memcpy_dir_t.ServerToClient)
            self._free.put((dev_in, dev_out))
            self._inflight.pop(key, None)
            callback(out)
            return 0

        sdk.lyn_stream_add_callback(self.s_recv, on_done, [])
        self._submitted += 1

    def synchronize(self) -> None:
        self.sdk.lyn_set_current_context(self.ctx)
        self.sdk.lyn_synchronize_stream(self.s_send)
        self.sdk.lyn_synchronize_stream(self.s_recv)

    def close(self) -> None:
        sdk = self.sdk
        sdk.lyn_set_current_context(self.ctx)
        for dev_in, dev_out in self._bufs:
            sdk.lyn_free(dev_in)
            sdk.lyn_free(dev_out)
        sdk.lyn_unload_model(self.model)
        sdk.lyn_destroy_stream(self.s_send)
        sdk.lyn_destroy_stream(self.s_recv)
        sdk.lyn_destroy_context(self.ctx)


class LynxiStep(CompiledStep):
    """A compiled load/save step on an APU device; batches are submitted asynchronously."""

    backend = "lynxi"
    asynchronous = True

    def __init__(self, device: LynDevice, step: LoadSaveStep, artifacts: dict[str, str]):
        super().__init__(step, step.batch_size, artifacts, torch.float32)
        self.device = device

    def __call__(self, *inputs):
        raise DeployError("a lynxi step runs on the APU; drive it through submit()/run_batch()")

    def submit(self, images, steps, keys, time_steps, on_done: Callable[[np.ndarray], None]) -> None:
        """Queue one sample batch; ``on_done(sum over T of outputs [B, C])`` is called later."""
        if steps is None:
            raise DeployError(
                "lynxi backend: device-side encoding needs the chip's random op, whose draws "
                "cannot be reproduced on the host; use encode=host or encode=graph with draws"
            )
        steps = steps.detach().numpy() if isinstance(steps, torch.Tensor) else np.asarray(steps)
        if self.encode == "graph":
            img = images.detach().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
            inputs = [np.broadcast_to(img, steps.shape), steps]
        else:
            inputs = [steps]
        self.device.submit(
            inputs, lambda outs: on_done(outs.sum(0, dtype=np.float32) if outs.shape[0] > 1 else outs[0].copy())
        )

    def run_batch(self, images, steps=None, keys=None, time_steps=None) -> np.ndarray:
        box, done = {}, threading.Event()

        def on_done(acc):
            box["acc"] = acc
            done.set()

        self.submit(images, steps, keys, time_steps, on_done)
        done.wait()
        return box["acc"]

    def close(self) -> None:
        self.device.close()


@register_backend("lynxi")
class LynxiBackend(Backend):
    description = "Lynxi KA200 APU: load/save graph, lyngor build (batch 1/2/4/7/14/28), LynSDK runtime"
    lowering = "loadsave"
    requires = ("lyngor",)
    install_hint = INSTALL_HINT
    batch_sizes = LYNXI_BATCH_SIZES
    encodings = ("host", "graph")
    default_options: ClassVar[dict[str, Any]] = {"device_id": 0, "version": 0, "op_plugin": None}

    def check_available(self) -> None:
        try:
            importlib.import_module("lyngor")
        except ImportError as e:
            raise BackendUnavailableError(
                f"backend 'lynxi' needs lyngor (Lynxi SDK), which cannot be imported ({e}); {INSTALL_HINT}"
            ) from None

    def compile(self, step, example_inputs, out_dir, **options):
        opts = self.options(options)
        self.check_batch_size(step.batch_size)
        graph = prepare_graph(step, example_inputs, out_dir)
        artifacts = {k: graph[k] for k in ("traced", "graph_text", "manifest")}
        try:
            self.check_available()
        except BackendUnavailableError as e:
            raise BackendUnavailableError(f"{e} (the load/save graph was written to {graph['traced']})") from None
        model_dir = lyngor_build(
            graph["traced"],
            graph["manifest_data"],
            os.path.join(out_dir, "apu"),
            int(opts["version"]),
            opts["op_plugin"],
        )
        artifacts["apu_model"] = model_dir
        device = LynSdkDevice(model_dir, int(opts["device_id"]), time_steps=step.model.time_steps)
        if device.batch_size != step.batch_size:
            raise DeployError(f"the built APU model has batch size {device.batch_size}, expected {step.batch_size}")
        return LynxiStep(device, step, artifacts)


__all__ = [
    "LYNXI_BATCH_SIZES",
    "LynDevice",
    "LynSdkDevice",
    "LynxiBackend",
    "LynxiStep",
    "lyngor_build",
    "prepare_graph",
]
