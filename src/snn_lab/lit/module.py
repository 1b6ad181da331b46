"""The LightningModule: builds its network from plain config dicts (so a checkpoint
rebuilds everything), trains with cross-entropy on the readout, logs accuracy, losses,
firing rates and, per validation epoch, NeuroBench's efficiency metrics counted from the
recorded spikes (``val/synops``, ``val/activation_sparsity``...; docs/EFFICIENCY.md).
Encoding randomness comes from a generator owned by the module whose state is saved in
checkpoints, so a resumed run draws the same spikes."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics

from ..errors import DataError, DivergedError
from ..models import SNNModel, build_network, upgrade_net_config
from ..models.efficiency import EfficiencyMeter, EnergyModel
from .optim import build_lr_scheduler, build_optimizer


class SNNLitModule(pl.LightningModule):
    def __init__(
        self,
        net: dict,
        optimizer: dict | None = None,
        lr_schedule: dict | None = None,
        seed: int = 0,
        efficiency: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        # a checkpoint from before a class default changed rebuilds as it was trained
        self.net: SNNModel = build_network(upgrade_net_config(net))
        eff = dict(efficiency or {})
        self.efficiency_enabled = bool(eff.pop("enabled", True))
        self.energy = EnergyModel(**eff)  # ac_pj, mac_pj
        self._meter: EfficiencyMeter | None = None
        #: the summary of the latest validation epoch, and the headline figures of every
        #: epoch (both saved in checkpoints: best.ckpt holds the figures of its own weights)
        self.efficiency: dict | None = None
        self.efficiency_history: list[dict] = []
        num_classes = net["model"].get("num_classes", 10)
        self.metrics = torch.nn.ModuleDict(
            {
                stage: torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")
                for stage in ("train_acc", "val_acc", "test_acc")
            }
        )
        # the epoch's training loss as a metric, so DDP reduces it over all ranks
        self.train_loss = torchmetrics.MeanMetric()
        self._gen: torch.Generator | None = None
        self._gen_state: torch.Tensor | None = None

    # -- randomness for the encoder ------------------------------------------------------
    @property
    def generator(self) -> torch.Generator:
        device = self.device
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(int(self.hparams["seed"]) + 7919 * self.global_rank)
            if self._gen_state is not None:
                self._gen.set_state(self._gen_state)
                self._gen_state = None
        return self._gen

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Both random streams, so a resumed run continues them exactly (dropout and
        # other global-RNG users, and the encoder's spikes): this rank's at the top level
        # (rank 0's is the one written), and under DDP every rank's in
        # ``rank_rng_states[rank]``. Lightning calls this hook on every rank (it writes
        # rank 0's dict only), so the states are gathered here.
        own = {"encoder_rng_state": self.generator.get_state(), "torch_rng_state": torch.get_rng_state()}
        if self.device.type == "cuda":  # dropout on a GPU draws from that device's generator
            own["cuda_rng_state"] = torch.cuda.get_rng_state(self.device)
        checkpoint.update(own)
        if self.efficiency is not None:
            checkpoint["efficiency"] = self.efficiency
            checkpoint["efficiency_history"] = self.efficiency_history
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            per_rank: list[dict | None] = [None] * world
            torch.distributed.all_gather_object(per_rank, own)
            checkpoint["rank_rng_states"] = per_rank

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint
        per_rank = checkpoint.get("rank_rng_states")
        world = self.trainer.world_size if self._trainer is not None else 1
        if per_rank and len(per_rank) == world and self.global_rank < world:  # same world size: this rank's
            states = per_rank[self.global_rank]
        state = states.get("encoder_rng_state")
        if state is not None:
            self._gen, self._gen_state = None, state
        # restored at train start: Lightning seeds and builds loaders after loading
        self._pending_torch_rng = states.get("torch_rng_state")
        self._pending_cuda_rng = states.get("cuda_rng_state")
        if checkpoint.get("efficiency") is not None:
            self.efficiency = checkpoint["efficiency"]
            self.efficiency_history = list(checkpoint.get("efficiency_history") or [])

    def on_train_start(self) -> None:
        state = getattr(self, "_pending_torch_rng", None)
        if state is not None:
            torch.set_rng_state(state)
            self._pending_torch_rng = None
        cuda_state = getattr(self, "_pending_cuda_rng", None)
        if cuda_state is not None and self.device.type == "cuda":  # (resumed on a CPU: not needed)
            torch.cuda.set_rng_state(cuda_state, self.device)
            self._pending_cuda_rng = None

    # -- steps --------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, return_record: bool = False):
        return self.net(images, generator=self.generator, return_record=return_record)

    def _shared(self, batch, stage: str, record: bool = False, batch_idx: int = 0):
        images, labels = batch
        if torch.is_floating_point(images) and not bool(torch.isfinite(images).all()):
            # a bad dataset fails here, naming it, not as a non-finite loss steps later
            dm = getattr(self._trainer, "datamodule", None)  # set by fit/test, not declared on Trainer
            where = f"{type(dm).__module__}.{type(dm).__qualname__}" if dm is not None else "the dataset"
            raise DataError(
                f"data ({where}): {stage} batch {batch_idx} holds a non-finite pixel (NaN/Inf); "
                "fix the dataset or its transforms"
            )
        if record:  # the input train too, for the efficiency counts (= self(images, return_record=True))
            train = self.net.encode(images, generator=self.generator)
            scores, rec = self.net.forward_spikes(train, return_record=True)
            if self._meter is not None:
                declared = bool(getattr(self.net.encoder, "binary", False)) or None
                self._meter.update(train, rec, input_binary=declared)
        else:
            scores, rec = self(images), None
        loss = F.cross_entropy(scores, labels)
        if not torch.isfinite(loss):
            raise DivergedError(
                f"non-finite {stage} loss ({loss.item()}) at global step {self.global_step}; "
                "lower optimizer.lr or enable trainer.gradient_clip_val"
            )
        acc = self.metrics[f"{stage}_acc"]
        assert isinstance(acc, torchmetrics.Metric)  # ModuleDict items are typed as Module
        acc(scores.detach(), labels)
        if stage == "train":
            # per step: this rank's value (syncing every step would cost a collective);
            # per epoch: the sample-weighted mean over every rank's batches
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, batch_size=len(labels))
            self.train_loss(loss.detach(), len(labels))
            self.log("train/loss_epoch", self.train_loss, on_step=False, on_epoch=True)
        else:
            self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(labels), sync_dist=True)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss, rec

    def training_step(self, batch, batch_idx):
        return self._shared(batch, "train", batch_idx=batch_idx)[0]

    # -- efficiency (docs/EFFICIENCY.md) -------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        # a new meter per epoch: fan-outs follow the weights; the sanity check is not counted
        sanity = self._trainer is not None and self.trainer.sanity_checking
        self._meter = EfficiencyMeter(self.net, self.energy) if self.efficiency_enabled and not sanity else None

    def on_validation_epoch_end(self) -> None:
        meter, self._meter = self._meter, None
        if meter is None:
            return
        if self._trainer is not None and self.trainer.world_size > 1:  # every rank's batches
            meter.set_counts(self.trainer.strategy.reduce(meter.counts, reduce_op="sum"))
        if meter.samples == 0:
            return
        summary = meter.summary()
        summary.update(epoch=int(self.current_epoch), global_step=int(self.global_step))
        self.efficiency = summary
        self.efficiency_history.append(
            {
                "epoch": summary["epoch"],
                "step": summary["global_step"],
                "synops": summary["synops"],
                "effective_acs": summary["effective_acs"],
                "effective_macs": summary["effective_macs"],
                "activation_sparsity": summary["activation_sparsity"],
                "energy_pj": summary["energy"]["pj_per_sample"],
            }
        )
        # identical on every rank after the reduction above (sync_dist: their mean, the same)
        scalars = {
            "val/synops": summary["synops"],
            "val/synops_acs": summary["effective_acs"],
            "val/synops_macs": summary["effective_macs"],
            "val/energy_pj": summary["energy"]["pj_per_sample"],
            "val/connection_sparsity": summary["connection_sparsity"],
        }
        if summary["activation_sparsity"] is not None:
            scalars["val/activation_sparsity"] = summary["activation_sparsity"]
        for layer in summary["layers"]:
            i = layer["layer"]
            scalars[f"val/synops/layer{i}"] = layer["synops"]
            if layer["activation_sparsity"] is not None:
                scalars[f"val/activation_sparsity/layer{i}"] = layer["activation_sparsity"]
        for name, value in scalars.items():
            self.log(name, float(value), on_step=False, on_epoch=True, sync_dist=True)

    def validation_step(self, batch, batch_idx):
        _, rec = self._shared(batch, "val", record=True, batch_idx=batch_idx)
        for i, rate in enumerate(rec.firing_rates()):
            self.log(f"rates/layer{i}", rate, on_step=False, on_epoch=True, batch_size=len(batch[1]), sync_dist=True)
        return rec

    def test_step(self, batch, batch_idx):
        self._shared(batch, "test", batch_idx=batch_idx)

    def on_before_optimizer_step(self, optimizer) -> None:
        for name, p in self.named_parameters():
            if p.grad is not None and not torch.isfinite(p.grad).all():
                raise DivergedError(
                    f"non-finite gradient in {name} at global step {self.global_step}; "
                    "lower optimizer.lr or enable trainer.gradient_clip_val"
                )

    def configure_optimizers(self):
        optimizer = build_optimizer(self.hparams["optimizer"], self.parameters())
        if not self.hparams["lr_schedule"]:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        max_epochs = self.trainer.max_epochs if self._trainer is not None else 1
        sched = build_lr_scheduler(self.hparams["lr_schedule"], optimizer, max_epochs, total)
        return {"optimizer": optimizer, "lr_scheduler": sched}
