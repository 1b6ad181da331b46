"""Run the benchmark: every contestant, every metric, interleaved rounds, one process.

Per round, each metric is measured for every contestant back to back (the starting
contestant rotates), so slow drifts of a shared machine hit all of them alike; ratios to
the reference are taken within a round, then the median over rounds is reported.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
from typing import Any

import torch
import torch.nn.functional as F

from .. import engine
from ..data import load_mnist_arrays
from ..engine.options import EngineOptions
from ..errors import ConfigError
from . import contestants as C
from .measure import layer_strategies, median, saved_activation_bytes, timed

log = logging.getLogger("snn_lab.bench")


@dataclasses.dataclass
class BenchConfig:
    """Schema of ``conf/bench.yaml`` (see there for the meaning of each key)."""

    task_name: str = "bench"
    target: Any = "cpu"  # a conf/target option (name, accelerator, ...) or cpu | gpu
    threads: int | None = 2
    time_steps: int = 20
    train_batch: int = 200
    train_steps: int = 3
    infer_batches: list[int] = dataclasses.field(default_factory=lambda: [1, 28, 200])
    infer_min_samples: int = 200
    infer_min_batches: int = 8
    rounds: int = 5
    warmup: int = 1
    pretrain_steps: int = 100
    lr: float = 0.02
    seed: int = 0
    contestants: list[str] = dataclasses.field(default_factory=lambda: ["reference", "tutorial_code", "engine"])
    peers: bool = True
    layer_repeats: int = 3
    dataset: str = "mnist"
    engine: EngineOptions = dataclasses.field(default_factory=EngineOptions)
    output: str | None = None


def machine_info(device: torch.device) -> dict:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        info["cpu"] = platform.processor()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        info["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    return info


def _images(cfg: BenchConfig, device) -> tuple[torch.Tensor, torch.Tensor]:
    if cfg.dataset == "mnist":
        x, y = load_mnist_arrays("train")
        x = x.float().div_(255.0).unsqueeze(1)
    elif cfg.dataset == "random":  # for tests: MNIST-like sparsity without the files
        g = torch.Generator().manual_seed(cfg.seed)
        n = 2000
        x = torch.rand(n, 1, 28, 28, generator=g)
        x = torch.where(torch.rand(n, 1, 28, 28, generator=g) < 0.2, x, torch.zeros_like(x))
        y = torch.randint(0, 10, (n,), generator=g)
    else:
        raise ConfigError(f"dataset={cfg.dataset!r} is unknown; accepted: mnist, random")
    return x.to(device), y.to(device)


def _device(target) -> torch.device:
    """``target``: a ``conf/target`` option (its ``accelerator`` decides) or a name."""
    if isinstance(target, dict):
        name, acc = target.get("name", "?"), target.get("accelerator", "cpu")
    else:
        name, acc = str(target), str(target)
    if acc == "cpu":
        return torch.device("cpu")
    if acc in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"target={name} needs CUDA, which is not available on this machine; use target=cpu")
        return torch.device("cuda")
    if acc == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raise ConfigError(f"target={name!r} is unknown; accepted: cpu, gpu")


def _select(cfg: BenchConfig) -> tuple[list[str], dict[str, str]]:
    names, skipped = [], {}
    for n in cfg.contestants:
        if n not in C.ALL:
            raise ConfigError(f"contestant {n!r} is unknown; accepted: {', '.join(C.ALL)}")
        names.append(n)
    if "reference" not in names:
        names.insert(0, "reference")
    if cfg.peers:
        for n in C.PEERS:
            if n not in names:
                names.append(n)
    final = []
    for n in names:
        if n in C.PEERS:
            import importlib.util

            if importlib.util.find_spec(n) is None:
                skipped[n] = "not installed (pip install -e '.[bench]')"
                continue
        final.append(n)
    return final, skipped


def _train_step(c, opt, images, labels, gen):
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(c.scores(images, gen), labels)
    loss.backward()
    opt.step()


def run(cfg: BenchConfig) -> dict:
    """Run the benchmark described by ``cfg``; returns what ``bench.json`` holds. Engine
    options apply for the run only."""
    opts = dict(cfg.engine) if isinstance(cfg.engine, dict) else dataclasses.asdict(cfg.engine)
    with engine.using(**opts):
        return _run(cfg)


def _run(cfg: BenchConfig) -> dict:
    device = _device(cfg.target)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    for key, lo in (("time_steps", 1), ("train_batch", 1), ("train_steps", 1), ("rounds", 1), ("infer_min_batches", 1)):
        if int(getattr(cfg, key)) < lo:
            raise ConfigError(f"{key}={getattr(cfg, key)!r} is invalid: must be an integer >= {lo}")
    if not cfg.infer_batches or any(int(b) < 1 for b in cfg.infer_batches):
        raise ConfigError(f"infer_batches={list(cfg.infer_batches)} is invalid: batch sizes >= 1")
    load_start = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    torch.manual_seed(cfg.seed)
    images, labels = _images(cfg, device)
    n_img = images.shape[0]
    T = int(cfg.time_steps)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    pick = torch.Generator().manual_seed(cfg.seed + 1)

    def batch(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, n_img, (b,), generator=pick).to(device)
        return images[idx], labels[idx]

    # Shared starting weights, trained briefly so that firing rates (hence the spike
    # sparsity the engine exploits) are those of a network that learns, not of init.
    names, skipped = _select(cfg)
    eng = C.Engine(T, device)
    opt = torch.optim.SGD(eng.parameters(), lr=cfg.lr, momentum=0.9)
    for _ in range(int(cfg.pretrain_steps)):
        _train_step(eng, opt, *batch(cfg.train_batch), gen)
    start = C.tutorial_layout(eng.module.state_dict())
    with torch.no_grad():
        x, _ = batch(cfg.train_batch)
        _, rec = eng.module(x, generator=gen, return_record=True)
    rates = [round(r, 4) for r in rec.firing_rates()]
    input_density = float(x.mean())

    racers: dict[str, Any] = {}
    for n in names:
        try:
            c = C.ALL[n](T, device)
            c.load(start)
            o = torch.optim.SGD(c.parameters(), lr=cfg.lr, momentum=0.9)
            with torch.no_grad():
                c.scores(*batch(2)[:1], gen)  # a dry run: fail here, not mid-race
            racers[n] = (c, o)
        except Exception as e:  # a broken optional peer must not sink the benchmark
            if n in C.BUILTIN:
                raise
            skipped[n] = f"{type(e).__name__}: {e}"

    # Agreement: every contestant against the per-step path on one fixed input train.
    agreement = {}
    with torch.no_grad():
        xb, _ = batch(64)
        train = (torch.rand((T, *xb.shape), generator=gen, device=device) < xb).float()
        ref_scores = racers["reference"][0].from_train(train)
        for n, (c, _) in racers.items():
            c.train(False)
            s = c.from_train(train)
            agreement[n] = {
                "scores_identical": bool(torch.equal(s, ref_scores)),
                "max_abs_score_diff": float((s - ref_scores).abs().max()),
            }
        if "engine" in racers:  # and the engine's spikes, layer by layer
            _, r_ref = racers["reference"][0].module.forward_spikes(train, return_record=True, mode="step")
            _, r_eng = racers["engine"][0].module.forward_spikes(train, return_record=True)
            agreement["engine"]["spike_mismatches"] = sum(
                int((a != b).sum()) for a, b in zip(r_ref.spikes, r_eng.spikes)
            )
            agreement["engine"]["spikes_compared"] = sum(a.numel() for a in r_ref.spikes)

    metrics = ["train"] + [f"infer_b{b}" for b in cfg.infer_batches]
    per_round: dict[str, dict[str, list[float]]] = {n: {m: [] for m in metrics} for n in racers}
    order = list(racers)
    total_rounds = int(cfg.rounds) + int(cfg.warmup)
    for r in range(total_rounds):
        rot = order[r % len(order) :] + order[: r % len(order)]
        train_batches = [batch(cfg.train_batch) for _ in range(cfg.train_steps)]
        for m in metrics:
            if m == "train":
                for n in rot:
                    c, o = racers[n]
                    c.train(True)

                    def train_all(c=c, o=o, train_batches=train_batches):
                        for xb, yb in train_batches:
                            _train_step(c, o, xb, yb, gen)

                    dt = timed(train_all, device)
                    if r >= cfg.warmup:
                        per_round[n][m].append(cfg.train_batch * cfg.train_steps / dt)
            else:
                b = int(m.split("_b")[1])
                nb = max(int(cfg.infer_min_batches), math.ceil(cfg.infer_min_samples / b))
                xs = [batch(b)[0] for _ in range(nb)]
                for n in rot:
                    c, _ = racers[n]
                    c.train(False)

                    def infer_all(c=c, xs=xs):
                        with torch.no_grad():
                            for xb in xs:
                                c.scores(xb, gen)

                    dt = timed(infer_all, device)
                    if r >= cfg.warmup:
                        per_round[n][m].append(b * nb / dt)
        log.info("round %d/%d done", r + 1, total_rounds)

    results: dict[str, Any] = {}
    for n, (c, _) in racers.items():
        c.train(True)
        xb, yb = batch(cfg.train_batch)
        saved = saved_activation_bytes(c, xb, yb, gen)
        entry = {"description": c.description, "saved_activation_bytes": saved}
        if device.type == "cuda":  # the allocator's peak over one whole training step
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            _train_step(c, racers[n][1], xb, yb, gen)
            torch.cuda.synchronize(device)
            entry["cuda_peak_step_bytes"] = torch.cuda.max_memory_allocated(device) - base
        for m in metrics:
            entry[m] = {"samples_per_s": median(per_round[n][m]), "rounds": per_round[n][m]}
        results[n] = entry
    ref = per_round["reference"]
    ratios = {}
    for n in racers:
        rr = {}
        for m in metrics:
            within = [a / b for a, b in zip(per_round[n][m], ref[m]) if b]
            rr[m] = median(within)
        rr["saved_activation_memory"] = results[n]["saved_activation_bytes"] / max(
            results["reference"]["saved_activation_bytes"], 1
        )
        ratios[n] = rr

    layers = []
    if "engine" in racers and cfg.layer_repeats > 0:
        xb, _ = batch(cfg.train_batch)
        layers = layer_strategies(racers["engine"][0].module, xb, gen, int(cfg.layer_repeats), device)

    targets = {}
    if "engine" in ratios:
        eng_ratios = ratios["engine"]
        targets = {
            "train_ge_3x": eng_ratios["train"] >= 3.0,
            "infer_b28_ge_3x": (eng_ratios.get("infer_b28") or 0) >= 3.0 if "infer_b28" in eng_ratios else None,
            "memory_le_0.5x": eng_ratios["saved_activation_memory"] <= 0.5,
        }
    machine = machine_info(device)
    machine["loadavg_at_start"] = load_start
    return {
        "machine": machine,
        "config": dataclasses.asdict(cfg),
        "engine": engine.describe(),
        "network": {
            "sizes": list(C.SIZES),
            "time_steps": T,
            "pretrain_steps": cfg.pretrain_steps,
            "firing_rates": rates,
            "input_density": round(input_density, 4),
        },
        "memory_method": "bytes autograd saves for backward during one training forward "
        "(saved_tensors_hooks; each storage once; parameters excluded)",
        "contestants": results,
        "ratios_vs_reference": ratios,
        "skipped": skipped,
        "agreement": agreement,
        "layers": layers,
        "targets": targets,
    }


def _score_agreement(v: dict) -> str:
    return "identical" if v["scores_identical"] else f"max diff {v['max_abs_score_diff']:.3g}"


def table(res: dict) -> str:
    metrics = [k for k in next(iter(res["contestants"].values())) if k.startswith(("train", "infer"))]
    head = ["contestant"] + [m.replace("infer_b", "infer b=") + " /s" for m in metrics] + ["saved MB"]
    rows = [head]
    for n, e in res["contestants"].items():
        r = res["ratios_vs_reference"][n]
        row = [n]
        for m in metrics:
            v = e[m]["samples_per_s"]
            row.append(f"{v:,.0f} ({r[m]:.2f}x)")
        row.append(f"{e['saved_activation_bytes'] / 1e6:.1f} ({r['saved_activation_memory']:.2f}x)")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    out = "\n".join(lines)
    if res["skipped"]:
        out += "\nskipped: " + "; ".join(f"{k}: {v}" for k, v in res["skipped"].items())
    if res["layers"]:
        out += "\nper-layer matmul (ms, forward + weight gradient, batch of T*B rows):"
        for L in res["layers"]:
            ms = ", ".join(f"{k} {v['forward']:.1f}+{v['wgrad']:.1f}" for k, v in L["ms"].items())
            out += (
                f"\n  layer {L['layer']} {L['in_features']}->{L['out_features']} density "
                f"{L['input_density']:.3f}: {ms}; fastest {L['fastest']}, auto picks {L['auto_picks']}"
            )
    m = res["machine"]
    out += (
        f"\nmachine: {m.get('cpu', '?')}, {m['cpu_count']} CPUs, torch {m['torch']} "
        f"({m['cpu_capability']}), {m['torch_threads']} threads; native kernels "
        f"{'on' if (res['engine'].get('native_status') or {}).get('available') else 'off'}"
    )
    load = m.get("loadavg_at_start")
    if load and m["cpu_count"] and max(load[0], m.get("loadavg_1_5_15", [0])[0]) > m["cpu_count"]:
        out += (
            f"\nwarning: load average {load[0]} at start, {m['loadavg_1_5_15'][0]} at the end on "
            f"{m['cpu_count']} CPUs: other processes competed for the cores, so these numbers "
            "(multi-threaded ones most) are unreliable; rerun on an idle machine"
        )
    if res["agreement"]:
        a = res["agreement"]
        same = ", ".join(f"{n} {_score_agreement(v)}" for n, v in a.items() if n != "reference")
        out += f"\nscores on one shared input train vs the reference: {same}"
        if "engine" in a and "spike_mismatches" in a["engine"]:
            out += (
                f"\nengine spikes vs per-step: {a['engine']['spike_mismatches']} of "
                f"{a['engine']['spikes_compared']} differ"
            )
    return out
