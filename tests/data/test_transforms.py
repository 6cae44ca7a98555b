"""Tests of geomax.data.transforms: image and labels move together."""
import numpy as np
import pytest

from geomax.data.transforms import (
    Brightness,
    CenterCrop,
    Dihedral,
    RandomCrop,
    RandomScale,
    Sample,
    crop_or_pad,
    default_transforms,
)
from geomax.errors import ArgumentError


def _sample(h=12, w=12, bands=2):
    """A sample whose image band 0 equals its instance map and band 1 its class map: agreement is checkable."""
    rng = np.random.default_rng(0)
    instance = rng.integers(0, 5, (h, w)).astype(np.int32)
    class_index = (instance % 3 + 1).astype(np.int64)
    image = np.stack([instance, class_index] + [np.ones((h, w))] * (bands - 2)).astype(np.float32)
    return Sample(image, class_index, instance, np.ones((h, w), bool))


def _assert_aligned(s: Sample):
    v = s.valid
    np.testing.assert_array_equal(s.image[0][v], s.instance[v])
    np.testing.assert_array_equal(s.image[1][v], s.class_index[v])


def test_crop_or_pad_crops_centred_or_at_random_and_pads_with_no_data():
    s = _sample(12, 12)
    c = crop_or_pad(s, 8, None)
    assert c.shape == (8, 8) and c.image.shape == (2, 8, 8)
    np.testing.assert_array_equal(c.instance, s.instance[2:10, 2:10])
    r = crop_or_pad(s, (6, 10), np.random.default_rng(3))
    assert r.shape == (6, 10)
    _assert_aligned(r)
    p = crop_or_pad(_sample(5, 7), 8, None)
    assert p.shape == (8, 8) and p.valid[:5, :7].all() and not p.valid[5:].any() and not p.valid[:, 7:].any()
    assert (p.class_index[~p.valid] == 0).all() and (p.instance[~p.valid] == 0).all()


def test_random_and_center_crop():
    s = _sample(16, 16)
    rng = np.random.default_rng(0)
    crops = [RandomCrop(8)(s, rng) for _ in range(6)]
    assert all(c.shape == (8, 8) for c in crops)
    assert len({c.instance.tobytes() for c in crops}) > 1  # random positions
    np.testing.assert_array_equal(CenterCrop(8)(s, rng).instance, s.instance[4:12, 4:12])


def test_dihedral_keeps_image_and_labels_together_and_reaches_all_eight():
    s = _sample(8, 8)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        out = Dihedral()(s, rng)
        _assert_aligned(out)
        assert sorted(out.instance.ravel()) == sorted(s.instance.ravel())
        seen.add(out.instance.tobytes())
    assert len(seen) == 8
    # a non-square chip keeps its shape
    assert all(Dihedral()(_sample(6, 10), rng).shape == (6, 10) for _ in range(10))


def test_random_scale_keeps_the_size_and_the_labels_on_the_image():
    s = _sample(16, 16)
    rng = np.random.default_rng(0)
    for _ in range(5):
        out = RandomScale(0.5, 2.0, p=1.0)(s, rng)
        assert out.shape == (16, 16) and out.image.shape == (2, 16, 16) and out.instance.dtype == np.int32
        assert set(np.unique(out.class_index)) <= set(np.unique(s.class_index)) | {0}
    assert RandomScale(p=0.0)(s, rng) is s
    with pytest.raises(ArgumentError, match="min_scale"):
        RandomScale(1.2, 1.1)


def test_brightness_scales_the_image_only():
    s = _sample()
    s.image += 1.0  # no zero pixel: the ratio is defined everywhere
    out = Brightness(0.5, p=1.0)(s, np.random.default_rng(0))
    ratio = out.image / s.image
    assert np.allclose(ratio, ratio.flat[0]) and 0.5 <= ratio.flat[0] <= 1.5 and ratio.flat[0] != 1.0
    assert out.class_index is s.class_index and out.instance is s.instance


def test_default_transforms_bring_any_chip_to_the_chip_size():
    rng = np.random.default_rng(0)
    s = _sample(20, 20)
    for _ in range(5):
        out = s
        for t in default_transforms(16):
            out = t(out, rng)
        assert out.shape == (16, 16)
        assert (out.class_index[~out.valid] == 0).all()
