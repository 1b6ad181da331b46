"""Run the benchmark: every contestant, every metric, interleaved rounds, one process.

Per round, each metric is measured for every contestant back to back (the starting
contestant rotates), so slow drifts of a shared machine hit all of them alike; ratios to
the reference are taken within a round, then the median over rounds is reported.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .. import engine
from ..data import load_mnist_arrays
from ..engine.options import EngineOptions
from ..errors import ConfigError
from ..host import BusyMeter, loadavg, machine_info
from . import contestants as C
from . import convnets as CN
from .measure import layer_strategies, median, saved_activation_bytes, timed

log = logging.getLogger("snn_lab.bench")


@dataclasses.dataclass
class ConvBenchConfig:
    """Schema of ``conf/bench.yaml``'s ``conv`` section: the conv networks' race (their T
    is the network's own: 4 for ``conv``, 20 for ``conv_bernoulli``)."""

    train_batch: int = 100
    train_steps: int = 2
    infer_batches: list[int] = dataclasses.field(default_factory=lambda: [28])
    pretrain_steps: int = 30
    lr: float = 1e-3  # AdamW, as experiment=conv_mnist
    contestants: list[str] = dataclasses.field(default_factory=lambda: ["reference", "engine"])


@dataclasses.dataclass
class BenchConfig:
    """Schema of ``conf/bench.yaml`` (see there for the meaning of each key)."""

    task_name: str = "bench"
    target: Any = "cpu"  # a conf/target option (name, accelerator, ...) or cpu | gpu
    threads: int | None = 2
    networks: list[str] = dataclasses.field(default_factory=lambda: ["mlp", "conv", "conv_bernoulli"])
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
    contestants: list[str] = dataclasses.field(
        default_factory=lambda: ["reference", "tutorial_code", "engine", "engine_kernel_rng"]
    )
    peers: bool = True
    layer_repeats: int = 3
    agreement_batch: int = 64
    dataset: str = "mnist"
    conv: ConvBenchConfig = dataclasses.field(default_factory=ConvBenchConfig)
    engine: EngineOptions = dataclasses.field(default_factory=EngineOptions)
    output: str | None = None

    def __post_init__(self):
        if isinstance(self.conv, dict):  # from the composed YAML
            self.conv = ConvBenchConfig(**self.conv)


@dataclasses.dataclass
class _Race:
    """One network's race: who runs, on what batches, with which optimizer."""

    network: str
    time_steps: int
    train_batch: int
    train_steps: int
    infer_batches: list[int]
    pretrain_steps: int
    contestants: dict[str, Callable[[], Any]]  # name -> factory, the reference first
    peers: set[str]
    optimizer: Callable[[Any], torch.optim.Optimizer]
    agreement_train: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    layer_table: bool
    sizes: list[int]
    pretrainer: Callable[[], Any]  # the engine contestant, selected or not: trains the shared start


NETWORKS = ("mlp", *CN.NETWORKS)


def _sgd(lr: float) -> Callable[[Any], torch.optim.Optimizer]:
    return lambda c: torch.optim.SGD(c.parameters(), lr=lr, momentum=0.9)


def _adamw(lr: float) -> Callable[[Any], torch.optim.Optimizer]:
    return lambda c: torch.optim.AdamW(c.parameters(), lr=lr)


def _bernoulli_train(T: int) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    return lambda x, g: (torch.rand((T, *x.shape), generator=g, device=x.device) < x).float()


def _direct_train(T: int) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    return lambda x, g: x.unsqueeze(0).expand(T, *x.shape)


def _races(cfg: BenchConfig, device: torch.device) -> tuple[list[_Race], dict[str, dict[str, str]]]:
    """The races ``cfg`` asks for, and per network the contestants skipped (with why)."""
    races, skipped = [], {}
    for net in cfg.networks:
        if net not in NETWORKS:
            raise ConfigError(f"network {net!r} is unknown; accepted: {', '.join(NETWORKS)}")
        factories: dict[str, Callable[[], Any]]
        if net == "mlp":
            T = int(cfg.time_steps)
            names, skip = _select(cfg.contestants, C.ALL, C.BUILTIN, C.PEERS, cfg.peers)
            factories = {n: functools.partial(C.ALL[n], T, device) for n in names}
            race = _Race(
                "mlp",
                T,
                int(cfg.train_batch),
                int(cfg.train_steps),
                [int(b) for b in cfg.infer_batches],
                int(cfg.pretrain_steps),
                factories,
                set(C.PEERS),
                _sgd(float(cfg.lr)),
                _bernoulli_train(T),
                True,
                list(C.SIZES),
                functools.partial(C.Engine, T, device),
            )
        else:
            cc = cfg.conv
            T, encoding = CN.NETWORKS[net]
            known: dict[str, type[CN.ConvReference] | type[CN.ConvSpikingJelly]] = {**CN.CONV_BUILTIN, **CN.CONV_PEERS}
            names, skip = _select(cc.contestants, known, CN.CONV_BUILTIN, CN.CONV_PEERS, cfg.peers)
            factories = {n: functools.partial(known[n], T, device, net) for n in names}
            race = _Race(
                net,
                T,
                int(cc.train_batch),
                int(cc.train_steps),
                [int(b) for b in cc.infer_batches],
                int(cc.pretrain_steps),
                factories,
                set(CN.CONV_PEERS),
                _adamw(float(cc.lr)),
                _direct_train(T) if encoding == "direct" else _bernoulli_train(T),
                False,
                [1, 28, 28, *CN.CHANNELS, CN.FC, 10],
                functools.partial(CN.ConvEngine, T, device, net),
            )
        races.append(race)
        if skip:
            skipped[net] = skip
    return races, skipped


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


def _select(wanted, known, builtin, peers, add_peers: bool) -> tuple[list[str], dict[str, str]]:
    """Contestant names in race order (the reference first, then the ones asked for, then
    the installed peers) and the peers skipped, with why."""
    names, skipped = [], {}
    for n in wanted:
        if n not in known:
            raise ConfigError(f"contestant {n!r} is unknown; accepted: {', '.join(known)}")
        names.append(n)
    if "reference" in names:
        names.remove("reference")
    names.insert(0, "reference")
    if add_peers:
        names += [n for n in peers if n not in names]
    final = []
    for n in names:
        if n in peers and n not in builtin:
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


OTHERS_WARN = 0.1  # share of the machine's CPU used by other processes above which the bench warns


def _run(cfg: BenchConfig) -> dict:
    device = _device(cfg.target)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    keys = ("time_steps", "train_batch", "train_steps", "rounds", "infer_min_batches", "agreement_batch")
    checks: list[tuple[Any, str]] = [(cfg, k) for k in keys]
    checks += [(cfg.conv, k) for k in ("train_batch", "train_steps")]
    for obj, key in checks:
        if int(getattr(obj, key)) < 1:
            raise ConfigError(f"{key}={getattr(obj, key)!r} is invalid: must be an integer >= 1")
    for batches in (cfg.infer_batches, cfg.conv.infer_batches):
        if not batches or any(int(b) < 1 for b in batches):
            raise ConfigError(f"infer_batches={list(batches)} is invalid: batch sizes >= 1")
    if not cfg.networks:
        raise ConfigError(f"networks=[] is invalid: name at least one of {', '.join(NETWORKS)}")
    load_start = loadavg()
    with BusyMeter() as busy:
        races, skipped = _races(cfg, device)
        torch.manual_seed(cfg.seed)
        images, labels = _images(cfg, device)
        results = {}
        for race in races:
            log.info("racing the %s network", race.network)
            results[race.network] = _race(race, cfg, images, labels, device, skipped.get(race.network, {}))
    machine = machine_info(device)
    machine["loadavg_at_start"] = load_start
    # measured over the run; the load average also counts jobs that stopped minutes before
    machine["cpu_share_used_by_other_processes"] = busy.others
    return {
        "machine": machine,
        "config": dataclasses.asdict(cfg),
        "engine": engine.describe(),
        "memory_method": "bytes autograd saves for backward during one training forward "
        "(saved_tensors_hooks; each storage once; parameters excluded)",
        "networks": results,
    }


def _race(race: _Race, cfg: BenchConfig, images, labels, device, skipped: dict[str, str]) -> dict:
    n_img = images.shape[0]
    T = race.time_steps
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    pick = torch.Generator().manual_seed(cfg.seed + 1)

    def batch(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, n_img, (b,), generator=pick).to(device)
        return images[idx], labels[idx]

    # Shared starting weights, trained briefly so that firing rates (hence the spike
    # sparsity the engine exploits) are those of a network that learns, not of init.
    eng = race.pretrainer()
    opt = race.optimizer(eng)
    eng.train(True)
    for _ in range(race.pretrain_steps):
        _train_step(eng, opt, *batch(race.train_batch), gen)
    start = eng.state()
    with torch.no_grad():
        x, _ = batch(race.train_batch)
        _, rec = eng.module(x, generator=gen, return_record=True)
    rates = [round(r, 4) for r in rec.firing_rates()]
    input_density = float(x.mean())

    racers: dict[str, Any] = {}
    for n, make in race.contestants.items():
        try:
            c = make()
            c.load(start)
            o = race.optimizer(c)
            c.train(False)  # (in training mode BatchNorm would update its running statistics)
            with torch.no_grad():
                c.scores(*batch(2)[:1], gen)  # a dry run: fail here, not mid-race
            racers[n] = (c, o)
        except Exception as e:  # a broken optional peer must not sink the benchmark
            if n not in race.peers:
                raise
            skipped[n] = f"{type(e).__name__}: {e}"

    # Agreement: every contestant against the per-step path on one fixed input train.
    agreement = {}
    with torch.no_grad():
        xb, _ = batch(int(cfg.agreement_batch))
        train = race.agreement_train(xb, gen)
        for c, _ in racers.values():
            c.train(False)
        ref_scores = racers["reference"][0].from_train(train)
        for n, (c, _) in racers.items():
            s = c.from_train(train)
            agreement[n] = {
                "scores_identical": bool(torch.equal(s, ref_scores)),
                "max_abs_score_diff": float((s - ref_scores).abs().max()),
            }
        if "engine" in racers:  # and the engine's spikes, layer by layer
            _, r_ref = racers["reference"][0].module.forward_spikes(train, return_record=True, mode="step")
            _, r_eng = racers["engine"][0].module.forward_spikes(train, return_record=True)
            spiking = [i for i, layer in enumerate(racers["engine"][0].module.layers) if layer.neuron.spiking]

            def mismatches(rec) -> int:
                return sum(int((r_ref.spikes[i] != rec.spikes[i]).sum()) for i in spiking)

            agreement["engine"]["spike_mismatches"] = mismatches(r_eng)
            agreement["engine"]["spikes_compared"] = sum(r_ref.spikes[i].numel() for i in spiking)
            # Sparse matmuls and channels-last or gathered convs sum in another order than
            # the per-step path's GEMMs and F.conv2d: a membrane within rounding of the
            # threshold may flip a spike (and the flip spreads). The same forward with the
            # per-step path's dense operations tells float order from a real difference.
            op = "matmul" if race.network == "mlp" else "conv"
            with engine.using(**{op: "dense"}):
                _, r_dense = racers["engine"][0].module.forward_spikes(train, return_record=True)
            agreement["engine"][f"spike_mismatches_dense_{op}"] = mismatches(r_dense)

    metrics = ["train"] + [f"infer_b{b}" for b in race.infer_batches]
    per_round: dict[str, dict[str, list[float]]] = {n: {m: [] for m in metrics} for n in racers}
    order = list(racers)
    total_rounds = int(cfg.rounds) + int(cfg.warmup)
    for r in range(total_rounds):
        rot = order[r % len(order) :] + order[: r % len(order)]
        train_batches = [batch(race.train_batch) for _ in range(race.train_steps)]
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
                        per_round[n][m].append(race.train_batch * race.train_steps / dt)
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
        log.info("%s: round %d/%d done", race.network, r + 1, total_rounds)

    results: dict[str, Any] = {}
    for n, (c, _) in racers.items():
        c.train(True)
        xb, yb = batch(race.train_batch)
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
    if race.layer_table and "engine" in racers and cfg.layer_repeats > 0:
        xb, _ = batch(race.train_batch)
        layers = layer_strategies(racers["engine"][0].module, xb, gen, int(cfg.layer_repeats), device)

    return {
        "network": {
            "sizes": race.sizes,
            "time_steps": T,
            "train_batch": race.train_batch,
            "pretrain_steps": race.pretrain_steps,
            "firing_rates": rates,
            "input_density": round(input_density, 4),
        },
        "contestants": results,
        "ratios_vs_reference": ratios,
        "skipped": skipped,
        "agreement": agreement,
        "layers": layers,
        "targets": _targets(race.network, per_round, results),
    }


#: what the issues ask of the engine, per network:
#: (contestant, metric, bound, "ge" | "le", against whom)
TARGETS = {
    "mlp": [
        ("engine", "train", 5.0, "ge", "reference"),
        ("engine_kernel_rng", "train", 5.0, "ge", "reference"),
        ("engine", "infer_b28", 3.0, "ge", "reference"),
        ("engine", "saved_activation_memory", 0.5, "le", "reference"),
    ],
    "conv": [("engine", "train", 2.5, "ge", "reference"), ("engine", "train", 1.0, "ge", "spikingjelly")],
    "conv_bernoulli": [("engine", "train", 2.5, "ge", "reference"), ("engine", "train", 1.0, "ge", "spikingjelly")],
}


def _targets(network: str, per_round: dict, results: dict) -> dict:
    """Each target of :data:`TARGETS` for ``network``: the measured ratio (the median of
    the within-round ratios; for memory the ratio of the bytes) and whether it meets the
    bound (``None`` when a contestant or metric did not run)."""
    out = {}
    for who, metric, bound, how, against in TARGETS.get(network, []):
        key = f"{who}_{metric}_vs_{against}_{how}_{bound:g}x"
        ratio = None
        if who in results and against in results:
            if metric == "saved_activation_memory":
                ratio = results[who]["saved_activation_bytes"] / max(results[against]["saved_activation_bytes"], 1)
            elif metric in per_round[who]:
                ratio = median([a / b for a, b in zip(per_round[who][metric], per_round[against][metric]) if b])
        if ratio is None:
            out[key] = {"ratio": None, "met": None}
        else:
            out[key] = {"ratio": round(ratio, 3), "met": ratio >= bound if how == "ge" else ratio <= bound}
    return out


def _score_agreement(v: dict) -> str:
    return "identical" if v["scores_identical"] else f"max diff {v['max_abs_score_diff']:.3g}"


def table(res: dict) -> str:
    """The printed summary: one table per network, then the machine."""
    parts = [_network_table(name, net) for name, net in res["networks"].items()]
    m = res["machine"]
    out = "\n\n".join(parts)
    out += (
        f"\nmachine: {m.get('cpu', '?')}, {m['cpu_count']} CPUs, torch {m['torch']} "
        f"({m['cpu_capability']}), {m['torch_threads']} threads; native kernels "
        f"{'on' if (res['engine'].get('native_status') or {}).get('available') else 'off'}; "
        f"load average {m.get('loadavg_at_start')} at start, {m.get('loadavg_1_5_15')} at the end"
    )
    if m.get("cpu_share_used_by_other_processes") is not None:
        out += f"; other processes used {100 * m['cpu_share_used_by_other_processes']:.0f}% of the CPU during the run"
    out += _competition_warning(m)
    return out


def _competition_warning(m: dict) -> str:
    """A warning line when other processes competed for the cores during the run: judged
    by the CPU time they used over the run where /proc/stat tells it (the load average
    also counts jobs stopped or finished minutes before), else by the load average."""
    others = m.get("cpu_share_used_by_other_processes")
    if others is not None:
        if others <= OTHERS_WARN:
            return ""
        return (
            f"\nwarning: other processes used {100 * others:.0f}% of this machine's CPU during the run: {_UNRELIABLE}"
        )
    load = m.get("loadavg_at_start")
    if load and m["cpu_count"] and max(load[0], m.get("loadavg_1_5_15", [0])[0]) > m["cpu_count"]:
        return (
            f"\nwarning: load average {load[0]} at start, {m['loadavg_1_5_15'][0]} at the end on "
            f"{m['cpu_count']} CPUs: {_UNRELIABLE}"
        )
    return ""


_UNRELIABLE = (
    "other processes competed for the cores, so these numbers (multi-threaded ones most) are unreliable; "
    "rerun on an idle machine"
)


def _network_table(name: str, res: dict) -> str:
    net = res["network"]
    title = f"network {name} (T={net['time_steps']}, training batch {net['train_batch']})"
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
    out = title + "\n" + "\n".join(lines)
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
    if res["agreement"]:
        a = res["agreement"]
        same = ", ".join(f"{n} {_score_agreement(v)}" for n, v in a.items() if n != "reference")
        out += f"\nscores on one shared input train vs the reference: {same}"
        if "engine" in a and "spike_mismatches" in a["engine"]:
            out += (
                f"\nengine spikes vs per-step: {a['engine']['spike_mismatches']} of "
                f"{a['engine']['spikes_compared']} differ"
            )
            for op, what in (("conv", "convs"), ("matmul", "matmuls")):
                if f"spike_mismatches_dense_{op}" in a["engine"]:
                    n_dense = a["engine"][f"spike_mismatches_dense_{op}"]
                    why = (
                        "the rest is float summation order"
                        if n_dense == 0
                        # BLAS may block a product over all T*B rows differently from B-row ones
                        else f"the library rounds the all-steps {what} differently from the per-step "
                        "ones here: float summation order either way"
                    )
                    out += f" ({n_dense} with engine.{op}=dense, the per-step path's {what}: {why})"
    if res["targets"]:
        out += "\ntargets: " + ", ".join(
            f"{k} {v['ratio']} ({'met' if v['met'] else 'not met' if v['met'] is not None else 'not run'})"
            for k, v in res["targets"].items()
        )
    return out
