"""One source for every default: the schema (src/snn_lab/config/schema.py).

A class's own default (what the Python API gives) must equal the schema's for every key
they share, and no YAML option may restate a schema default (two copies drift apart:
they had, for the model mode, the conv pool, Izhikevich's gain and SGD's weight decay).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from snn_lab.cli import CONFIG_DIR
from snn_lab.config import schema as S
from snn_lab.encoders import LatencyEncoder, PassthroughEncoder, PhaseEncoder, PopulationEncoder
from snn_lab.lit.datamodule import (
    CIFAR10DataModule,
    DVSGestureDataModule,
    FashionMNISTDataModule,
    IDXDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    NMNISTDataModule,
    SHDDataModule,
)
from snn_lab.models import SNNModel, SpikingConvNet, SpikingMLP
from snn_lab.models.recurrent import RecurrentSNN
from snn_lab.neurons import ALIF, IF, LIF, PLIF, Izhikevich, Surrogate
from snn_lab.neurons.cuba import CubaLIF

#: schema -> the classes it configures (their constructor arguments of the same name)
PAIRS = [
    (S.CubaLIFConf, CubaLIF),
    (S.RSNNConf, RecurrentSNN),
    (S.LIFConf, LIF),
    (S.IFConf, IF),
    (S.PLIFConf, PLIF),
    (S.ALIFConf, ALIF),
    (S.IzhikevichConf, Izhikevich),
    (S.MLPConf, SpikingMLP),
    (S.ConvConf, SpikingConvNet),
    (S.ModelConf, SNNModel),
    (S.LatencyEncoderConf, LatencyEncoder),
    (S.PhaseEncoderConf, PhaseEncoder),
    (S.PopulationEncoderConf, PopulationEncoder),
    (S.SurrogateConf, Surrogate),
    (S.DataConf, MNISTDataModule),
    (S.FashionMNISTConf, FashionMNISTDataModule),
    (S.CIFAR10Conf, CIFAR10DataModule),
    (S.IDXDataConf, IDXDataModule),
    (S.ImageFolderConf, ImageFolderDataModule),
    (S.NMNISTConf, NMNISTDataModule),
    (S.DVSGestureConf, DVSGestureDataModule),
    (S.SHDConf, SHDDataModule),
    (S.PassthroughEncoderConf, PassthroughEncoder),
]


def _schema_defaults(conf: type) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(conf), resolve=False)


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


@pytest.mark.parametrize("conf,cls", PAIRS, ids=[f"{c.__name__}-{k.__name__}" for c, k in PAIRS])
def test_class_defaults_equal_the_schema(conf, cls):
    params = inspect.signature(cls).parameters
    shared = 0
    for key, value in _schema_defaults(conf).items():
        p = params.get(key)
        if p is None or p.default is inspect.Parameter.empty:
            continue
        if isinstance(value, str) and "${" in value:  # a config interpolation (paths): no class can hold it
            continue
        shared += 1
        assert _plain(p.default) == value, f"{cls.__name__}({key}={p.default!r}) but {conf.__name__}.{key}={value!r}"
    assert shared or conf is S.ModelConf, f"{conf.__name__} and {cls.__name__} share no key"


def test_readout_out_decay_matches_the_models():
    out_decay = _schema_defaults(S.ReadoutConf)["out_decay"]
    for cls in (SpikingMLP, SpikingConvNet):
        assert inspect.signature(cls).parameters["out_decay"].default == out_decay


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


OPTIONS = [
    (group, path)
    for group, schemas in S._GROUP_SCHEMAS.items()
    for path in sorted((Path(CONFIG_DIR) / group).glob("*.yaml"))
]


@pytest.mark.parametrize("group,path", OPTIONS, ids=[f"{g}/{p.stem}" for g, p in OPTIONS])
def test_no_yaml_option_restates_a_schema_default(group, path):
    raw = OmegaConf.to_container(OmegaConf.load(path))
    schemas = [d for d in raw.pop("defaults", []) if isinstance(d, str) and d.endswith("_schema")]
    assert schemas, f"{path} extends no schema"
    base = _flat(_schema_defaults(S._GROUP_SCHEMAS[group][schemas[0].removesuffix("_schema")]))
    restated = sorted(k for k, v in _flat(raw).items() if k in base and base[k] == v)
    assert not restated, f"{path.relative_to(Path(CONFIG_DIR).parent)} restates schema defaults: {restated}"


def test_a_checkpoint_from_before_the_default_changes_rebuilds_as_trained(tmp_path):
    """Checkpoints that left model.mode / conv pool to the class defaults of their time
    (step, spikes) rebuild with those, not with today's (layer, current)."""
    import torch

    from snn_lab.models import build_network, load_network, upgrade_net_config

    old = {
        "model": {"name": "conv", "input_shape": [1, 28, 28], "channels": [4], "fc": 8, "num_classes": 10},
        "neuron": {"name": "lif"},
        "surrogate": {"name": "rectangle"},
        "encoder": {"name": "direct"},
        "readout": {"name": "rate"},
        "time_steps": 2,
    }
    assert upgrade_net_config(old)["model"]["pool"] == "spikes" and upgrade_net_config(old)["model"]["mode"] == "step"
    assert build_network(old).pool == "current"  # today's default, for new configs
    net = build_network(upgrade_net_config(old))
    path = tmp_path / "old.ckpt"
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"net": old}}, path)
    rebuilt = load_network(path)
    assert rebuilt.pool == "spikes" and rebuilt.mode == "step" and rebuilt.state_shapes[0] == (4, 28, 28)
