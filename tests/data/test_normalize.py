"""Tests of geomax.data.normalize: band statistics and normalisation."""
import numpy as np
import pytest
import torch

from geomax.data.normalize import BandStats, RunningBandStats, normalize
from geomax.errors import DataError


def _image(rng, n_bands=3, h=16, w=20):
    scales = np.array([1.0, 10.0, 100.0])[:n_bands, None, None]
    return (rng.normal(5.0, 2.0, (n_bands, h, w)) * scales).astype(np.float32)


def test_running_stats_equal_numpy_over_the_valid_pixels():
    rng = np.random.default_rng(0)
    images = [_image(rng) for _ in range(3)]
    valids = [rng.random((16, 20)) > 0.3 for _ in range(3)]
    running = RunningBandStats(["a", "b", "c"])
    for img, valid in zip(images, valids):
        running.update(img, valid)
    running.update(images[0], np.zeros((16, 20), bool))  # no valid pixel: counts nothing
    stats = running.result()
    pixels = np.concatenate([img[:, v] for img, v in zip(images, valids)], axis=1).astype(np.float64)
    np.testing.assert_allclose(stats.mean, pixels.mean(1), rtol=1e-9)
    np.testing.assert_allclose(stats.std, pixels.std(1), rtol=1e-6)
    np.testing.assert_array_equal(stats.min, pixels.min(1))
    np.testing.assert_array_equal(stats.max, pixels.max(1))


def test_a_band_without_valid_pixels_and_a_constant_band_get_unit_spread():
    running = RunningBandStats(["a"])
    assert running.result().std.tolist() == [1.0] and running.result().mean.tolist() == [0.0]
    constant = BandStats(["a", "b"], [3, 0], [3, 1], [3, 0.5], [0.0, 0.5])
    assert constant.std.tolist() == [1.0, 0.5]


def test_combine_pools_like_the_concatenated_data():
    rng = np.random.default_rng(1)
    a, b = _image(rng, h=10, w=10), _image(rng, h=30, w=10)
    stats = []
    for img in (a, b):
        r = RunningBandStats(["x", "y", "z"])
        r.update(img)
        stats.append(r.result())
    pooled = BandStats.combine(stats, [a[0].size, b[0].size])
    both = np.concatenate([a.reshape(3, -1), b.reshape(3, -1)], axis=1).astype(np.float64)
    np.testing.assert_allclose(pooled.mean, both.mean(1), rtol=1e-6)
    np.testing.assert_allclose(pooled.std, both.std(1), rtol=1e-5)
    np.testing.assert_array_equal(pooled.min, both.min(1))


def test_emd_dict_and_select_round_trips():
    stats = BandStats(["red", "green", "nir"], [0, 1, 2], [10, 11, 12], [5, 6, 7], [1, 2, 3])
    emd = stats.to_emd()
    assert [e["BandName"] for e in emd] == ["red", "green", "nir"] and emd[2]["StdDev"] == 3.0
    back = BandStats.from_emd(emd)
    assert back.to_dict() == stats.to_dict()
    assert BandStats.from_dict(stats.to_dict()).to_dict() == stats.to_dict()
    sub = stats.select([2, 0])
    assert sub.names == ["nir", "red"] and sub.mean.tolist() == [7.0, 5.0] and sub.std.tolist() == [3.0, 1.0]
    # names missing from the entries: band_<i>
    assert BandStats.from_emd([{"Min": 0, "Max": 1, "Mean": 0.5, "StdDev": 0.1}]).names == ["band_1"]


def test_bad_statistics_raise_data_errors():
    with pytest.raises(DataError, match="Min, Max, Mean"):
        BandStats.from_emd([{"Min": 0, "Max": 1}], source="x.emd")
    with pytest.raises(DataError, match="disagree in length"):
        BandStats(["a", "b"], [0], [1], [0.5], [0.1])


def test_normalize_numpy_and_torch_agree_and_zero_the_nodata():
    stats = BandStats(["a", "b"], [0, 0], [10, 100], [2.0, 50.0], [4.0, 25.0])
    raw = np.stack([np.full((3, 4), 6.0), np.full((3, 4), 0.0)]).astype(np.uint16)
    valid = np.ones((3, 4), bool)
    valid[0, 0] = False
    out = normalize(raw, stats, valid)
    assert out.dtype == np.float32 and out.shape == raw.shape
    np.testing.assert_allclose(out[:, 1, 1], [1.0, -2.0])
    assert (out[:, 0, 0] == 0).all()
    batch = torch.from_numpy(raw.astype(np.float32))[None]
    t = normalize(batch, stats, torch.from_numpy(valid)[None])
    assert isinstance(t, torch.Tensor) and t.shape == (1, 2, 3, 4)
    np.testing.assert_allclose(t[0].numpy(), out)
    with pytest.raises(DataError, match="3 bands but the band statistics describe 2"):
        normalize(np.zeros((3, 4, 4)), stats)
