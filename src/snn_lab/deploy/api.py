"""``run_deploy``: checkpoint -> single-step graph -> backend -> runtime -> verified report."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import _native
from ..data.mnist import load_mnist_arrays
from ..encoders import BernoulliEncoder
from ..errors import DeployError, UnknownBackendError, UnsupportedError
from ..host import BusyMeter
from ..io import atomic_write_json
from ..models import SNNModel, load_network
from .registry import create_backend, get_backend, list_backends
from .runtime import (
    InputSource,
    Runtime,
    check_input_encoder,
    eager_reference,
    loadavg,
    measure_latency,
    percentiles_ms,
    takes_frames,
)
from .step import LoadSaveStep, StepModule, check_encoder, check_recurrence, recurrent_layers

REPORT_NAME = "deploy_report.json"

DEFAULTS: dict[str, Any] = {
    "encode": "auto",  # host | graph | auto (backend's preference)
    "seed": 0,  # Bernoulli draws: counter hash of (seed, sample, step, pixel)
    "num_samples": None,  # None: the whole test split
    "split": "test",
    "data_root": None,  # None: the MNIST copy bundled with snn_lab
    "time_steps": None,  # None: the network's own T
    "backend_options": None,  # dict passed to the backend's compile()
    "latency_batch1": True,  # also compile at batch 1 and measure per-sample latency
    "latency_samples": 200,
    "warmup": 2,  # untimed batches before the timed run
    "passes": 3,  # timed passes over the data: throughput is their median (a shared machine's speed wanders)
    "queue_depth": 4,
    "eager_batch_size": 500,
    "verify": True,  # run the eager reference and compare
    "min_agreement": 0.999,
    "threads": None,  # torch intra-op threads for eager/torch backends (None: leave)
    # (inputs, labels) instead of the MNIST split: what the network's encoder takes, e.g.
    # event frames [N, T, ...] for encoder=passthrough (which needs them)
    "data": None,
}


def load_model(network_or_ckpt) -> tuple[SNNModel, str | None]:
    if isinstance(network_or_ckpt, SNNModel):
        return network_or_ckpt.eval(), None
    if isinstance(network_or_ckpt, (str, os.PathLike)):
        path = os.fspath(network_or_ckpt)
        return load_network(path), os.path.abspath(path)
    raise DeployError(f"deploy needs an SNNModel or a checkpoint path, got {type(network_or_ckpt).__name__}")


def load_images(model: SNNModel, split: str = "test", root=None, num_samples=None):
    """Dataset images as float32 ``[N, *input_shape]`` in [0, 1] (uint8 / 255, as in training)."""
    images, labels = load_mnist_arrays(split, root)
    if num_samples is not None:
        if int(num_samples) < 1:
            raise DeployError(f"num_samples={num_samples!r} is invalid: must be >= 1 or null")
        images, labels = images[: int(num_samples)], labels[: int(num_samples)]
    x = images.float().div_(255)
    shape = list(model.input_shape)  # what the network reads; the encoder may widen channels
    mult = int(getattr(model.encoder, "channel_multiplier", 1) or 1)
    shape[0] //= mult
    if x[0].numel() != int(np.prod(shape)):
        raise DeployError(
            f"the network expects images of shape {tuple(shape)} but the dataset has "
            f"{tuple(images.shape[1:])}; deploy a network trained on this data"
        )
    return x.reshape(x.shape[0], *shape).contiguous(), labels.numpy()


def given_data(data, num_samples=None) -> tuple[torch.Tensor, np.ndarray]:
    """``(inputs, labels)`` passed to :func:`run_deploy` as float32 tensor + label array."""
    try:
        inputs, labels = data
    except (TypeError, ValueError):
        raise DeployError("data must be a pair (inputs, labels)") from None
    x = torch.as_tensor(inputs)
    y = np.asarray(labels).reshape(-1)
    if not torch.is_floating_point(x) or x.dim() < 2 or x.shape[0] != y.shape[0]:
        raise DeployError(
            f"data: inputs must be a float array [N, ...] with one label each, got {x.dtype} "
            f"{tuple(x.shape)} and {y.shape[0]} labels"
        )
    if num_samples is not None:
        if int(num_samples) < 1:
            raise DeployError(f"num_samples={num_samples!r} is invalid: must be >= 1 or null")
        x, y = x[: int(num_samples)], y[: int(num_samples)]
    return x.to(torch.float32).contiguous(), y


def check_batch_fits(batch_size: int, samples: int, what: str) -> None:
    """A batch larger than the data would time one partial batch and report it as full."""
    if batch_size > samples >= 1:
        raise DeployError(
            f"batch_size={batch_size} is larger than the {samples} samples to deploy on ({what}); "
            f"lower batch_size to at most {samples} or deploy on more samples"
        )


def build_step(model: SNNModel, lowering: str, encode: str, batch_size: int):
    check_encoder(model, encode)
    if lowering == "loadsave":
        return LoadSaveStep(model, batch_size, encode)
    if lowering == "explicit":
        return StepModule(model, encode)
    raise DeployError(f"lowering={lowering!r} is unknown; accepted: explicit, loadsave")


def resolve_encode(backend, model: SNNModel, encode: str) -> str:
    allowed = tuple(getattr(backend, "encodings", ("host", "graph")))
    if encode == "auto":
        pref = getattr(backend, "preferred_encode", "host")
        encode = pref if pref in allowed and isinstance(model.encoder, BernoulliEncoder) else "host"
    if encode not in ("host", "graph"):
        raise UnsupportedError(f"encode={encode!r} is unknown; accepted: auto, host, graph")
    if encode not in allowed:
        raise UnsupportedError(
            f"backend {backend.name!r} does not support encode={encode}; accepted: {', '.join(allowed)}"
        )
    return encode


def compile_step(
    model: SNNModel,
    backend_name: str,
    batch_size: int,
    out_dir,
    encode: str = "auto",
    backend_options: dict | None = None,
):
    """Check, lower and compile: returns ``(backend, compiled, compile_seconds)``.

    Fails fast, before any tracing, on an unknown backend, a missing toolchain (except
    for backends that write their graph first), an unsupported batch size or network."""
    backend = create_backend(backend_name)
    backend.check_batch_size(batch_size)
    if getattr(backend, "lowering", "explicit") != "loadsave":
        backend.check_available()
    if recurrent_layers(model) and not getattr(backend, "supports_recurrent", False):
        check_recurrence(model, backend.name, recurrent_backends())
    backend.check_model(model)
    encode = resolve_encode(backend, model, encode)
    opts = dict(backend_options or {})
    backend.options(opts)  # unknown options fail here
    step = build_step(model, backend.lowering, encode, batch_size)
    example = step.example_inputs(batch_size)  # (inputs..., *state) for the explicit lowering
    t0 = time.perf_counter()
    compiled = backend.compile(step, example, str(out_dir), **opts)
    return backend, compiled, time.perf_counter() - t0


def recurrent_backends() -> list[str]:
    """Backends that lower recurrent layers (built-ins and installed plug-ins)."""
    names = []
    for name in list_backends():
        try:
            if getattr(get_backend(name), "supports_recurrent", False):
                names.append(name)
        except UnknownBackendError:  # a broken plug-in does not hide the others
            continue
    return names


def _versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for mod in ("onnxruntime", "onnx", "onnxscript", "nir", "nirtorch"):
        # an optional toolchain that is missing or fails to import in any way is left out
        with contextlib.suppress(Exception):
            out[mod] = __import__(mod).__version__
    return out


def run_deploy(
    network_or_ckpt, backend: str = "onnxruntime", batch_size: int = 28, out_dir="deploy", **options
) -> dict:
    """Deploy a trained network with ``backend`` and verify it; returns the report.

    ``network_or_ckpt``: an :class:`SNNModel` or a checkpoint path (loaded weights-only).
    Writes ``<out_dir>/deploy_report.json`` atomically and the backend's artifacts under
    ``<out_dir>/<backend>/``. Options: see :data:`DEFAULTS`.
    """
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise DeployError(f"unknown deploy option(s) {', '.join(unknown)}; accepted: {', '.join(sorted(DEFAULTS))}")
    opt = {**DEFAULTS, **{k: v for k, v in options.items()}}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if opt["threads"]:
        torch.set_num_threads(int(opt["threads"]))

    model, ckpt = load_model(network_or_ckpt)
    check_input_encoder(model)
    if takes_frames(model.encoder) and opt["data"] is None:
        raise UnsupportedError(
            "the network's encoder is passthrough (it reads event frames [N, T, ...] the data made); deploy "
            "cannot make them from images: pass them from Python, run_deploy(..., data=(frames, labels))"
        )
    passes = opt["passes"]
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise DeployError(
            f"passes={passes!r} is invalid: must be an integer >= 1 (timed passes over the data; the "
            "throughput reported is their median)"
        )
    T = int(opt["time_steps"] or model.time_steps)
    if T < 1:
        raise DeployError(f"time_steps={T} is invalid: must be >= 1")
    if opt["num_samples"] is not None:  # known before compiling; the whole split is checked after loading
        check_batch_fits(int(batch_size), int(opt["num_samples"]), "num_samples")
    art_dir = out_dir / backend
    _, compiled, compile_s = compile_step(
        model, backend, int(batch_size), art_dir, opt["encode"], opt["backend_options"]
    )
    if opt["data"] is not None:
        images, labels = given_data(opt["data"], opt["num_samples"])
    else:
        images, labels = load_images(model, opt["split"], opt["data_root"], opt["num_samples"])
    try:
        check_batch_fits(
            int(batch_size), len(images), "the data" if opt["data"] is not None else f"the {opt['split']} split"
        )
    except DeployError:
        compiled.close()
        raise
    source = InputSource(model, opt["seed"], T)

    load_start = loadavg()
    runtime = Runtime(compiled, source, opt["queue_depth"], opt["warmup"])
    with BusyMeter() as busy:
        runs = [runtime.run(images) for _ in range(passes)]
    load_end = loadavg()
    res = runs[0]
    # every pass computes the same thing (the draws are keyed by sample): a difference is a fault
    if not all(np.array_equal(r.scores, res.scores) for r in runs[1:]):
        compiled.close()
        raise DeployError(
            f"backend {backend!r} gave different scores on {passes} passes over the same inputs; it is not "
            "deterministic, so it cannot be verified against eager (rerun with passes=1 to see one pass)"
        )
    throughputs = [r.throughput for r in runs]
    deployed_acc = float((res.predictions == labels).mean())

    latency_b1 = None
    if opt["latency_batch1"]:
        # a graph with a dynamic batch axis runs at batch 1 as compiled; others compile again
        c1 = compiled if batch_size == 1 else compiled.rebatch(1)
        if c1 is None:
            try:
                _, c1, _ = compile_step(model, backend, 1, art_dir / "batch1", compiled.encode, opt["backend_options"])
            except UnsupportedError:
                c1 = None
        if c1 is not None:
            latency_b1 = percentiles_ms(measure_latency(c1, source, images, opt["latency_samples"]))
            if c1 is not compiled:
                c1.close()

    report: dict[str, Any] = {
        "backend": backend,
        "batch_size": int(batch_size),
        "time_steps": T,
        "encode": compiled.encode,
        "device_encoding": bool(compiled.device_rng),
        "samples": res.samples,
        "throughput": round(float(np.median(throughputs)), 1),
        "throughput_unit": "samples/s (wall clock, encoding included, after warm-up; median of the passes)",
        "throughput_passes": [round(x, 1) for x in throughputs],
        "runtime": "calling thread (the step runs on every core)"
        if getattr(compiled, "runs_on_all_cores", False)
        else "feeder, worker and reader threads",
        "wall_seconds": round(sum(r.wall_seconds for r in runs), 4),  # all passes
        "compile_seconds": round(compile_s, 3),
        "latency_ms": {"batch": percentiles_ms([x for r in runs for x in r.batch_latency_s]), "batch1": latency_b1},
        "deployed_accuracy": deployed_acc,
        "artifacts": dict(compiled.artifacts),
        "checkpoint": ckpt,
        "seed": int(opt["seed"]),
        "backend_info": compiled.describe(),
        "host": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "loadavg_1m_before": load_start,
            "loadavg_1m_after": load_end,
            "cpu_share_used_by_other_processes": busy.others,
            "process_cpu_seconds": busy.cpu_seconds,
            "machine": platform.machine(),
        },
        "versions": _versions(),
        "kernels": _native.describe(),
    }
    from .efficiency import deploy_efficiency  # NeuroBench's counts (docs/EFFICIENCY.md)

    report["efficiency"] = deploy_efficiency(model, source, images, int(batch_size))
    if opt["verify"]:
        t0 = time.perf_counter()
        eager_scores = eager_reference(
            model, source, images, int(opt["eager_batch_size"]), deploy_batch=int(batch_size)
        )
        eager_pred = torch.argmax(torch.from_numpy(eager_scores), 1).numpy()
        agree = float((eager_pred == res.predictions).mean())
        report.update(
            {
                "eager_accuracy": float((eager_pred == labels).mean()),
                "agreement": agree,
                "disagreements": int((eager_pred != res.predictions).sum()),
                "scores_identical_fraction": float(np.all(eager_scores == res.scores, axis=1).mean()),
                "eager_seconds": round(time.perf_counter() - t0, 2),
                "verified": agree >= float(opt["min_agreement"]),
                "min_agreement": float(opt["min_agreement"]),
            }
        )
    else:
        report.update({"eager_accuracy": None, "agreement": None, "verified": None})
    path = out_dir / REPORT_NAME
    report["report_path"] = str(path.resolve())
    atomic_write_json(path, report)
    compiled.close()
    return report
