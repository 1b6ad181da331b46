"""``python -m snn_lab.bench``: a tiny run end to end (no timing assertions)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from snn_lab.bench import BenchConfig, run, table

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    time_steps=3,
    train_batch=8,
    train_steps=1,
    infer_batches=[1, 4],
    infer_min_samples=4,
    infer_min_batches=1,
    rounds=1,
    warmup=0,
    pretrain_steps=1,
    layer_repeats=1,
    dataset="random",
    threads=None,
)


def test_tiny_bench_in_process():
    res = run(BenchConfig(**TINY))
    assert set(res["contestants"]) >= {"reference", "tutorial_code", "engine"}
    for name, entry in res["contestants"].items():
        for metric in ("train", "infer_b1", "infer_b4"):
            assert entry[metric]["samples_per_s"] > 0
        assert entry["saved_activation_bytes"] > 0
    assert res["ratios_vs_reference"]["reference"]["train"] == pytest.approx(1.0)
    assert res["agreement"]["engine"]["spikes_compared"] > 0
    assert res["agreement"]["tutorial_code"]["scores_identical"]
    assert [row["layer"] for row in res["layers"]] == [0, 1, 2]
    assert res["machine"]["torch"]
    assert "reference" in table(res) and "engine" in table(res)
    json.dumps(res)  # serialisable as is


def test_bench_cli_writes_bench_json(tmp_path):
    args = [f"{k}={json.dumps(v) if isinstance(v, list) else ('null' if v is None else v)}" for k, v in TINY.items()]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snn_lab.bench",
            *args,
            "contestants=[engine]",
            "peers=false",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "bench.json").read_text())
    assert set(res["contestants"]) == {"reference", "engine"}  # the reference always races
    assert "x)" in proc.stdout and "wrote" in proc.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_bench_rejects_bad_config():
    with pytest.raises(ValueError, match="contestant 'fastest' is unknown"):
        run(BenchConfig(**{**TINY, "contestants": ["fastest"]}))
    with pytest.raises(ValueError, match="target='tpu' is unknown"):
        run(BenchConfig(**{**TINY, "target": "tpu"}))
    with pytest.raises(ValueError, match="rounds=0 is invalid"):
        run(BenchConfig(**{**TINY, "rounds": 0}))
