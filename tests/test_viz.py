import matplotlib

matplotlib.use("Agg")

import numpy as np

from geomax.data.normalize import BandStats, normalize
from geomax.data.synthetic import SYNTHETIC_CLASSES
from geomax.viz import denormalize, image_to_rgb, panoptic_overlay, show_panoptic


def test_image_to_rgb_picks_bands_and_masks_nodata():
    img = np.zeros((4, 8, 8), np.float32)
    img[3] = np.linspace(0, 100, 64).reshape(8, 8)  # only band 3 varies
    valid = np.ones((8, 8), bool)
    valid[0, 0] = False
    rgb = image_to_rgb(img, rgb_bands=[3, 0, 0], valid=valid)
    assert rgb.shape == (8, 8, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert rgb[..., 0].std() > 0.2 and rgb[..., 1].max() == 0
    assert (rgb[0, 0] == 0).all()


def test_denormalize_inverts_normalize():
    stats = BandStats(["a", "b"], [0, 0], [10, 20], [5, 10], [2, 4])
    raw = np.random.default_rng(0).uniform(0, 10, (2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(denormalize(normalize(raw, stats), stats), raw, rtol=1e-5, atol=1e-5)


def test_overlay_tints_stuff_and_outlines_things():
    cm = np.full((20, 20), 3, np.int32)  # vegetation
    im = np.zeros((20, 20), np.int32)
    cm[5:15, 2:8], im[5:15, 2:8] = 5, 1  # two touching buildings
    cm[5:15, 8:14], im[5:15, 8:14] = 5, 2
    base = np.full((20, 20, 3), 0.5, np.float32)
    out = panoptic_overlay(base, cm, im, SYNTHETIC_CLASSES, alpha=0.5)
    veg = np.array(SYNTHETIC_CLASSES.by_value(3).color) / 255
    np.testing.assert_allclose(out[0, 0], 0.5 * 0.5 + 0.5 * veg, atol=1e-6)
    # the shared wall is drawn in two different instance colours
    assert not np.allclose(out[10, 7], out[10, 8])
    # interior of an instance differs from its outline
    assert not np.allclose(out[10, 4], out[10, 2])


def test_show_panoptic_draws(tmp_path):
    cm = np.full((16, 16), 2, np.int32)
    ax = show_panoptic(None, cm, np.zeros_like(cm), SYNTHETIC_CLASSES, title="t")
    ax.figure.savefig(tmp_path / "x.png")
    assert (tmp_path / "x.png").stat().st_size > 0


def test_show_batch_writes_png(synthetic_data, tmp_path):
    fig = synthetic_data.show_batch(rows=2, file=tmp_path / "batch.png")
    assert (tmp_path / "batch.png").stat().st_size > 10_000
    assert len([a for a in fig.axes if a.images]) == min(4, len(synthetic_data.train.dataset))
