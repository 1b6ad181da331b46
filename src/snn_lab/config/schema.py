"""Typed config schemas (Hydra structured configs).

Every YAML option under ``conf/<group>/`` extends one of the dataclasses below through
its defaults list (``- lif_schema``), so a wrong type (``neuron.vth=abc``,
``time_steps=2.5``) fails when Hydra composes, naming the full key. Ranges that a type
cannot express (``time_steps >= 1``...) are checked by :func:`snn_lab.config.validate`
before any data is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ..engine.options import EngineOptions


# -- neurons ----------------------------------------------------------------------------
@dataclass
class NeuronConf:
    name: str = MISSING


@dataclass
class LIFConf(NeuronConf):
    name: str = "lif"
    vth: float = 0.4
    decay: float = 0.8
    reset: str = "hard"
    detach_reset: bool = False
    learn_vth: bool = False
    learn_decay: bool = False


@dataclass
class IFConf(NeuronConf):
    name: str = "if"
    vth: float = 0.4
    reset: str = "hard"
    detach_reset: bool = False
    learn_vth: bool = False


@dataclass
class PLIFConf(NeuronConf):
    name: str = "plif"
    vth: float = 0.4
    decay: float = 0.8
    reset: str = "hard"
    detach_reset: bool = False
    learn_vth: bool = False


@dataclass
class ALIFConf(NeuronConf):
    name: str = "alif"
    vth: float = 0.4
    decay: float = 0.8
    beta: float = 0.2
    rho: float = 0.95
    learn_vth: bool = False
    learn_decay: bool = False


@dataclass
class IzhikevichConf(NeuronConf):
    name: str = "izhikevich"
    a: float = 0.02
    b: float = 0.2
    c: float = -65.0
    d: float = 8.0
    dt: float = 1.0
    substeps: int = 2
    gain: float = 20.0


@dataclass
class CubaLIFConf(NeuronConf):
    name: str = "cuba"
    vth: float = 0.4
    alpha: float = 0.5  # synaptic current decay
    beta: float = 0.8  # membrane decay
    reset: str = "hard"
    detach_reset: bool = False
    learn_vth: bool = False
    learn_alpha: bool = False
    learn_beta: bool = False


# -- surrogate, encoder, readout --------------------------------------------------------
@dataclass
class SurrogateConf:
    name: str = "rectangle"
    width: float | None = None  # None: the surrogate's default (rectangle: 0.5)


@dataclass
class EncoderConf:
    name: str = "bernoulli"


@dataclass
class LatencyEncoderConf(EncoderConf):
    name: str = "latency"
    threshold: float = 0.0


@dataclass
class PhaseEncoderConf(EncoderConf):
    name: str = "phase"
    bits: int = 8


@dataclass
class PopulationEncoderConf(EncoderConf):
    name: str = "population"
    size: int = 4
    sigma: float | None = None


@dataclass
class PassthroughEncoderConf(EncoderConf):
    """Event frames from the data ([B, T, ...]) become the input train [T, B, ...] as they are."""

    name: str = "passthrough"
    binary: bool = False  # true: clip the event counts to spikes (count > 0 -> 1)


@dataclass
class ReadoutConf:
    name: str = "rate"
    out_decay: float = 0.8  # leak of the LI output layer (membrane readout)


# -- model ------------------------------------------------------------------------------
@dataclass
class ModelConf:
    name: str = MISSING
    input_shape: list[int] = field(default_factory=lambda: [1, 28, 28])
    num_classes: int = 10
    mode: str = "layer"  # layer: multi-step engine; step: time outermost (the tutorial's loop); same spikes


@dataclass
class MLPConf(ModelConf):
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [512, 512])
    batch_norm: bool = False
    dropout: float = 0.0
    bias: bool = True


@dataclass
class ConvConf(ModelConf):
    name: str = "conv"
    channels: list[int] = field(default_factory=lambda: [32, 64])
    fc: int = 256
    dropout: float = 0.2
    pool: str = "current"  # current: pool before the neuron (cheaper) | spikes: after it
    pool_kind: str = "max"  # max | avg (NIR has no max-pool node: only avg exports to NIR)


@dataclass
class RSNNConf(ModelConf):
    name: str = "rsnn"
    hidden: list[int] = field(default_factory=lambda: [128])  # recurrent hidden layers
    bias: bool = True


@dataclass
class NIRModelConf(ModelConf):
    """A network read from a NIR graph file (docs/INTEROP.md): its layers and neurons are
    the graph's; the neuron group gives only the surrogate for training."""

    name: str = "nir"
    path: str = MISSING  # the .nir file (snn_lab's, snnTorch's, Norse's ...)
    dt: float | None = None  # Euler step the graph was made for; None: its metadata's, else 1e-4
    # input_shape: as many values as the graph's input (its shape is used); num_classes: its output size


