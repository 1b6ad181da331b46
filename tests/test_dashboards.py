"""TensorBoard dashboards: firing-rate scalars and histograms, the spike raster and
membrane traces of a fixed validation sample, HPARAMS with the final metrics."""

import contextlib
import io
from types import SimpleNamespace

import pytest
import torch

from helpers import TINY_RUN, train
from snn_lab.config import ConfigError, validate
from snn_lab.config.build import build_callbacks, to_dict
from snn_lab.lit.callbacks import SpikeDashboard

pytest.importorskip("matplotlib")


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accs = []
    for ev in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(ev), size_guidance={"images": 0, "histograms": 0, "scalars": 0, "tensors": 0})
        acc.Reload()
        accs.append(acc)
    return accs


def test_cli_run_logs_rasters_traces_histograms_and_hparams(tmp_path):
    r = train([*TINY_RUN, "trainer.max_epochs=2", "hydra.run.dir=run"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    accs = _events(tmp_path / "run")
    tags = {kind: set() for kind in ("images", "histograms", "scalars", "tensors")}
    for acc in accs:
        for kind in tags:
            tags[kind] |= set(acc.Tags().get(kind, []))
    assert {"spikes/raster", "spikes/membrane"} <= tags["images"], tags
    assert {"rates/layer0", "rates/layer1"} <= tags["histograms"], tags  # hidden + output layer
    assert {"rates/layer0", "rates/layer1", "hparams/best_val_acc", "hparams/test_acc"} <= tags["scalars"]
    assert any(t.startswith("spikes/sample") for t in tags["tensors"])  # the text legend

    from PIL import Image

    acc = next(a for a in accs if "spikes/raster" in a.Tags()["images"])
    for tag in ("spikes/raster", "spikes/membrane"):
        events = acc.Images(tag)
        assert len(events) == 2 and events[0].step < events[1].step  # one per epoch
        img = Image.open(io.BytesIO(events[-1].encoded_image_string))
        img.verify()
        assert img.format == "PNG" and img.size[0] >= 300 and img.size[1] >= 200
    # one histogram per validation epoch, over the 64 hidden neurons' rates in [0, 1]
    hist = acc.Histograms("rates/layer0")
    assert len(hist) == 2 and hist[-1].histogram_value.num == 64
    assert 0.0 <= hist[-1].histogram_value.min <= hist[-1].histogram_value.max <= 1.0

    # HPARAMS tab: the run's hyperparameters and the final-metric columns
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = {}
    for a in accs:
        with contextlib.suppress(KeyError):  # KeyError: this event file holds no HPARAMS summary
            content.update(a.PluginTagToContent("hparams"))
    assert "_hparams_/session_start_info" in content and "_hparams_/experiment" in content
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["neuron.vth"].number_value == pytest.approx(0.4)
    assert start.session_start_info.hparams["time_steps"].number_value == 4
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert {"hparams/best_val_acc", "hparams/test_acc"} <= {m.name.tag for m in exp.experiment.metric_infos}


@pytest.fixture
def small_net(tiny_net):
    """The default train config's network (layer mode, untouched weights), 32-16 hidden, T=6."""
    return tiny_net(hidden=(32, 16), time_steps=6, mode="layer", weight_scale=1.0, train=True)


def test_probe_is_the_same_sample_and_spikes_every_time_and_touches_no_rng(small_net):
    dash = SpikeDashboard(seed=3)
    image = torch.rand(1, 1, 28, 28)
    rng = torch.get_rng_state()
    a, b = dash.probe(small_net, image), dash.probe(small_net, image)
    assert torch.equal(torch.get_rng_state(), rng)  # the global stream is not consumed
    assert small_net.training  # mode restored
    assert [s.shape for s in a["spikes"]] == [(6, 784), (6, 32), (6, 16), (6, 10)]
    for x, y in zip(a["spikes"] + a["membrane"], b["spikes"] + b["membrane"]):
        assert torch.equal(x, y)
    assert a["spikes"][0].sum() > 0 and set(a["spikes"][0].unique().tolist()) <= {0.0, 1.0}
    # membranes line up with spikes: the tutorial's LIF fires when V > vth (strict)
    for spikes, mem, vth in zip(a["spikes"][1:], a["membrane"], a["vth"]):
        assert torch.equal(spikes, (mem > vth).float())
    # another seed draws other input spikes
    assert not torch.equal(SpikeDashboard(seed=4).probe(small_net, image)["spikes"][0], a["spikes"][0])
    # the probe runs the model's own step loop: same scores as forward_spikes on that train
    gen = torch.Generator().manual_seed(3)
    train_ = small_net.encode(image, generator=gen)
    small_net.eval()
    assert a["pred"] == int(small_net.forward_spikes(train_).argmax())


class _Writer:
    def __init__(self):
        self.images, self.texts = [], []

    def add_image(self, tag, img, global_step=None, dataformats="CHW"):
        self.images.append((tag, img, global_step, dataformats))

    def add_text(self, tag, text, global_step=None):
        self.texts.append((tag, text, global_step))


def _trainer(epoch, global_zero=True, max_epochs=3, writer=None):
    return SimpleNamespace(
        sanity_checking=False,
        is_global_zero=global_zero,
        current_epoch=epoch,
        max_epochs=max_epochs,
        global_step=10 * (epoch + 1),
        loggers=[SimpleNamespace(experiment=writer)] if writer else [],
    )


def test_callback_logs_every_n_epochs_and_last_on_rank_zero_only(small_net):
    writer = _Writer()
    module = SimpleNamespace(net=small_net)
    dash = SpikeDashboard(every_n_epochs=2, sample_index=1, neurons=3)
    batch = (torch.rand(4, 1, 28, 28), torch.tensor([3, 7, 1, 0]))
    # not rank 0: nothing is captured or logged
    dash.on_validation_batch_end(_trainer(0, global_zero=False), module, None, batch, 0)
    assert dash._sample is None
    for epoch in range(3):
        later = (torch.rand(4, 1, 28, 28), torch.tensor([5, 5, 5, 5]))
        dash.on_validation_batch_end(_trainer(epoch, writer=writer), module, None, batch if epoch == 0 else later, 0)
        dash.on_validation_batch_end(_trainer(epoch, writer=writer), module, None, later, 1)
        dash.on_validation_epoch_end(_trainer(epoch, writer=writer), module)
    # the sample of the first epoch (label 7) is kept; epochs 1 (every 2nd) and 2 (last) logged
    assert dash._sample[1] == 7
    steps = sorted({s for _, _, s, _ in writer.images})
    assert steps == [20, 30]
    assert {t for t, *_ in writer.images} == {"spikes/raster", "spikes/membrane"}
    for _, img, _, fmt in writer.images:
        assert fmt == "HWC" and img.dtype.name == "uint8" and img.ndim == 3 and img.shape[2] == 3
        assert img.min() < 50 and img.max() > 200  # drawn, not blank
    # membrane traces: 3 neurons per layer, the true class first in the output layer
    assert [len(p) for p in dash._picked] == [3, 3, 3] and dash._picked[-1][0] == 7
    assert "label 7" in writer.texts[0][1]


def test_config_switch_and_bad_values(compose_cfg, tmp_path):
    def names(*overrides):
        cbs = build_callbacks(to_dict(compose_cfg(overrides).callbacks), "val/acc", str(tmp_path))
        return [type(c).__name__ for c in cbs]

    assert "SpikeDashboard" in names()
    assert "SpikeDashboard" not in names("callbacks.dashboard.enabled=false")
    assert "SpikeDashboard" not in names("callbacks=none")
    with pytest.raises(ConfigError, match=r"callbacks\.dashboard\.neurons=0"):
        validate(compose_cfg(["callbacks.dashboard.neurons=0"]))  # at startup, before .hydra/ is written
