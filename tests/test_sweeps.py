"""Sweeps: parallel local jobs (joblib launcher), Optuna search, the SLURM launcher
preset, summary tables and the plot script, each on a tiny subset."""

import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from helpers import TINY_RUN, metrics, run_script, train

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
TINY_NO_T = [a for a in TINY_RUN if not a.startswith("time_steps=")]  # the search picks T
SEARCH = {"neuron.vth", "neuron.decay", "optimizer.lr", "time_steps"}


def _summary_rows(sweep: Path) -> list[str]:
    return (sweep / "summary.csv").read_text().strip().splitlines()[1:]


def _hparams_tags(job_dir: Path) -> set:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for ev in (job_dir / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(ev))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return {t for t in tags if t.startswith("hparams/")}


@pytest.mark.slow  # about a minute of CLI runs on 2 cores; runs with -m slow
def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    r = train(
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "neuron.vth=0.3,0.5",
            *TINY_RUN,
            "target.threads=1",
            "hydra.sweep.dir=sweep",
        ],
        tmp_path,
        timeout=300,
        fresh=True,  # loky's worker pool needs a fresh interpreter
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in out and "is launching 2 jobs" in out
    sweep = tmp_path / "sweep"
    for job, vth in (("0", "0.3"), ("1", "0.5")):
        assert metrics(sweep / job)["test_acc"] is not None
        assert f"neuron.vth={vth}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()
        # HPARAMS with the final metrics: every job compares in one `tensorboard --logdir sweep`
        assert {"hparams/best_val_acc", "hparams/test_acc"} <= _hparams_tags(sweep / job)
    rows = _summary_rows(sweep)
    assert len(rows) == 2 and "neuron.vth=0.3" in rows[0] and "neuron.vth=0.5" in rows[1]
    assert "neuron.vth=0.5" in (sweep / "summary.md").read_text()


