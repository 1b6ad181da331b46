"""Property-based tests (hypothesis).

Config validation: any value of a checked key (numbers of any sign and size, NaN/inf,
strings, lists, null, booleans) either composes and validates, or fails with
``ConfigError`` or Hydra's composition error naming the key; never another exception.

Neurons: every built-in neuron, for random shapes, lengths and parameters, emits binary
spikes of the input's shape, follows its documented reset rule step by step, and its
``multi_step`` (fused engine on, native or not, and off) equals looping ``step``.
"""

from __future__ import annotations

import string

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException, OverrideParseException
from hypothesis import HealthCheck, given, settings

from helpers import step_loop
from snn_lab import engine
from snn_lab.config import validate
from snn_lab.engine import native
from snn_lab.errors import ConfigError
from snn_lab.neurons import ALIF, IF, LI, LIF, PLIF, Izhikevich, Surrogate
from snn_lab.neurons.izhikevich import V_PEAK

# -- config validation ----------------------------------------------------------------------------

ints = st.integers() | st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**30])
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e-300, 1.0, 0.5])
# quoted, without `$` (an interpolation) or quotes: Hydra's grammar parses them as strings
texts = st.text(string.ascii_letters + string.digits + " ._-", max_size=12).map(lambda s: f"'{s}'")
scalars = ints.map(str) | floats.map(repr) | texts | st.sampled_from(["null", "true", "false"])
values = scalars | st.lists(scalars, max_size=3).map(lambda xs: f"[{','.join(xs)}]")
# model.hidden builds a trial network in validate: widths beyond 2048 would allocate
# gigabytes (784 x width x next width; [2**31] asks for 6.7 TB and fails with the allocator's
# message), so widths are bounded above, never below
widths = st.integers(max_value=2048) | st.sampled_from([0, -1, -(10**30)])
hidden_values = scalars | st.lists(widths.map(str) | floats.map(repr) | texts | st.just("null"), max_size=3).map(
    lambda xs: f"[{','.join(xs)}]"
)

KEYS = [
    "neuron.vth",
    "neuron.decay",
    "time_steps",
    "data.batch_size",
    "data.val_split",
    "optimizer.lr",
    "model.hidden",
    "trainer.max_epochs",
    "trainer.limit_train_batches",
    "callbacks.every_n_train_steps",
    "callbacks.ema_decay",
]


