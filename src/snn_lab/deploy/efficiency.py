"""``deploy_report.json``'s ``efficiency``: NeuroBench's metrics of the deployed network
(docs/EFFICIENCY.md), counted on the eager network fed the input spikes the deployed
graph got."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..models import Record, SNNModel
from ..models.efficiency import EfficiencyMeter
from .runtime import InputSource

#: samples counted (the first ones): per-sample averages settle long before the whole split
MAX_SAMPLES = 1000


def deploy_efficiency(
    model: SNNModel, source: InputSource, images: torch.Tensor, deploy_batch: int, max_samples: int = MAX_SAMPLES
) -> dict[str, Any]:
    """Per-sample synaptic operations, activation sparsity, footprint, connection
    sparsity and the arithmetic-energy estimate over the first ``max_samples`` images.

    Bernoulli and deterministic encoders give the same spikes whatever the batching;
    host-side random ones (population) are encoded per deployed batch, padded alike, as
    :func:`~snn_lab.deploy.runtime.eager_reference` does."""
    n_total = int(images.shape[0])
    n = min(n_total, int(max_samples))
    ids = np.arange(n, dtype=np.int64)
    chunk = 500 if source.bernoulli else int(deploy_batch)
    declared = bool(getattr(model.encoder, "binary", False)) or None
    model.eval()
    meter = EfficiencyMeter(model)
    with torch.no_grad():
        for start in range(0, n, chunk):
            img, bid = images[start : start + chunk], ids[start : start + chunk]
            k = img.shape[0]
            if not source.bernoulli and k < chunk:  # the deployed last batch was padded
                pad = torch.zeros((chunk - k, *img.shape[1:]), dtype=img.dtype)
                img, bid = torch.cat([img, pad]), np.concatenate([bid, np.full(chunk - k, bid[-1], dtype=bid.dtype)])
            train = source.spike_train(img, bid)
            _, rec = model.forward_spikes(train, return_record=True)
            if train.shape[1] != k:  # count the real samples only
                train, rec = train[:, :k], Record([s[:, :k] for s in rec.spikes])
            meter.update(train, rec, input_binary=declared)
    out: dict[str, Any] = {
        "measured_on": (
            f"the eager network on the deployed input spikes of the first {n} of {n_total} samples: "
            "NeuroBench's hardware-independent counts, not what the backend's kernels execute"
        )
    }
    out.update(meter.summary())
    return out