@pytest.fixture(scope="module")
def optuna_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("optuna")
    r = train(
        [
            "hparams_search=mnist_optuna",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.params.time_steps='choice(2,4)'",
            *TINY_NO_T,
            "hydra.sweep.dir=opt",
        ],
        tmp,
        timeout=300,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return tmp / "opt"


def test_optuna_search_maximises_validation_accuracy(optuna_sweep):
    results = yaml.safe_load((optuna_sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == SEARCH
    jobs = sorted(p.parent for p in optuna_sweep.glob("*/metrics.json"))
    assert len(jobs) == 3
    accs = []
    for job in jobs:
        m = metrics(job)
        accs.append(m["best_val_acc"])
        ov = dict(
            o.split("=", 1)
            for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
            if "=" in o and not o.startswith("hparams_search")
        )
        assert set(ov) >= SEARCH
        assert 0.2 <= float(ov["neuron.vth"]) <= 0.8 and 0.5 <= float(ov["neuron.decay"]) <= 0.95
        assert 0.005 <= float(ov["optimizer.lr"]) <= 0.1 and ov["time_steps"] in ("2", "4")
    # the sweeper optimised what main() returned: the best validation accuracy
    assert results["best_value"] == pytest.approx(max(accs))
    assert len(_summary_rows(optuna_sweep)) == 3


def test_plot_script_writes_png_plots(optuna_sweep, tmp_path):
    r = run_script("experiments/plot_sweep.py", [str(optuna_sweep), "--out", str(tmp_path / "plots")], timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    expected = {f"acc_vs_{k}.png" for k in SEARCH} | {"learning_curves.png", "history.png"}
    assert {p.name for p in (tmp_path / "plots").glob("*.png")} == expected
    assert set(r.stdout.split()) == {str(tmp_path / "plots" / n) for n in expected}
    from PIL import Image

    for name in expected:
        with Image.open(tmp_path / "plots" / name) as img:
            img.verify()
            assert img.format == "PNG" and img.size[0] >= 400 and img.size[1] >= 300
    # nothing to plot: a clear error, no traceback
    bad = run_script("experiments/plot_sweep.py", [str(tmp_path)], timeout=120)
    assert bad.returncode == 2 and "no finished job" in bad.stderr and "Traceback" not in bad.stderr


def test_slurm_launcher_preset_composes_one_task_per_device(compose_cfg):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from omegaconf import OmegaConf

    cfg = compose_cfg(
        ["hydra/launcher=slurm_ddp", "trainer=ddp", "target.devices=4", "hydra.launcher.partition=gpu"],
        return_hydra_config=True,
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["tasks_per_node"] == launcher["gpus_per_node"] == 4 and launcher["nodes"] == 1
    assert launcher["partition"] == "gpu" and launcher["timeout_min"] > 0
    assert cfg.trainer.strategy == "ddp" and cfg.target.devices == 4


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_job(tmp_path):
    """The submitit code path (pickled job, separate process) that SLURM jobs also take."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    r = train(
        [
            "-m",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=5",
            "neuron.vth=0.3",
            *TINY_RUN,
            "hydra.sweep.dir=sub",
        ],
        tmp_path,
        timeout=300,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert metrics(tmp_path / "sub" / "0")["test_acc"] is not None
    assert len(_summary_rows(tmp_path / "sub")) == 1


def test_a_failing_job_is_recorded_the_others_run_and_the_sweep_exits_non_zero(tmp_path):
    r = train(["-m", "neuron.vth=0.4,-1", *TINY_RUN, "hydra.sweep.dir=sweep"], tmp_path)
    sweep = tmp_path / "sweep"
    assert r.returncode == 1, (r.stdout + r.stderr)[-3000:]
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == "error: 1 of 2 job(s) failed; see the status and error columns of sweep/summary.md"
    assert metrics(sweep / "0")["test_acc"] is not None
    failed = json.loads((sweep / "1" / "failed.json").read_text())
    assert failed["error"] == "neuron.vth=-1.0 is invalid: must be > 0" and "neuron.vth=-1" in failed["overrides"]
    rows = list(csv.DictReader(io.StringIO((sweep / "summary.csv").read_text())))
    assert [(r["job"], r["status"]) for r in rows] == [("0", "ok"), ("1", "failed")]
    assert rows[0]["error"] == "" and rows[0]["test_acc"] and rows[1]["error"] == failed["error"]
    assert "neuron.vth=-1" in rows[1]["overrides"] and rows[1]["test_acc"] == ""
    md = (sweep / "summary.md").read_text().splitlines()
    assert md[0].startswith("| job | status |") and "| failed |" in md[3] and failed["error"] in md[3]


def _job_overrides(job: Path) -> list:
    hydra_overrides = job / ".hydra" / "overrides.yaml"
    if hydra_overrides.exists():
        return yaml.safe_load(hydra_overrides.read_text())
    return json.loads((job / "failed.json").read_text())["overrides"]


@pytest.mark.slow  # about a minute of CLI runs on 2 cores; runs with -m slow
def test_optuna_study_is_persisted_and_a_rerun_continues_it(tmp_path):
    """The study lives in outputs/optuna/optuna.db, outside the timestamped sweep dirs; a
    failed trial (neuron.vth=-1) is marked FAIL and the search goes on."""
    optuna = pytest.importorskip("optuna")
    args = ["hparams_search=mnist_optuna", "hydra.sweeper.params.time_steps='choice(2,4)'", "neuron.vth=choice(0.4,-1)"]
    first = train([*args, *TINY_NO_T, "hydra.sweeper.n_trials=2", "hydra.sweep.dir=opt1"], tmp_path)
    assert first.returncode == 1 and "1 of 2 job(s) failed" in first.stderr, (first.stdout + first.stderr)[-3000:]
    db = f"sqlite:///{tmp_path / 'outputs' / 'optuna' / 'optuna.db'}"
    trials = optuna.load_study(study_name="mnist_snn", storage=db).trials
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "FAIL"]
    failed = next(t for t in trials if t.state.name == "FAIL")
    assert failed.params["neuron.vth"] == -1 and failed.value is None

    # the same command with one more trial: the study continues at trial 2
    second = train([*args, *TINY_NO_T, "hydra.sweeper.n_trials=1", "hydra.sweep.dir=opt2"], tmp_path)
    assert second.returncode in (0, 1), (second.stdout + second.stderr)[-3000:]
    trials = optuna.load_study(study_name="mnist_snn", storage=db).trials
    assert [t.number for t in trials] == [0, 1, 2] and trials[2].state.name in ("COMPLETE", "FAIL")
    assert f"neuron.decay={trials[2].params['neuron.decay']}" in _job_overrides(tmp_path / "opt2" / "0")
    # the rerun's optimization_results.yaml: the whole study's best trial
    best = max(t.value for t in trials if t.state.name == "COMPLETE")
    assert yaml.safe_load((tmp_path / "opt2" / "optimization_results.yaml").read_text())["best_value"] == best


# -- multi-objective: accuracy against synaptic operations ------------------------------------
def test_pareto_front_keeps_the_points_no_other_point_beats():
    from snn_lab.cli.pareto import dominates, front

    md = ["maximize", "minimize"]
    assert dominates([0.9, 10], [0.8, 10], md) and dominates([0.9, 5], [0.9, 10], md)
    assert not dominates([0.9, 10], [0.9, 10], md)  # equal: neither dominates
    assert not dominates([0.95, 20], [0.9, 10], md)  # better accuracy, more operations: a trade-off
    points = [[0.9, 10], [0.8, 5], [0.85, 12], [0.95, 20], [0.8, 6]]
    assert front(points, md) == [True, True, False, True, False]


@pytest.fixture(scope="module")
def pareto_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pareto")
    r = train(
        [
            "hparams_search=mnist_pareto",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.params.time_steps='choice(2,4)'",
            *TINY_NO_T,
            "hydra.sweep.dir=par",
        ],
        tmp,
        timeout=300,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return tmp / "par", r.stdout


def test_pareto_search_returns_accuracy_and_synops_and_writes_the_front(pareto_sweep):
    from snn_lab.cli.pareto import front

    sweep, stdout = pareto_sweep
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(jobs) == 3
    values = {}
    for job in jobs:
        m = metrics(job)
        eff = m["efficiency"]
        assert eff["synops"] > 0 and eff["synops"] == eff["effective_acs"] + eff["effective_macs"]
        values[job.name] = [m["best_val_acc"], eff["synops"]]
    # the sweeper stored what main() returned, objective by objective (its Pareto solutions)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    solutions = {tuple(s["values"]) for s in results["solutions"]}
    on_front = [job for job, flag in zip(values, front(list(values.values()), ["maximize", "minimize"])) if flag]
    assert solutions == {tuple(values[j]) for j in on_front}
    # pareto.csv: every finished job with its flag; pareto.md: the front
    rows = list(csv.DictReader(io.StringIO((sweep / "pareto.csv").read_text())))
    assert {r["job"]: r["pareto"] == "True" for r in rows} == {j: j in on_front for j in values}
    assert {r["job"]: float(r["efficiency.synops"]) for r in rows} == {j: v[1] for j, v in values.items()}
    md = (sweep / "pareto.md").read_text()
    assert md.count("\n| ") == 1 + len(on_front) and "time_steps=" in md
    assert f"Pareto front: {len(on_front)} of 3 finished job(s)" in stdout
    from PIL import Image

    with Image.open(sweep / "pareto.png") as img:
        img.verify()
        assert img.format == "PNG"
    # the summary's efficiency columns
    summary = list(csv.DictReader(io.StringIO((sweep / "summary.csv").read_text())))
    assert {r["job"]: float(r["synops"]) for r in summary} == {j: v[1] for j, v in values.items()}
    assert all(0 < float(r["activation_sparsity"]) <= 1 and float(r["energy_pj"]) > 0 for r in summary)


def test_a_direction_per_objective_is_required_before_any_job_runs(tmp_path):
    r = train(["hparams_search=mnist_pareto", "objectives=[best_val_acc]", *TINY_NO_T, "hydra.sweep.dir=par"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "error: hydra.sweeper.direction has 2 direction(s) but each run returns 1 value(s) "
        "(objectives=['best_val_acc']); give one direction per objective"
    )
    assert not (tmp_path / "par").exists() or not list((tmp_path / "par").glob("*/metrics.json"))
