"""Every option of every config group composes, validates and instantiates."""

import re
from pathlib import Path

import pytest
import torch

from snn_lab.cli import CONFIG_DIR
from snn_lab.config import ConfigError, register_configs, validate
from snn_lab.config.build import build_datamodule, build_trainer, net_config
from snn_lab.lit.optim import build_lr_scheduler, build_optimizer
from snn_lab.models import build_network

register_configs()
GROUPS = [
    "data",
    "model",
    "neuron",
    "surrogate",
    "encoder",
    "readout",
    "optimizer",
    "lr_schedule",
    "target",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "hparams_search",
    "debug",
    "paths",
]


def options(group):
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


CASES = [(g, o) for g in GROUPS for o in options(g)]

#: what an option needs besides itself to make a runnable config: the sample shape and
#: classes of its data (validate checks the model against them), event frames for the
#: passthrough encoder, files for a user's own data set (tests/dataset_layouts.py)
COMPANIONS = {
    ("data", "cifar10"): ["model.input_shape=[3,32,32]"],
    ("data", "nmnist"): ["encoder=passthrough", "model.input_shape=[2,34,34]"],
    ("data", "dvs_gesture"): ["encoder=passthrough", "model.input_shape=[2,32,32]", "model.num_classes=11"],
    ("data", "shd"): ["encoder=passthrough", "model.input_shape=[700]", "model.num_classes=20"],
    ("encoder", "passthrough"): ["data=nmnist", "model.input_shape=[2,34,34]"],
    ("data", "idx"): ["model.input_shape=[1,28,28]"],
    ("data", "image_folder"): ["model.input_shape=[3,20,24]", "model.num_classes=3"],
}


def _companions(group: str, option: str, tmp_path: Path) -> list[str]:
    extra = list(COMPANIONS.get((group, option), []))
    if (group, option) in (("data", "idx"), ("data", "image_folder")):
        from dataset_layouts import write_idx_set, write_image_folder

        write_idx_set(tmp_path / "idx", 20, 10, gz=True)
        write_image_folder(tmp_path / "image_folder", per_class=2)
        extra.append(f"paths.data_dir={tmp_path}")
    if (group, option) == ("model", "nir"):  # a graph to read: the tutorial network's, written here
        from snn_lab.models import tutorial_network, write_nir

        write_nir(tutorial_network(), str(tmp_path / "g.nir"))
        extra.append(f"model.path={tmp_path / 'g.nir'}")
    return extra


def test_every_group_has_options():
    for g in GROUPS:
        assert options(g), g
    assert {"step", "cosine", "onecycle", "constant"} <= set(options("lr_schedule"))
    assert {"cpu", "gpu", "apu"} == set(options("target"))
    assert {"if", "lif", "plif", "alif", "izhikevich", "cuba"} == set(options("neuron"))


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_instantiates(group, option, tmp_path, compose_cfg):
    cfg = compose_cfg([f"{group}={option}", *_companions(group, option, tmp_path)])
    if group == "target" and option == "gpu" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            validate(cfg)
        return
    validate(cfg)
    net = build_network(net_config(cfg))
    T = cfg.time_steps
    frames = [T] if cfg.encoder.name == "passthrough" else []  # event data: [B, T, ...]
    images = torch.rand(2, *frames, *cfg.model.input_shape)
    out = net(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, cfg.model.num_classes) and torch.isfinite(out).all()
    opt = build_optimizer(cfg.optimizer, net.parameters())
    sched = build_lr_scheduler(cfg.lr_schedule, opt, cfg.trainer.max_epochs, 10)
    assert isinstance(sched["scheduler"], torch.optim.lr_scheduler.LRScheduler)
    assert build_datamodule(cfg.data) is not None
    if not (group == "target" and option == "gpu"):
        trainer = build_trainer(cfg, str(tmp_path), str(tmp_path / "ckpt"), cfg.monitor)
        assert trainer.max_epochs == (1 if cfg.trainer.fast_dev_run else cfg.trainer.max_epochs)
    assert T >= 1


def test_tutorial_experiment_is_the_tutorial_recipe(compose_cfg):
    c = compose_cfg(["experiment=tutorial_mnist"])
    assert (c.model.name, list(c.model.hidden), c.model.batch_norm, c.model.dropout) == ("mlp", [512, 512], False, 0.0)
    assert (c.neuron.name, c.neuron.vth, c.neuron.decay, c.neuron.reset) == ("lif", 0.4, 0.8, "hard")
    assert (c.surrogate.name, c.surrogate.width, c.encoder.name, c.readout.name) == (
        "rectangle",
        0.5,
        "bernoulli",
        "rate",
    )
    assert (c.time_steps, c.data.batch_size, c.seed, c.trainer.max_epochs) == (20, 200, 20231026, 30)
    assert (c.optimizer._target_, c.optimizer.lr, c.optimizer.momentum, c.optimizer.weight_decay) == (
        "torch.optim.SGD",
        0.02,
        0.9,
        1e-3,
    )
    assert (c.lr_schedule.name, c.lr_schedule.step_size, c.lr_schedule.gamma) == ("step", 10, 0.1)
    assert c.data.val_split == 0  # validates on the 10k test set every epoch, like the tutorial


def test_step_schedule_gives_the_tutorial_lr_list(compose_cfg):
    c = compose_cfg(["experiment=tutorial_mnist"])
    net = build_network(net_config(c))
    opt = build_optimizer(c.optimizer, net.parameters())
    sched = build_lr_scheduler(c.lr_schedule, opt, 30, 300)["scheduler"]
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.02] * 10 + [0.002] * 10 + [0.0002] * 10
    assert lrs == pytest.approx(expected)


