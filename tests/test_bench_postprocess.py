"""The logits benchmarks/bench_postprocess.py times say what the truth says: post-processed, they give it back."""
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_postprocess
        yield bench_postprocess
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("stride", [1, 2])
def test_truth_logits_post_process_back_to_the_truth(bench, tmp_path, stride):
    from geomax.metrics import PanopticEvaluator
    from geomax.models.postprocess import PanopticPostProcessor

    tiles, valid, truths, table = bench.truth_tiles(tmp_path, 256, 128, 2)
    assert tiles.shape == (2, 3, 128, 128) and len(truths) == 2
    pp = PanopticPostProcessor(table, min_thing_area=0, min_stuff_area=0)
    ev = PanopticEvaluator(table)
    rng = np.random.default_rng(0)
    for truth, v in zip(truths, valid):
        masks, classes = bench.logits_from_truth(truth, table, 128, stride, rng)
        assert masks.shape == (128, 128 // stride, 128 // stride)
        got = pp.process_one(masks, classes, (128, 128), v)
        ev.update(got.class_map, got.instance_map, truth.class_map, truth.instance_map)
    pq = ev.compute()
    assert pq["things"]["pq"] > (0.97 if stride == 1 else 0.8) and pq["stuff"]["pq"] > 0.97
