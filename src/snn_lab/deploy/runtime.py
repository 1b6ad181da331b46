"""The deploy runtime: loop the compiled step over T, batch after batch, feeding and
reading in parallel, the way the tutorial drives the KA200 (a feeder thread that encodes
and submits, a reader thread that collects results and scores them).

Per sample batch: the state is reset (:meth:`CompiledStep.reset`), T steps run, and the
output is summed over T; ``scores = sum / T`` is the rate (or membrane) readout, the
prediction its argmax (first maximum on ties, like ``torch.argmax`` in eager).

Threads:

* feeder   -- slices the dataset into batches of the compiled size (the last one padded
              with blank images, whose outputs are dropped), makes each batch's inputs
              (draws, spikes, or per-sample keys for device-side encoding) and queues it,
              or, for an asynchronous device, submits it directly;
* worker   -- (synchronous backends) runs ``compiled.run_batch`` and queues the result;
* reader   -- turns results into predictions and latencies.

Queues are bounded, so the feeder runs at most ``queue_depth`` batches ahead. A compiled
step that already runs on every core (``runs_on_all_cores``: the sparse kernel's own
thread pool) is driven from the calling thread instead, batch after batch: the Python
threads would only take cores and GIL hand-offs from it (in-run alternations, batch 28:
6-13% more samples/s on 2 cores). Every figure is wall-clock: ``throughput = real
samples / (last result read - first batch fed)``, after ``warmup`` untimed batches.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..encoders import ENCODERS, BernoulliEncoder
from ..errors import DeployError, UnsupportedError
from .encoding import CounterDraws, batch_seed, sample_keys

_STOP = object()


def takes_frames(encoder) -> bool:
    """``encoder=passthrough``: the network reads frames the data already made (event
    data, ``[B, T, ...]``), not images it encodes."""
    return "passthrough" in ENCODERS and isinstance(encoder, ENCODERS.get("passthrough"))


def check_input_encoder(model) -> None:
    """The runtime feeds samples through the network's encoder: refuse a network without
    one before anything is compiled."""
    if model.encoder is None:
        raise UnsupportedError("the network has no encoder; deploy needs one to turn images into inputs")


class InputSource:
    """Makes each batch's step inputs, identically for the deployed step and eager.

    Bernoulli encoding uses the counter-based draws of :mod:`.encoding` (independent of
    the batch partition). Other encoders run on the host: deterministic ones (latency,
    phase, direct, passthrough: the given frames ``[B, T, ...]`` become ``[T, B, ...]``)
    as is, random ones with a generator seeded per batch.
    """

    def __init__(self, model, seed: int, time_steps: int):
        self.model = model
        self.seed = int(seed)
        self.time_steps = int(time_steps)
        self.bernoulli = isinstance(model.encoder, BernoulliEncoder)
        self.draws = CounterDraws(seed, time_steps) if self.bernoulli else None
        check_input_encoder(model)

    def keys(self, ids: np.ndarray) -> np.ndarray:
        return sample_keys(self.seed, ids)

    def _host_encode(self, images: torch.Tensor, ids: np.ndarray) -> torch.Tensor:
        g = torch.Generator().manual_seed(batch_seed(self.seed, int(ids[0])))
        with torch.no_grad():
            return self.model.encoder(images, self.time_steps, generator=g).to(torch.float32)

    def step_inputs(self, compiled, images: torch.Tensor, ids: np.ndarray, keys: np.ndarray | None = None):
        """``(steps [T, B, ...] or None, keys or None)`` for one batch of ``compiled``;
        ``keys``: the batch's sample keys when the caller has them (``keys(ids)``)."""
        if compiled.device_rng:
            if not self.bernoulli:
                raise UnsupportedError("device-side encoding is Bernoulli only; use encode=host")
            return None, self.keys(ids) if keys is None else keys
        if compiled.encode == "graph":
            if self.draws is None:  # not Bernoulli
                raise UnsupportedError("encode=graph is Bernoulli only; use encode=host")
            return torch.from_numpy(self.draws.uniform(images.numpy(), ids)), None
        dtype = compiled.input_dtype
        if self.draws is not None:  # Bernoulli
            np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
            return torch.from_numpy(self.draws.spikes(images.numpy(), ids, np_dtype)), None
        return self._host_encode(images, ids).to(dtype), None

    def spike_train(self, images: torch.Tensor, ids: np.ndarray) -> torch.Tensor:
        """Float32 input train ``[T, B, ...]`` for ``model.forward_spikes`` (eager)."""
        if self.draws is not None:  # Bernoulli
            return self.draws.spike_train(images.numpy(), ids)
        return self._host_encode(images, ids)