# -- data (docs/DATASETS.md) ------------------------------------------------------------
@dataclass
class LoaderConf:
    """What every built-in data option shares: the splits, subsets and loaders."""

    name: str = MISSING
    batch_size: int = 200
    eval_batch_size: int = 1000
    val_split: int = 5000  # samples held out of train for validation; 0: validate on test
    train_subset: int | None = None
    eval_subset: int | None = None
    num_workers: int = 0
    split_seed: int = 0


@dataclass
class ImageDataConf(LoaderConf):
    """Static images: uint8 in the loader; scaled, augmented and normalised on the device."""

    augment: str = "none"  # none | shift (random translation) | flip (horizontal) | crop_flip (both) | affine | elastic
    max_shift: int = 2  # shift, crop_flip, affine: up to this many pixels (shift: a crop of the zero-padded image)
    max_rotate: float = 10.0  # affine: rotation up to this many degrees either way
    max_scale: float = 0.1  # affine: scaling by a factor in [1 - max_scale, 1 + max_scale]
    elastic_alpha: float = 34.0  # elastic (affine + elastic distortion): displacement scale, pixels
    elastic_sigma: float = 4.0  # elastic: smoothing of the displacement field (Gaussian std), pixels
    normalize: bool = False  # (x - mean) / std per channel, after scaling to [0, 1]
    mean: list[float] | None = None  # null: measured on the training split at setup
    std: list[float] | None = None


@dataclass
class DataConf(ImageDataConf):
    """MNIST (``data=mnist``)."""

    name: str = "mnist"
    source: str = "bundled"  # bundled | download | dir
    root: str | None = "${paths.data_dir}/mnist"  # download cache / directory of IDX files


@dataclass
class FashionMNISTConf(ImageDataConf):
    name: str = "fashion_mnist"
    root: str = "${paths.data_dir}"  # torchvision's layout: <root>/FashionMNIST/raw/
    download: bool = False  # fetch it with torchvision (MD5-checked)
    verify: bool = True  # check the .gz files against torchvision's MD5 sums at every load


@dataclass
class CIFAR10Conf(ImageDataConf):
    name: str = "cifar10"
    root: str = "${paths.data_dir}"  # <root>/cifar-10-batches-py/
    download: bool = False
    verify: bool = True  # check each batch file against torchvision's MD5 sums
    augment: str = "crop_flip"
    max_shift: int = 4
    normalize: bool = True


@dataclass
class IDXDataConf(ImageDataConf):
    """A user's own IDX files (parsed and shape-checked, not hash-checked)."""

    name: str = "idx"
    root: str = "${paths.data_dir}/idx"
    train_images: str = "train-images-idx3-ubyte"  # each: plain or .gz
    train_labels: str = "train-labels-idx1-ubyte"
    test_images: str = "t10k-images-idx3-ubyte"
    test_labels: str = "t10k-labels-idx1-ubyte"
    num_classes: int | None = None  # null: max training label + 1
    val_split: int = 0


@dataclass
class ImageFolderConf(ImageDataConf):
    """torchvision's ImageFolder layout: <root>/<train_dir>/<class>/*.png, <root>/<test_dir>/<class>/*."""

    name: str = "image_folder"
    root: str = "${paths.data_dir}/image_folder"
    train_dir: str = "train"
    test_dir: str = "test"
    grayscale: bool = False  # one channel; else RGB
    size: list[int] | None = None  # [H, W] to resize to; null: all images must share one size
    val_split: int = 0


