"""DDP under Hydra: ``trainer=ddp`` on one machine (gloo on CPU, nccl on GPUs) and on
SLURM (``hydra/launcher=submitit_slurm``, one task per device).

Lightning's ``strategy="ddp"`` starts ranks 1..N-1 by re-running the script
(``sys.argv``) with ``hydra.run.dir=<hydra.run.dir>``. Under Hydra that is wrong in
three ways, which :class:`HydraDDPStrategy` fixes:

* in a multirun the children re-run the whole sweep (``-m`` and the sweep lists are in
  ``sys.argv``) and write into ``hydra.run.dir`` (``outputs/.../runs/<now>``) instead of
  the job's directory;
* under the joblib or submitit launchers ``sys.argv``/``__main__`` are the worker's, not
  ``python -m snn_lab.train``;
* after a multirun job the launching process keeps ``LOCAL_RANK``/``MASTER_PORT`` and
  an initialised process group, so the next job would not start its children and would
  wait for them forever.

Here every child runs ``python -m snn_lab.train <this job's task overrides>
hydra.run.dir=<this job's output dir> hydra.mode=RUN``: the exact config of the job,
in the same directory, as a single run. A new trainer in a process that launched
children before first tears the old process group down and clears those variables.

When the cluster starts the processes itself (SLURM ``srun``/submitit,
``torchrun``), Lightning's cluster environment says so and nothing is launched.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

log = logging.getLogger(__name__)

#: The Hydra app the children re-run (the module of ``python -m``).
ENTRY_MODULE = "snn_lab.train"
# Set (to the launcher's pid) in a process that has launched DDP children.
_MARK = "SNN_LAB_DDP_LAUNCHER_PID"
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", _MARK)


def _quote(value: str) -> str:
    """A Hydra override value that parses back to exactly ``value``."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def hydra_child_command(local_rank: int, entry_module: str = ENTRY_MODULE) -> tuple[list[str], str]:
    """The command line (and cwd) that starts rank ``local_rank`` of the current Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hc = HydraConfig.get()
    cmd = [sys.executable, "-m", entry_module]
    if hc.job.config_name:
        cmd += ["--config-name", hc.job.config_name]
    for source in hc.runtime.config_sources:
        if source.provider == "command-line" and source.schema == "file":
            cmd += ["--config-dir", source.path]
    cmd += list(hc.overrides.task)
    cmd += [
        f"hydra.run.dir={_quote(hc.runtime.output_dir)}",
        "hydra.mode=RUN",
        "hydra.output_subdir=null",
        f"hydra.job.name={hc.job.name}_ddp_process_{local_rank}",
    ]
    return cmd, get_original_cwd()


def _release_previous_launch() -> None:
    """This process launched children for an earlier trainer (a previous multirun job):
    drop its process group and DDP variables so this trainer starts its own."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key in _DDP_ENV:
        os.environ.pop(key, None)


class HydraSubprocessLauncher(_SubprocessScriptLauncher):
    """Lightning's script launcher with children started by :func:`hydra_child_command`
    (falls back to Lightning's plain command outside a Hydra app)."""

    def __init__(self, *args, entry_module: str = ENTRY_MODULE, **kwargs):
        super().__init__(*args, **kwargs)
        self.entry_module = entry_module

    def launch(self, function, *args, trainer=None, **kwargs):
        if not self.procs and os.environ.get(_MARK) == str(os.getpid()):
            _release_previous_launch()
        return super().launch(function, *args, trainer=trainer, **kwargs)

    def _call_children_scripts(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return super()._call_children_scripts()
        self._check_can_spawn_children()
        self.procs = []
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        os.environ[_MARK] = str(os.getpid())
        for local_rank in range(1, self.num_processes):
            child_env = os.environ.copy()
            child_env["LOCAL_RANK"] = str(local_rank)
            child_env.pop(_MARK, None)
            command, cwd = hydra_child_command(local_rank, self.entry_module)
            log.info("DDP: starting local rank %d: %s", local_rank, " ".join(command))
            self.procs.append(subprocess.Popen(command, env=child_env, cwd=cwd))


class HydraDDPStrategy(DDPStrategy):
    """``strategy="ddp"`` whose child processes are correct under Hydra (see module doc)."""

    def __init__(self, *args, entry_module: str = ENTRY_MODULE, **kwargs):
        super().__init__(*args, **kwargs)
        self.entry_module = entry_module

    def _configure_launcher(self) -> None:
        if self._start_method == "popen":
            assert self.cluster_environment is not None
            self._launcher = HydraSubprocessLauncher(
                self.cluster_environment, self.num_processes, self.num_nodes, entry_module=self.entry_module
            )
        else:
            super()._configure_launcher()


def build_strategy(name: str):
    """The Trainer's ``strategy`` for a config name: ``ddp`` -> :class:`HydraDDPStrategy`
    (process group backend chosen by Lightning: gloo on CPU, nccl on CUDA)."""
    if name == "ddp":
        return HydraDDPStrategy()
    return name