@dataclass
class RunResult:
    predictions: np.ndarray
    scores: np.ndarray
    samples: int
    wall_seconds: float
    batch_latency_s: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.samples / self.wall_seconds if self.wall_seconds > 0 else float("nan")


def _pad(images: torch.Tensor, ids: np.ndarray, batch: int):
    n = images.shape[0]
    if n == batch:
        return images, ids
    pad = torch.zeros((batch - n, *images.shape[1:]), dtype=images.dtype)
    return torch.cat([images, pad]), np.concatenate([ids, np.full(batch - n, ids[-1], dtype=ids.dtype)])


def _argmax(scores: np.ndarray) -> np.ndarray:
    return torch.argmax(torch.from_numpy(scores), dim=1).numpy()


class Runtime:
    def __init__(self, compiled, source: InputSource, queue_depth: int = 4, warmup: int = 2):
        self.compiled = compiled
        self.source = source
        self.T = source.time_steps
        self.B = compiled.batch_size
        self.queue_depth = max(1, int(queue_depth))
        self.warmup = max(0, int(warmup))

    def _batches(self, images: torch.Tensor, ids: np.ndarray):
        """``(start, n, images, ids, keys)`` per batch, padded to the batch size. With the
        kernel's own draws the sample keys of the whole run are hashed here at once (a
        numpy call per batch cost about a twentieth of a batch of the sparse kernel)."""
        keys = None
        if getattr(self.compiled, "device_rng", False) and self.source.bernoulli:
            keys = self.source.keys(ids)
        for start in range(0, images.shape[0], self.B):
            img, bid = images[start : start + self.B], ids[start : start + self.B]
            n = img.shape[0]
            img, bid = _pad(img, bid, self.B)
            bkeys = None
            if keys is not None:
                bkeys = keys[start : start + self.B]
                if n < self.B:  # padded like the ids: the last sample repeated
                    bkeys = np.concatenate([bkeys, np.full(self.B - n, bkeys[-1], dtype=bkeys.dtype)])
            yield start, n, img.contiguous(), bid, bkeys

    def _run_one(self, img, bid, keys=None):
        steps, keys = self.source.step_inputs(self.compiled, img, bid, keys)
        return self.compiled.run_batch(img, steps, keys, self.T)

    def run(self, images: torch.Tensor, sample_ids: np.ndarray | None = None) -> RunResult:
        """Run every sample of ``images`` ``[N, *input_shape]`` (float32 in [0, 1])."""
        N = int(images.shape[0])
        if N == 0:
            raise DeployError("no samples to run; check num_samples")
        ids = np.arange(N, dtype=np.int64) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
        for _, _, img, bid, bkeys in itertools.islice(self._batches(images, ids), self.warmup):
            self._run_one(img, bid, bkeys)

        if getattr(self.compiled, "runs_on_all_cores", False):
            return self._run_in_caller(images, ids)
        scores = np.zeros((N, 0), dtype=np.float32)
        latencies: list[float] = []
        errors: list[BaseException] = []
        out_q: queue.Queue = queue.Queue(maxsize=self.queue_depth + 2)
        in_q: queue.Queue = queue.Queue(maxsize=self.queue_depth)
        is_async = bool(getattr(self.compiled, "asynchronous", False))
        n_batches = -(-N // self.B)

        def feeder():
            try:
                for start, n, img, bid, bkeys in self._batches(images, ids):
                    steps, keys = self.source.step_inputs(self.compiled, img, bid, bkeys)
                    if is_async:
                        t0 = time.perf_counter()
                        self.compiled.submit(
                            img, steps, keys, self.T, lambda acc, s=start, n=n, t0=t0: out_q.put((s, n, acc, t0))
                        )
                    else:
                        in_q.put((start, n, img, steps, keys))
            except BaseException as e:  # noqa: BLE001 - handed to run(), which re-raises it in the caller
                errors.append(e)
                out_q.put(_STOP)
            finally:
                if not is_async:
                    in_q.put(_STOP)

        def worker():
            try:
                while True:
                    item = in_q.get()
                    if item is _STOP:
                        return
                    start, n, img, steps, keys = item
                    t0 = time.perf_counter()
                    acc = self.compiled.run_batch(img, steps, keys, self.T)
                    out_q.put((start, n, acc.copy(), t0))
            except BaseException as e:  # noqa: BLE001 - handed to run(), which re-raises it in the caller
                errors.append(e)
                out_q.put(_STOP)

        result: dict = {}

        def reader():
            nonlocal scores
            done = 0
            while done < n_batches:
                item = out_q.get()
                if item is _STOP:
                    return
                start, n, acc, t0 = item
                latencies.append(time.perf_counter() - t0)
                sc = acc[:n] / np.float32(self.T)
                if scores.shape[1] == 0:
                    scores = np.zeros((N, sc.shape[1]), dtype=np.float32)
                scores[start : start + n] = sc
                done += 1
            result["t_end"] = time.perf_counter()

        threads = [
            threading.Thread(target=feeder, name="deploy-feeder", daemon=True),
            threading.Thread(target=reader, name="deploy-reader", daemon=True),
        ]
        if not is_async:
            threads.insert(1, threading.Thread(target=worker, name="deploy-worker", daemon=True))
        t_start = time.perf_counter()
        for t in threads:
            t.start()
        threads[-1].join()  # the reader ends after the last batch (or on error)
        if errors:
            raise errors[0]
        for t in threads[:-1]:
            t.join(timeout=60)
        wall = result.get("t_end", time.perf_counter()) - t_start
        return RunResult(_argmax(scores), scores, N, wall, latencies)

    def _run_in_caller(self, images: torch.Tensor, ids: np.ndarray) -> RunResult:
        """Feed, run and read each batch in this thread (see the module's docstring); the
        batch latency runs from making its inputs to its scores."""
        N = int(images.shape[0])
        scores: np.ndarray | None = None
        latencies: list[float] = []
        t_start = time.perf_counter()
        for start, n, img, bid, bkeys in self._batches(images, ids):
            t0 = time.perf_counter()
            acc = self._run_one(img, bid, bkeys)
            sc = acc[:n] / np.float32(self.T)
            if scores is None:
                scores = np.zeros((N, sc.shape[1]), dtype=np.float32)
            scores[start : start + n] = sc
            latencies.append(time.perf_counter() - t0)
        wall = time.perf_counter() - t_start
        assert scores is not None  # N > 0 was checked
        return RunResult(_argmax(scores), scores, N, wall, latencies)


def measure_latency(compiled, source: InputSource, images: torch.Tensor, n: int = 200, warmup: int = 5) -> list[float]:
    """Per-sample latency at batch size 1, sequentially: encode + T steps + readout."""
    if compiled.batch_size != 1:
        raise DeployError("measure_latency needs a step compiled at batch size 1")
    n = min(int(n), int(images.shape[0]))
    out = []
    for i in range(-min(warmup, n), n):
        k = i % n
        img, bid = images[k : k + 1].contiguous(), np.array([k], dtype=np.int64)
        t0 = time.perf_counter()
        steps, keys = source.step_inputs(compiled, img, bid)
        acc = compiled.run_batch(img, steps, keys, source.time_steps)
        _argmax(acc / np.float32(source.time_steps))
        if i >= 0:
            out.append(time.perf_counter() - t0)
    return out


def eager_reference(
    model,
    source: InputSource,
    images: torch.Tensor,
    batch_size: int = 500,
    sample_ids: np.ndarray | None = None,
    deploy_batch: int | None = None,
) -> np.ndarray:
    """Scores of the eager network on the very same inputs (``forward_spikes``).

    Bernoulli draws do not depend on the batch partition, so eager runs in chunks of
    ``batch_size``. Host-side random encoders (population) are seeded per batch, so for
    them eager encodes exactly the deployed batches (``deploy_batch``, padded alike)."""
    N = int(images.shape[0])
    ids = np.arange(N, dtype=np.int64) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
    chunks = []
    model.eval()  # BatchNorm running statistics, no dropout: what was deployed
    with torch.no_grad():
        if source.bernoulli or not deploy_batch:
            for start in range(0, N, batch_size):
                img = images[start : start + batch_size]
                chunks.append(model.forward_spikes(source.spike_train(img, ids[start : start + batch_size])).numpy())
        else:
            for start in range(0, N, deploy_batch):
                img, bid = images[start : start + deploy_batch], ids[start : start + deploy_batch]
                n = img.shape[0]
                img, bid = _pad(img, bid, deploy_batch)
                chunks.append(model.forward_spikes(source.spike_train(img, bid)).numpy()[:n])
    return np.concatenate(chunks)


def percentiles_ms(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p99": None, "mean": None, "n": 0}
    a = np.asarray(values) * 1e3
    return {
        "p50": round(float(np.percentile(a, 50)), 4),
        "p99": round(float(np.percentile(a, 99)), 4),
        "mean": round(float(a.mean()), 4),
        "n": int(a.size),
    }


def loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None