@dataclass
class EventDataConf(LoaderConf):
    """Event data through tonic, binned into frames of event counts, cached on disk."""

    root: str = "${paths.data_dir}"  # tonic's layout: <root>/NMNIST, <root>/DVSGesture, <root>/SHD
    download: bool = False  # let tonic download it
    bins: str = "time"  # time | events (equal durations | event counts) | window | count (time_window | event_count)
    frames: int = "${time_steps}"  # type: ignore[assignment]  # frames per sample = the network's time steps
    time_window: float = 1000.0  # microseconds per frame (bins=window)
    event_count: int = 1000  # events per frame (bins=count)
    downsample: int = 1  # divide the event coordinates (channels for SHD) by this
    cache: bool = True  # keep each sample's frames on disk, keyed by the binning parameters
    cache_dir: str | None = None  # null: <root>/frames_cache


@dataclass
class NMNISTConf(EventDataConf):
    name: str = "nmnist"


@dataclass
class DVSGestureConf(EventDataConf):
    name: str = "dvs_gesture"
    val_split: int = 100
    downsample: int = 4  # 128x128 -> 32x32


@dataclass
class SHDConf(EventDataConf):
    name: str = "shd"
    val_split: int = 800


# -- optimisation -----------------------------------------------------------------------
@dataclass
class OptimizerConf:
    _target_: str = MISSING
    lr: float = 0.02
    weight_decay: float = 0.0


@dataclass
class SGDConf(OptimizerConf):
    """The tutorial's optimizer: SGD, momentum 0.9, weight decay 1e-3."""

    _target_: str = "torch.optim.SGD"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-3


@dataclass
class AdamConf(OptimizerConf):
    _target_: str = "torch.optim.Adam"
    lr: float = 1e-3


@dataclass
class AdamWConf(OptimizerConf):
    _target_: str = "torch.optim.AdamW"
    lr: float = 1e-3
    weight_decay: float = 1e-2


@dataclass
class LRScheduleConf:
    _target_: str = MISSING
    name: str = MISSING
    interval: str = "epoch"  # epoch | step


@dataclass
class StepLRConf(LRScheduleConf):
    _target_: str = "torch.optim.lr_scheduler.StepLR"
    name: str = "step"
    step_size: int = 10
    gamma: float = 0.1


@dataclass
class CosineLRConf(LRScheduleConf):
    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    name: str = "cosine"
    T_max: int | None = None  # None: trainer.max_epochs
    eta_min: float = 0.0


@dataclass
class OneCycleLRConf(LRScheduleConf):
    _target_: str = "torch.optim.lr_scheduler.OneCycleLR"
    name: str = "onecycle"
    interval: str = "step"
    max_lr: float | None = None  # None: optimizer.lr
    pct_start: float = 0.25
    div_factor: float = 25.0
    final_div_factor: float = 1e4


@dataclass
class ConstantLRConf(LRScheduleConf):
    _target_: str = "torch.optim.lr_scheduler.ConstantLR"
    name: str = "constant"
    factor: float = 1.0
    total_iters: int = 0


# -- execution --------------------------------------------------------------------------
@dataclass
class TargetConf:
    name: str = "cpu"
    accelerator: str = "cpu"
    devices: Any = 1
    precision: str = "32-true"
    deploy_backend: str = "onnxruntime"  # what the deploy stage uses for this target
    threads: int | None = None  # torch intra-op threads on CPU (None: torch's default)


# -- deploy backends (conf/backend/*.yaml): the backend's registry name and its compile
# options; each backend's default_options equal these (tests/test_deploy_cli.py)
@dataclass
class BackendConf:
    """Any registered backend (a plug-in's: ``backend=custom backend.name=<name>``); its
    ``options`` are checked by the backend itself."""

    name: str = MISSING
    options: Any = field(default_factory=dict)


@dataclass
class EagerOptions:
    threads: int | None = None  # torch intra-op threads (None: leave)


@dataclass
class EagerBackendConf(BackendConf):
    name: str = "eager"
    options: EagerOptions = field(default_factory=EagerOptions)


@dataclass
class TorchScriptOptions:
    freeze: bool = True
    threads: int | None = None


@dataclass
class TorchScriptBackendConf(BackendConf):
    name: str = "torchscript"
    options: TorchScriptOptions = field(default_factory=TorchScriptOptions)


@dataclass
class OnnxRuntimeOptions:
    threads: int | None = 2  # intra-op threads (None: ORT's default)
    opset: int = 18
    optimization: str = "all"  # disable | basic | extended | all
    io_binding: bool = True
    spinning: bool = True  # ORT worker threads spin between steps (lower latency)
    input_dtype: str = "auto"  # encode=host: auto = uint8 for spikes (exact 0/1), float32 for analog inputs
    save_optimized: bool = False  # also write the ORT-optimised graph (step.ort.onnx)
    providers: list[str] | None = None  # ORT execution providers in order; None: CUDA/TensorRT if offered, then CPU


