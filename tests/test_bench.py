"""``python -m snn_lab.bench``: a tiny run end to end (no timing assertions)."""

import json

import pytest

from helpers import bench
from snn_lab.bench import BenchConfig, run, table

# the smallest bench config that exercises every stage (a BenchConfig's fields)
TINY_BENCH = dict(
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
    res = run(BenchConfig(**TINY_BENCH))
    assert set(res["contestants"]) >= {"reference", "tutorial_code", "engine"}
    for entry in res["contestants"].values():
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
    args = [
        f"{k}={json.dumps(v) if isinstance(v, list) else ('null' if v is None else v)}" for k, v in TINY_BENCH.items()
    ]
    proc = bench([*args, "contestants=[engine]", "peers=false", f"hydra.run.dir={tmp_path}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "bench.json").read_text())
    assert set(res["contestants"]) == {"reference", "engine"}  # the reference always races
    assert "x)" in proc.stdout and "wrote" in proc.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_bench_rejects_bad_config():
    with pytest.raises(ValueError, match="contestant 'fastest' is unknown"):
        run(BenchConfig(**{**TINY_BENCH, "contestants": ["fastest"]}))
    with pytest.raises(ValueError, match="target='tpu' is unknown"):
        run(BenchConfig(**{**TINY_BENCH, "target": "tpu"}))
    with pytest.raises(ValueError, match="rounds=0 is invalid"):
        run(BenchConfig(**{**TINY_BENCH, "rounds": 0}))