@pytest.mark.parametrize(
    "override,key",
    [
        ("neuron.vth=-0.1", "neuron.vth"),
        ("neuron.decay=1.5", "neuron.decay"),
        ("time_steps=0", "time_steps"),
        ("data.batch_size=0", "data.batch_size"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("model.mode=fused", "model.mode"),
        ("model=conv model.pool=avg", "model.pool"),
        ("data.source=ftp", "data.source"),
        ("data.name=imagenet", "data.name"),
        ("trainer.max_epochs=abc", "trainer.max_epochs"),
        ("trainer.limit_train_batches=all", "trainer.limit_train_batches"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("surrogate.width=0", "surrogate.width"),
    ],
)
def test_validation_names_the_key(override, key, compose_cfg):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + "="):
        validate(compose_cfg(override.split()))


@pytest.mark.parametrize(
    "override,message",
    [
        ("+trainer.bogus=1", "trainer.bogus is not an argument of pytorch_lightning.Trainer"),
        ("+trainer.logger=true", "trainer.logger is set by the logger group"),
        ("+logger.mine.save_dir=x", "logger.mine="),
        ("+callbacks.extra.mine.every=1", "callbacks.extra.mine="),
        ("train=false", "ckpt_path=None is invalid: evaluation"),
        ("model.hidden=[1000000000]", "model: the network has 795,000,000,010 parameters"),  # nothing allocated
    ],
)
def test_validation_of_pass_through_sections_names_the_key(override, message, compose_cfg):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose_cfg([override]))


def test_trainer_arguments_pass_through_with_their_types(tmp_path, compose_cfg):
    cfg = compose_cfg(["trainer.limit_train_batches=1", "trainer.max_steps=500", "+trainer.profiler=simple"])
    validate(cfg)
    assert cfg.trainer.limit_train_batches == 1 and type(cfg.trainer.limit_train_batches) is int  # 1 batch, not 100%
    trainer = build_trainer(cfg, str(tmp_path), str(tmp_path / "ckpt"), cfg.monitor)
    assert trainer.max_steps == 500 and type(trainer.profiler).__name__ == "SimpleProfiler"
    assert trainer.limit_train_batches == 1
    cfg = compose_cfg(["trainer.fast_dev_run=5"])
    validate(cfg)
    assert cfg.trainer.fast_dev_run == 5 and type(cfg.trainer.fast_dev_run) is int  # 5 batches, not True
    assert build_trainer(cfg, str(tmp_path), str(tmp_path / "ckpt"), cfg.monitor).fast_dev_run == 5


def test_logger_none_builds_a_trainer_without_the_lr_monitor(tmp_path, compose_cfg):
    cfg = compose_cfg(["logger=none"])
    validate(cfg)
    trainer = build_trainer(cfg, str(tmp_path), str(tmp_path / "ckpt"), cfg.monitor)
    assert trainer.loggers == []
    assert not any(type(c).__name__ == "LearningRateMonitor" for c in trainer.callbacks)


def test_several_loggers_at_once(tmp_path, compose_cfg):
    cfg = compose_cfg(["logger=[tensorboard,csv]"])
    trainer = build_trainer(cfg, str(tmp_path), str(tmp_path / "ckpt"), cfg.monitor)
    assert sorted(type(lg).__name__ for lg in trainer.loggers) == ["CSVLogger", "TensorBoardLogger"]
    assert all(str(lg.save_dir) == str(tmp_path) for lg in trainer.loggers)


def test_a_user_config_dir_adds_options_to_any_group(tmp_path, compose_cfg):
    (tmp_path / "neuron").mkdir()
    (tmp_path / "neuron" / "fast_lif.yaml").write_text("_target_: snn_lab.neurons.LIF\nvth: 0.25\ndecay: 0.5\n")
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /neuron: fast_lif\ntime_steps: 3\n"
    )
    cfg = compose_cfg([f"hydra.searchpath=[file://{tmp_path}]", "experiment=mine", "model.hidden=[16]"])
    validate(cfg)
    net = build_network(net_config(cfg))
    neuron = net.layers[0].neuron
    assert type(neuron).__name__ == "LIF" and float(neuron.vth) == 0.25 and float(neuron.decay) == 0.5
    assert net.time_steps == 3
    assert compose_cfg([f"hydra.searchpath=[file://{tmp_path}]", "neuron=lif"]).neuron.name == "lif"  # built-ins stay


@pytest.mark.parametrize(
    "override,message",
    [
        ("+neuron._target_=nowhere.Neuron", "neuron._target_='nowhere.Neuron': module 'nowhere' cannot be imported"),
        ("+neuron._target_=snn_lab.neurons.Nope", "module 'snn_lab.neurons' has no attribute 'Nope'"),
        ("neuron.vth=-1", "neuron.vth=-1.0 is invalid"),
    ],
)
def test_a_wrong_target_names_the_key_and_the_class(override, message, compose_cfg):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose_cfg([override]))


def test_a_user_class_that_raises_is_one_line_naming_key_and_class(tmp_path, compose_cfg):
    cfg = compose_cfg(["+model._target_=snn_lab.models.SpikingMLP", "model.hidden=[0]"])
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert "model (snn_lab.models.SpikingMLP)" in str(e.value) and "\n" not in str(e.value)