@dataclass
class OnnxRuntimeBackendConf(BackendConf):
    name: str = "onnxruntime"
    options: OnnxRuntimeOptions = field(default_factory=OnnxRuntimeOptions)


@dataclass
class AotiOptions:
    threads: int | None = None  # torch intra-op threads (None: leave)
    input_dtype: str = "auto"  # as onnxruntime's
    cxx: str | None = None  # C++ compiler; None: Inductor's (g++)


@dataclass
class AotiBackendConf(BackendConf):
    name: str = "aoti"
    options: AotiOptions = field(default_factory=AotiOptions)


@dataclass
class SparseOptions:
    threads: int = 2  # threads splitting the batch (the caller is one of them)
    cc: str | None = None  # C compiler; None: $CC, cc, gcc or clang
    march_native: bool = True  # -march=native (falls back to generic flags if it fails)


@dataclass
class SparseBackendConf(BackendConf):
    name: str = "sparse"
    options: SparseOptions = field(default_factory=SparseOptions)


@dataclass
class LynxiOptions:
    device_id: int = 0
    version: int = 0  # lyngor compile version flag (the tutorial's --v)
    op_plugin: str | None = None  # module registering lyngor converters for snn_lab::state_load/save/sink


@dataclass
class LynxiBackendConf(BackendConf):
    name: str = "lynxi"
    options: LynxiOptions = field(default_factory=LynxiOptions)


@dataclass
class NirOptions:
    dt: float = 1e-4  # the Euler step the graph is written for (docs/INTEROP.md)
    client: str = "snn_lab"  # who runs step.nir: snn_lab | snntorch | norse


@dataclass
class NirBackendConf(BackendConf):
    name: str = "nir"
    options: NirOptions = field(default_factory=NirOptions)


@dataclass
class SpikeDashboardConf:
    """TensorBoard spike raster + membrane traces of one fixed validation sample."""

    enabled: bool = True
    every_n_epochs: int = 1  # and always after the last epoch
    sample_index: int = 0  # which image of the first validation batch
    neurons: int = 4  # membrane traces per layer
    max_raster_neurons: int = 1024  # wider layers show this many, evenly spaced
    seed: int = 0  # the sample's own encoder generator (same input spikes every epoch)


@dataclass
class CallbacksConf:
    checkpoint: bool = True
    every_n_train_steps: int | None = None  # also checkpoint 'last' every N steps
    lr_monitor: bool = True  # when there is a logger to log to
    progress_bar: str = "tqdm"  # tqdm | rich | none
    early_stopping_patience: int | None = None
    # an exponential moving average of the weights (and BatchNorm statistics), updated every
    # optimizer step: validation, best.ckpt, testing and deploy use the averaged weights
    ema_decay: float | None = None
    dashboard: SpikeDashboardConf = field(default_factory=SpikeDashboardConf)
    # more Lightning callbacks: name -> {_target_: package.Class, ...its arguments}
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class EfficiencyConf:
    """NeuroBench's efficiency metrics per validation epoch and in metrics.json
    (docs/EFFICIENCY.md), and the energy per synaptic operation of the arithmetic-energy
    estimate (Horowitz, ISSCC 2014, 45 nm, 32-bit float: add 0.9 pJ, multiply 3.7 pJ)."""

    enabled: bool = True
    ac_pj: float = 0.9  # one accumulate (spike input): a float add
    mac_pj: float = 4.6  # one multiply-accumulate (analog input): a float multiply + add


@dataclass
class PathsConf:
    """Where data and outputs go; moving ``root_dir`` moves both."""

    root_dir: str = "."
    data_dir: str = "${paths.root_dir}/data"  # datasets that are downloaded or read from disk
    log_dir: str = "${paths.root_dir}/outputs"  # run and sweep directories


