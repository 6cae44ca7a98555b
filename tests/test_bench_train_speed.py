"""benchmarks/bench_train_speed.py runs end to end (CPU: float32 only) and writes its JSON."""
import importlib.util
import json
from pathlib import Path

import torch

_SPEC = importlib.util.spec_from_file_location(
    "bench_train_speed", Path(__file__).parents[1] / "benchmarks" / "bench_train_speed.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_times_training_batches_and_writes_json(tmp_path):
    out = tmp_path / "speed.json"
    result = bench.main(["--backbone", "max_deeplab_tiny", "--chip-size", "64", "--batch-size", "2", "--batches", "2",
                         "--warmup", "1", "--chips", "16", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["runs"] == result["runs"]
    expected = ["float32", "mixed (fp16)"] if torch.cuda.is_available() else ["float32"]
    assert [r["precision"] for r in saved["runs"]] == expected
    run = saved["runs"][0]
    assert run["images"] == 4 and run["seconds"] > 0 and run["images_per_s"] == run["images"] / run["seconds"]
