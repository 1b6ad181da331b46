"""Shared fixtures: generators, composed configs, tiny networks and a trained tiny run.

The factories are fixtures that return a function, so a test calls them with its own
arguments (``tiny_net("alif", readout="membrane")``, ``compose_cfg(["model=conv"])``).
Plain helpers that run the CLIs as a user would live in helpers.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from helpers import TINY_RUN, train
from snn_lab.encoders import Encoder, build_encoder
from snn_lab.models import SpikingConvNet, SpikingMLP, tutorial_network
from snn_lab.neurons import ALIF, IF, LIF, PLIF, Surrogate

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# -- order ---------------------------------------------------------------------------------------

# The files whose tests take longest (15-75 s each on 2 cores), longest first. pytest-xdist
# (--dist loadfile) hands whole files to the workers in collection order, so a long file
# collected last runs alone at the end while the other worker idles; started first, the
# short files fill in around it.
LONG_FILES = (
    "test_open_lab.py",
    "test_config.py",
    "test_packaging.py",
    "test_train.py",
    "test_documented_commands.py",
    "test_deploy_export.py",
    "test_deploy.py",
    "test_bad_inputs.py",
    "test_sweeps.py",
    "test_datasets_events.py",
    "test_datasets_static.py",
    "test_resume_after_kill.py",
    "test_efficiency.py",
    "test_nir_interop.py",
    "test_properties.py",
    "test_ddp.py",
    "test_auto_resume.py",
    "test_native.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: file order kept


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


# -- composed configs -------------------------------------------------------------------------


def _compose(overrides: Sequence[str] = (), config_name: str = "train", return_hydra_config: bool = False):
    from hydra import compose, initialize_config_dir

    from snn_lab.cli import CONFIG_DIR
    from snn_lab.config import register_configs

    register_configs()  # the schemas the YAML options extend (idempotent)
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


@pytest.fixture(scope="session")
def compose_cfg() -> Callable:
    """``compose_cfg(overrides=(), config_name="train", return_hydra_config=False)``: the
    config the CLI would compose from conf/ with these overrides (not validated)."""
    return _compose


# -- tiny networks ------------------------------------------------------------------------------

# kind -> (neuron class, its parameters in the tiny networks)
NEURON_KINDS: dict[str, tuple[type, dict]] = {
    "lif": (LIF, {"vth": 0.4, "decay": 0.8}),
    "lif_sub": (LIF, {"vth": 0.4, "decay": 0.8, "reset": "subtract"}),
    "if": (IF, {"vth": 0.4}),
    "plif": (PLIF, {"vth": 0.4, "decay": 0.7}),
    "alif": (ALIF, {"vth": 0.4, "decay": 0.8}),
}


def _neuron_maker(kind: str = "lif", surrogate: str | Surrogate = "rectangle", **params) -> Callable:
    cls, defaults = NEURON_KINDS[kind]
    sg = surrogate if isinstance(surrogate, Surrogate) else Surrogate(surrogate)
    kwargs = {**defaults, **params, "surrogate": sg}
    return lambda: cls(**kwargs)


def _tiny_net(
    neuron: str | Callable = "lif",
    readout: str = "rate",
    hidden: Sequence[int] = (48, 32),
    encoder: str | Encoder | None = "bernoulli",
    time_steps: int = 6,
    *,
    arch: str = "mlp",
    surrogate: str | Surrogate = "rectangle",
    mode: str = "step",
    seed: int = 0,
    weight_scale: float = 2.5,
    train: bool = False,
    **model_kwargs,
) -> torch.nn.Module:
    torch.manual_seed(seed)
    make = neuron if callable(neuron) else _neuron_maker(neuron, surrogate)
    enc = build_encoder(encoder) if isinstance(encoder, str) else encoder
    common = {"time_steps": time_steps, "encoder": enc, "mode": mode}
    if arch == "mlp":
        net = SpikingMLP(make, hidden=hidden, readout=readout, **common, **model_kwargs)
    elif arch == "conv":
        net = SpikingConvNet(make, readout=readout, **common, **model_kwargs)
    elif arch == "tutorial":  # the tutorial's 784-512-512-10 LIF network
        net = tutorial_network(**common, **model_kwargs)
    else:
        raise ValueError(f"arch={arch!r}")
    if weight_scale != 1.0:
        for layer in net.layers:  # stronger weights so every layer spikes, untrained
            layer.synapse[-1].weight.data.mul_(weight_scale)
    return net.train(train)


@pytest.fixture(scope="session")
def neuron_maker() -> Callable:
    """``neuron_maker(kind="lif", surrogate="rectangle", **params)``: a zero-argument
    constructor of a neuron of ``NEURON_KINDS`` (lif, lif_sub, if, plif, alif) with
    ``params`` overriding its defaults, as the models' ``make_neuron`` takes it."""
    return _neuron_maker


@pytest.fixture(scope="session")
def tiny_net() -> Callable:
    """``tiny_net(neuron="lif", readout="rate", hidden=(48, 32), encoder="bernoulli",
    time_steps=6, *, arch="mlp", surrogate="rectangle", mode="step", seed=0,
    weight_scale=2.5, train=False, **model_kwargs)``: a small seeded network.

    ``neuron``: a kind of ``NEURON_KINDS`` or a zero-argument constructor; ``encoder``: a
    name, an encoder or None; ``arch``: mlp (``hidden``), conv (``channels=``, ``fc=``,
    ``pool=``... in ``model_kwargs``) or tutorial; ``weight_scale`` multiplies each
    layer's last synapse weight (2.5: untrained, yet every layer spikes; 1.0: as
    initialised). Eval mode unless ``train``."""
    return _tiny_net


def _mnist_like(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, 256, (n, 1, 28, 28), generator=g).float() / 255
    mask = torch.rand((n, 1, 28, 28), generator=g) < 0.25
    return (levels * mask).contiguous()


@pytest.fixture(scope="session")
def mnist_like() -> Callable:
    """``mnist_like(n, seed=0)``: sparse images ``[n, 1, 28, 28]`` in [0, 1] with k/255
    levels, like MNIST."""
    return _mnist_like


# -- a trained tiny run -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One finished tiny training run (train CLI with ``TINY_RUN``): its run dir.
    Read it, never write into it (a test that changes a run takes ``tiny_run_copy``).
    Session-scoped: one training per xdist worker that needs it."""
    root = tmp_path_factory.mktemp("tiny_run")
    r = train([*TINY_RUN, "hydra.run.dir=run"], root)
    assert r.returncode == 0, r.stderr[-2000:]
    return root / "run"


@pytest.fixture(scope="session")
def trained_tiny_ckpt(tiny_run) -> Path:
    return tiny_run / "checkpoints" / "best.ckpt"


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of ``tiny_run`` at ``tmp_path / "run"``, free to resume or overwrite."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))
