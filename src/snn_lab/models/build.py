"""A network from plain data: the ``net`` section a checkpoint stores rebuilds the model
with nothing else (no Lightning, no Hydra).

``net`` holds ``model``, ``neuron``, ``surrogate``, ``encoder``, ``readout`` (dicts) and
``time_steps``. Each dict names a built-in (``name: lif``) or a class of the user's
(``_target_: my_pkg.CubaLIF``) plus its keyword arguments. The contracts a user class
meets are those of the built-ins:

* surrogate: ``cls(**params)`` -> a :class:`~snn_lab.neurons.Surrogate` (subclass)
* neuron: ``cls(surrogate=Surrogate, **params)`` -> :class:`~snn_lab.neurons.Neuron`
* encoder: ``cls(**params)`` -> :class:`~snn_lab.encoders.Encoder`
* model: ``cls(make_neuron, input_shape=, time_steps=, encoder=, readout=, out_decay=,
  **params)`` -> :class:`~snn_lab.models.SNNModel`
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..encoders import ENCODERS, Encoder
from ..errors import ConfigError, first_line
from ..neurons import NEURONS, Neuron, Surrogate
from ..readouts import check_readout
from ..registry import Registry, locate, split_spec
from .base import SNNModel
from .conv import SpikingConvNet
from .mlp import SpikingMLP
from .nir_import import nir_network
from .recurrent import RecurrentSNN

__all__ = ["MODELS", "build_network"]

#: built-in networks by config name; ``MODELS.register("mine", MyNet)`` adds one
MODELS: Registry[Callable[..., SNNModel]] = Registry(
    "model", {"mlp": SpikingMLP, "conv": SpikingConvNet, "rsnn": RecurrentSNN, "nir": nir_network}
)


def _call(factory: Callable[..., Any], key: str, label: str, *args: Any, **kwargs: Any) -> Any:
    """Call a component's constructor; a bad parameter becomes a one-line error naming
    the config key and the class (a user class may raise anything)."""
    try:
        return factory(*args, **kwargs)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of a constructor is a config problem here
        raise ConfigError(f"{key} ({label}): {first_line(e, limit=10_000)}") from None


def build_network(net: Mapping[str, Any]) -> SNNModel:
    """The network a ``net`` dict describes (see the module docstring)."""
    sur = dict(net.get("surrogate") or {"name": "rectangle"})
    if sur.get("_target_"):  # a Surrogate subclass of the user's (its own keys)
        params = {k: v for k, v in sur.items() if not k.startswith("_")}
        surrogate = _call(locate(sur["_target_"], "surrogate._target_"), "surrogate", str(sur["_target_"]), **params)
    else:
        surrogate = _call(Surrogate, "surrogate", str(sur.get("name")), sur.get("name", "rectangle"), sur.get("width"))
    neuron_cls, neuron_label, neuron_params = split_spec(net["neuron"], NEURONS, "neuron")

    def make_neuron() -> Neuron:
        neuron: Neuron = _call(neuron_cls, "neuron", neuron_label, surrogate=surrogate, **neuron_params)
        return neuron

    make_neuron()  # fail early on bad neuron parameters
    enc_cls, enc_label, enc_params = split_spec(net.get("encoder") or {"name": "bernoulli"}, ENCODERS, "encoder")
    encoder: Encoder = _call(enc_cls, "encoder", enc_label, **enc_params)
    readout = dict(net.get("readout") or {"name": "rate"})
    _call(check_readout, "readout", str(readout.get("name")), readout.get("name"))
    model_cls, model_label, model_params = split_spec(net["model"], MODELS, "model")
    input_shape = list(model_params.pop("input_shape"))
    input_shape[0] *= int(getattr(encoder, "channel_multiplier", 1))
    model: SNNModel = _call(
        model_cls,
        "model",
        model_label,
        make_neuron,
        input_shape=input_shape,
        time_steps=net["time_steps"],
        encoder=encoder,
        readout=readout["name"],
        out_decay=readout.get("out_decay", 0.8),
        **model_params,
    )
    return model