@dataclass
class TrainConf:
    """The root of ``snn-train`` / ``python -m snn_lab.train``.

    The component groups are typed ``Any`` so that a user's option (a ``_target_`` class
    with keys of its own) composes; the built-in options extend their own schemas (the
    dataclasses above) through their defaults lists, so their keys stay typed. The
    ``trainer`` section is passed to ``pytorch_lightning.Trainer`` as is: any argument of
    its constructor, checked against its signature by :func:`snn_lab.config.validate`.
    """

    data: Any = MISSING
    model: Any = MISSING
    neuron: Any = MISSING
    surrogate: Any = MISSING
    encoder: Any = MISSING
    readout: Any = MISSING
    optimizer: Any = MISSING
    lr_schedule: Any = MISSING
    target: TargetConf = MISSING
    trainer: Any = MISSING
    logger: Any = field(default_factory=dict)  # name -> {_target_: a Lightning logger, ...}; {}: none
    callbacks: CallbacksConf = MISSING
    paths: PathsConf = MISSING
    deploy: str | None = None  # a deploy backend (or auto: target's): after training, deploy + verify
    deploy_batch_size: int = 28
    time_steps: int = 20
    seed: int = 20231026
    task_name: str = "train"
    tags: list[str] = field(default_factory=list)  # passed to every logger that takes tags; in metrics.json
    monitor: str = "val/acc"
    efficiency: EfficiencyConf = field(default_factory=EfficiencyConf)
    # how model.mode=layer runs (docs/BENCHMARKS.md): matmul/conv strategies, native kernels,
    # the LIF scan, and where Bernoulli input is drawn (kernel: faster, another random stream)
    engine: EngineOptions = field(default_factory=EngineOptions)
    # what main() returns to a sweeper: [] the best monitored value; else these metrics.json
    # values, in order (a multi-objective search, e.g. [best_val_acc, efficiency.synops])
    objectives: list[str] = field(default_factory=list)
    # a .ckpt to resume from (train) or to evaluate (train=false); 'last': the run dir's
    # checkpoints/last.ckpt (must exist); 'auto': last.ckpt when it exists, else start fresh,
    # and a finished run (metrics.json) is reported, not retrained (docs/SWEEPS.md)
    ckpt_path: str | None = None
    train: bool = True  # false: only evaluate ckpt_path on the test set (snn-eval)
    test: bool = True  # evaluate the best checkpoint on the test set after fitting
    print_config: bool = True  # print the composed config as a tree at start
    matmul_precision: str = "highest"


_GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "neuron": {
        "lif": LIFConf,
        "if": IFConf,
        "plif": PLIFConf,
        "alif": ALIFConf,
        "izhikevich": IzhikevichConf,
        "cuba": CubaLIFConf,
    },
    "surrogate": {"surrogate": SurrogateConf},
    "encoder": {
        "encoder": EncoderConf,
        "latency": LatencyEncoderConf,
        "phase": PhaseEncoderConf,
        "population": PopulationEncoderConf,
        "passthrough": PassthroughEncoderConf,
    },
    "readout": {"readout": ReadoutConf},
    "model": {"mlp": MLPConf, "conv": ConvConf, "rsnn": RSNNConf, "nir": NIRModelConf},
    "data": {
        "mnist": DataConf,
        "fashion_mnist": FashionMNISTConf,
        "cifar10": CIFAR10Conf,
        "idx": IDXDataConf,
        "image_folder": ImageFolderConf,
        "nmnist": NMNISTConf,
        "dvs_gesture": DVSGestureConf,
        "shd": SHDConf,
    },
    "optimizer": {"sgd": SGDConf, "adam": AdamConf, "adamw": AdamWConf},
    "lr_schedule": {"step": StepLRConf, "cosine": CosineLRConf, "onecycle": OneCycleLRConf, "constant": ConstantLRConf},
    "target": {"target": TargetConf},
    "callbacks": {"callbacks": CallbacksConf},
    "paths": {"paths": PathsConf},
    "backend": {
        "backend": BackendConf,
        "eager": EagerBackendConf,
        "torchscript": TorchScriptBackendConf,
        "onnxruntime": OnnxRuntimeBackendConf,
        "aoti": AotiBackendConf,
        "sparse": SparseBackendConf,
        "lynxi": LynxiBackendConf,
        "nir": NirBackendConf,
    },
}


def register_configs() -> None:
    """Store the schemas: ``<group>/<name>_schema`` for the YAML options to extend."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConf)
    for group, schemas in _GROUP_SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=group, name=f"{name}_schema", node=node)