def _outcome(compose, groups, values):
    """What composing gives: the config as YAML, or the exception's type and message."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_yaml(compose(groups, values))
    except (ConfigCompositionException, OverrideParseException) as e:
        return f"{type(e).__name__}: {e} {e.__cause__}"


@pytest.fixture(scope="module")
def compose_fast(compose_cfg):
    """``compose_fast(groups, values)``: the ``train`` config composed with the group
    choices ``groups`` (e.g. ``neuron=plif``) and then the value overrides ``values``.

    Hydra composes in two steps: the defaults list (the slow part, ~0.3 s), then the
    command line's value overrides merged into the result. Per group choice the first step
    runs once; per example only the second, by Hydra's own override merge on a copy (20-40x
    faster). Setup checks that this equals a full composition on valid, mistyped, unknown
    and unparsable overrides, so a Hydra upgrade that changes the steps fails here."""
    import copy

    from hydra import compose, initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from snn_lab.cli import CONFIG_DIR

    compose_cfg([])  # registers the schemas
    parser = OverridesParser.create()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        bases: dict[tuple[str, ...], object] = {}

        def fast(groups=(), values=()):
            groups = tuple(groups)
            if groups not in bases:
                bases[groups] = compose("train", overrides=list(groups))
            cfg = copy.deepcopy(bases[groups])
            ConfigLoaderImpl._apply_overrides_to_config(parser.parse_overrides(list(values)), cfg)
            return cfg

        def full(groups=(), values=()):
            return compose("train", overrides=[*groups, *values])

        for groups, values in [
            ((), ["neuron.vth=0.3", "time_steps=7"]),
            ((), ["neuron.vth='abc'"]),
            ((), ["model.hidden=[10,'a']"]),
            ((), ["data.val_split=null"]),
            ((), ["neuron.nope=1"]),
            ((), ["time_steps=[1,"]),
            (("neuron=plif",), ["neuron.decay=2.5", "optimizer.lr=-1.0"]),
        ]:
            assert _outcome(fast, groups, values) == _outcome(full, groups, values), (groups, values)
        yield fast


def _names(key: str, message: str) -> bool:
    """``neuron.vth`` named in full, or as its section and leaf (``model (mlp): hidden=``)."""
    section, _, leaf = key.rpartition(".")
    return key in message or (section in message and f"{leaf}=" in message)


def _compose_and_validate(compose, override: str, key: str) -> None:
    try:
        cfg = compose((), [override])
    except (ConfigCompositionException, OverrideParseException) as e:
        text = f"{e} {e.__cause__}"
        assert key in text, f"{override}: {text}"
        return
    try:
        validate(cfg)
    except ConfigError as e:
        assert _names(key, str(e)), f"{override}: {e}"


@pytest.mark.parametrize("key", KEYS)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_value_of_a_checked_key_validates_or_fails_naming_it(compose_fast, key, data):
    value = data.draw(hidden_values if key == "model.hidden" else values, label="value")
    _compose_and_validate(compose_fast, f"{key}={value}", key)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(vth=floats, decay=floats, lr=floats, neuron=st.sampled_from(["lif", "if", "plif", "alif"]))
def test_neuron_and_optimizer_numbers_together(compose_fast, vth, decay, lr, neuron):
    """Several keys at once, on each neuron group option: the first bad key is named."""
    overrides = [f"neuron.vth={vth!r}", f"optimizer.lr={lr!r}"]
    if neuron != "if":  # IF has no decay
        overrides.append(f"neuron.decay={decay!r}")
    try:
        validate(compose_fast([f"neuron={neuron}"], overrides))
    except ConfigError as e:
        assert any(k in str(e) for k in ("neuron.vth", "neuron.decay", "optimizer.lr", "network config")), str(e)


# -- neurons --------------------------------------------------------------------------------------

NATIVE = native.available()
BACKENDS = [pytest.param(False, id="torch")] + ([pytest.param(True, id="native")] if NATIVE else [])

# any currents (ties with the threshold, zeros, large values), any shape, T >= 1
currents = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 10), hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)).map(lambda s: (s[0], *s[1])),
    elements=st.floats(-3, 3, width=32) | st.sampled_from([0.0, 0.4, -0.4, 0.8, 1.0]),
)
vths = st.floats(0.0625, 2.0, width=32)
units = st.floats(0.0, 1.0, width=32)
surrogates = st.sampled_from(["rectangle", "triangle", "sigmoid", "atan"]).map(Surrogate)


@st.composite
def neurons(draw):
    """Any built-in neuron with random parameters (as a zero-argument constructor)."""
    kind = draw(st.sampled_from(["lif", "if", "plif", "alif", "izhikevich"]))
    sg = draw(surrogates)
    if kind == "lif":
        kw = {"vth": draw(vths), "decay": draw(units), "reset": draw(st.sampled_from(["hard", "subtract"]))}
        detach = draw(st.booleans())
        return kind, lambda: LIF(surrogate=sg, detach_reset=detach, **kw)
    if kind == "if":
        kw = {"vth": draw(vths), "reset": draw(st.sampled_from(["hard", "subtract"]))}
        return kind, lambda: IF(surrogate=sg, **kw)
    if kind == "plif":
        kw = {
            "vth": draw(vths),
            "decay": draw(st.floats(0.01, 0.99)),
            "reset": draw(st.sampled_from(["hard", "subtract"])),
        }
        return kind, lambda: PLIF(surrogate=sg, **kw)
    if kind == "alif":
        kw = {"vth": draw(vths), "decay": draw(units), "beta": draw(st.floats(0.0, 1.0)), "rho": draw(units)}
        return kind, lambda: ALIF(surrogate=sg, **kw)
    kw = {
        "a": draw(st.floats(0.01, 0.1)),
        "b": draw(st.floats(0.1, 0.3)),
        "c": draw(st.floats(-70.0, -50.0)),
        "d": draw(st.floats(0.05, 8.0)),
        "substeps": draw(st.integers(1, 3)),
        "gain": draw(st.floats(1.0, 20.0)),
    }
    return kind, lambda: Izhikevich(surrogate=sg, **kw)


def _binary(s: torch.Tensor) -> bool:
    return set(s.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("use_native", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(spec=neurons(), x=currents)
def test_every_neuron_multi_step_equals_the_step_loop(use_native, spec, x):
    """Binary spikes of shape [T, ...]; multi_step with the engine (native or torch) and
    without it gives the step loop's spikes and last state, bit for bit."""
    _, make = spec
    neuron = make()
    x = torch.from_numpy(x)
    s_loop, _, st_loop = step_loop(neuron, x)
    assert s_loop.shape == x.shape and _binary(s_loop)
    with engine.using(native=use_native):
        s_fused, st_fused = neuron.multi_step(x)
    with engine.using(enabled=False):
        s_base, st_base = neuron.multi_step(x)
    for s, state in ((s_fused, st_fused), (s_base, st_base)):
        assert torch.equal(s, s_loop)
        assert type(state) is type(st_loop)
        for a, b in zip(state, st_loop):
            assert torch.equal(a, b)


