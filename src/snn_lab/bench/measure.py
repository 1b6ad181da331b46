"""Measurements: throughput, autograd-saved activation memory, per-layer matmul choice."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..engine import linear as L
from ..engine import native, options
from ..engine.options import native_enabled


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median(xs):
    return statistics.median(xs) if xs else None


class SavedBytes:
    """Bytes autograd keeps for backward during a forward pass: every tensor packed by
    ``saved_tensors_hooks`` (built-in ops and ``ctx.save_for_backward`` alike), each
    storage counted once, parameters and buffers excluded (they are not activations).
    """

    def __init__(self, exclude: list[torch.Tensor]):
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor):
        try:
            st = t.untyped_storage()
            key = st.data_ptr()
            if key not in self.exclude and st.nbytes() > 0:
                self.storages[key] = max(self.storages.get(key, 0), st.nbytes())
        except (RuntimeError, NotImplementedError):  # e.g. tensor subclasses without storage
            pass
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        return False

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def saved_activation_bytes(contestant, images, labels, generator) -> int:
    module = contestant.module
    exclude = list(module.parameters()) + list(module.buffers())
    with SavedBytes(exclude) as sb:
        out = contestant.scores(images, generator)
        loss = F.cross_entropy(out, labels)
    del out, loss
    return sb.total


# -- per-layer matmul strategies -------------------------------------------------------
def layer_strategies(net, images: torch.Tensor, generator, repeats: int, device: torch.device) -> list[dict]:
    """For each ``Linear`` synapse of a layer-mode model: the density of its spike input
    on a real batch and the time of each matmul strategy (forward product including
    index building, and weight gradient), interleaved, median of ``repeats``; ``auto``
    is what the engine picks. ``sparse`` groups spikes per sample over time (what the
    engine runs), ``sparse_rows`` indexes spikes row by row (used when T > 64)."""
    with torch.no_grad():
        _, rec = net(images, generator=generator, return_record=True)
        train = net.encode(images, generator=generator)
    inputs = [train.reshape(train.shape[0] * train.shape[1], -1)] + [
        s.reshape(s.shape[0] * s.shape[1], -1) for s in rec.spikes[:-1]
    ]
    rows = []
    for i, (layer, x_in) in enumerate(zip(net.layers, inputs)):
        lin = None
        for m in layer.synapse.modules():
            if isinstance(m, torch.nn.Linear):
                lin = m
        if lin is None:
            continue
        x = x_in.to(device).contiguous().float()
        W, b = lin.weight.detach(), lin.bias.detach() if lin.bias is not None else None
        g = torch.randn(x.shape[0], W.shape[0], device=device)
        density = float(x.mean())
        cands: dict[str, tuple[Callable, Callable]] = {
            "dense": (lambda x=x, W=W, b=b: F.linear(x, W, b), lambda x=x, g=g: g.t() @ x),
        }
        if device.type == "cpu" and native_enabled():
            T = train.shape[0]
            Bn = x.shape[0] // T
            tm = native.tmask(x.view(T, Bn, -1)) if T <= native.MAX_T else None
            csr = native.csr(x)

            def wp(W=W):
                return native.pack_tiles(W.t().contiguous())

            if tm is not None:
                cands["sparse"] = (
                    lambda x=x, T=T, Bn=Bn, b=b, W=W: native.tm_fwd(
                        native.tmask(x.view(T, Bn, -1)), wp(W), b, T, Bn, W.shape[0]
                    ),
                    lambda tm=tm, g=g, T=T, Bn=Bn, K=x.shape[1]: native.tm_wgrad(tm, g, T, Bn, K),
                )
            if csr is not None:

                def rows_fwd(x=x, b=b, W=W):
                    index = native.csr(x)
                    assert index is not None  # the same binary x as csr above
                    return native.spmm_fwd(*index, wp(W), b, x.shape[0], W.shape[0])

                cands["sparse_rows"] = (
                    rows_fwd,
                    lambda csr=csr, g=g, K=x.shape[1]: native.spmm_wgrad(csr[0], csr[1], g, K),
                )
        if device.type == "cuda":
            pieces = [p.t() for p in L._split3(W)]
            cands["bf16x3"] = (
                lambda x=x, pieces=pieces: L._bf16x3_mm(x, pieces),
                lambda x=x, g=g: L._bf16x3_mm(x.to(torch.bfloat16).t(), L._split3(g)),
            )
        times: dict[str, dict[str, list[float]]] = {k: {"forward": [], "wgrad": []} for k in cands}
        for r in range(repeats + 1):
            for name, (f, w) in cands.items():
                tf, tw = timed(f, device), timed(w, device)
                if r:  # the first round warms up
                    times[name]["forward"].append(tf)
                    times[name]["wgrad"].append(tw)
        med = {k: {p: median(v) * 1e3 for p, v in d.items()} for k, d in times.items()}
        best = min(med, key=lambda k: med[k]["forward"] + med[k]["wgrad"])
        opts = options()
        sparse = L.auto_sparse(density, W.shape[0], opts.sparse_max_density)
        auto = "sparse" if ("sparse" in cands and sparse) else "dense"
        rows.append(
            {
                "layer": i,
                "in_features": x.shape[1],
                "out_features": W.shape[0],
                "rows": x.shape[0],
                "input_density": round(density, 4),
                "ms": {k: {p: round(v, 3) for p, v in d.items()} for k, d in med.items()},
                "fastest": best,
                "auto_picks": auto,
            }
        )
    return rows