@settings(max_examples=40, deadline=None)
@given(spec=neurons(), x=currents)
def test_every_neuron_follows_its_reset_rule(spec, x):
    """Step by step, from the state the neuron returns: the LIF family (lif, if, plif)
    spikes when V > vth (strict) and resets one step late, hard (V (1 - o) decay + x) or by
    subtraction ((V - vth o) decay + x); ALIF the same against its adapted threshold;
    Izhikevich resets V to c on the step it spikes and never holds V above the peak."""
    kind, make = spec
    neuron = make()
    x = torch.from_numpy(x)
    state = neuron.init_state(x.shape[1:])
    with torch.no_grad():
        for xt in x.unbind(0):
            s, new = neuron.step(xt, state)
            assert _binary(s)
            if kind in ("lif", "if", "plif"):
                v, vth, leak = state.v, neuron.vth, neuron.leak()
                last = (v - vth > 0).float()
                v_rule = v * (1 - last) * leak + xt if neuron.reset == "hard" else (v - vth * last) * leak + xt
                assert torch.equal(new.v, v_rule)
                assert torch.equal(s, (new.v - vth > 0).float())
            elif kind == "alif":
                v, a = state
                last = (v - (neuron.vth + neuron.beta * a) > 0).float()
                a_rule = neuron.rho * a + last
                assert torch.equal(new.a, a_rule)
                assert torch.equal(new.v, v * (1 - last) * neuron.decay + xt)
                assert torch.equal(s, (new.v - (neuron.vth + neuron.beta * a_rule) > 0).float())
            else:
                assert torch.equal(new.v[s == 1], torch.full_like(new.v[s == 1], float(neuron.c)))
                assert bool((new.v[s == 0] <= V_PEAK).all())
            state = new


@settings(max_examples=40, deadline=None)
@given(x=currents, decay=units)
def test_li_readout_integrates_without_spiking(x, decay):
    """The membrane readout's LI: V_t = decay V_{t-1} + x_t; multi_step equals the loop."""
    neuron = LI(decay)
    x = torch.from_numpy(x)
    out, _, st_loop = step_loop(neuron, x)
    v = torch.zeros(x.shape[1:])
    for t, xt in enumerate(x.unbind(0)):
        v = v * neuron.decay + xt
        assert torch.equal(out[t], v)
    s_multi, st_multi = neuron.multi_step(x)
    assert torch.equal(s_multi, out) and torch.equal(st_multi.v, st_loop.v)
