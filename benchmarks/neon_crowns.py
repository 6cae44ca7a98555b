"""Real airborne RGB for benchmarks: NEON tree crowns (0.1 m) from the ``deepforest`` package's sample data.

The ``deepforest==2.1.0`` wheel ships four NEON images with Pascal VOC box annotations of
tree crowns (``<object><bndbox><xmin>..`` in pixel coordinates):

==============================================  ===========  =======
``OSBS_029.tif``                                 400 x 400     61
``SOAP_061.png``                                 400 x 400     37
``2019_YELL_2_541000_4977000_image_crop.png``    1249 x 1035   279
``2019_YELL_2_528000_4978000_image_crop2.png``   2299 x 2472   574
==============================================  ===========  =======

:func:`prepare` turns a folder holding them (and their ``.xml``) into a geomax task:

* **Split**: each image is cut at 60 % of its rows: the top part trains, the bottom part tests.
  A crown belongs to the part holding its box centre; its box is clipped to that part.
* **Training raster**: the four train parts are mosaicked side by side (left to right in the
  order above, top-aligned) into one GeoTIFF ``train.tif`` (EPSG:32617, 0.1 m pixels, a fixed
  origin); the pixels below the shorter parts are no-data (0; image values of 0 become 1).
  Labels ``train.gpkg``: each box as its inscribed ellipse polygon, ``class_name`` ``"tree"``
  (``geomax export train.tif train.gpkg chips --things tree``; unlabelled valid pixels become
  the stuff class ``background`` under the export's ``auto`` background rule).
* **Test rasters**: one GeoTIFF per image, ``test_<key>.tif``, holding its bottom part, with
  the image's own georeferencing shifted to the part (OSBS_029.tif), or a fixed per-image
  origin in EPSG:32617 at 0.1 m (the PNGs carry none). No no-data value (the source tif's
  ``nodata=255`` is dropped: 255 is a bright pixel of an 8-bit photo, not a hole). Labels:
  ``test_<key>.gpkg`` (ellipses, as for training) and the boxes themselves (pixel coordinates
  of the test raster) in the returned dict, for :func:`score`.

Scoring (:func:`score`): every predicted thing instance of a panoptic raster (band 1 class
Value, band 2 instance id, as ``geomax predict`` writes) becomes the bounding box of its pixels;
boxes are matched one-to-one to the ground-truth boxes greedily, highest IoU first, at
IoU >= 0.5; precision, recall and F1 per test image and pooled over the images.

Used by ``benchmarks/bench_user_data.py`` (cell ``g_neon_crowns``); not part of the package.

    python benchmarks/neon_crowns.py /path/to/deepforest/data     # prepare + self-check
"""
from __future__ import annotations

import sys
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

#: key: image file in the deepforest data folder (its annotations: the same stem + ``.xml``)
IMAGES = {
    "OSBS_029": "OSBS_029.tif",
    "SOAP_061": "SOAP_061.png",
    "YELL_541000_4977000": "2019_YELL_2_541000_4977000_image_crop.png",
    "YELL_528000_4978000": "2019_YELL_2_528000_4978000_image_crop2.png",
}
TRAIN_SHARE = 0.6      # top share of the rows used for training
PIXEL_SIZE = 0.1       # metres (NEON RGB)
CRS = "EPSG:32617"     # for the images without georeferencing, and the training mosaic
IOU_THRESHOLD = 0.5
CLASS_NAME = "tree"


def read_boxes(xml_path) -> np.ndarray:
    """Boxes ``(n, 4)`` ``xmin, ymin, xmax, ymax`` (pixel coordinates) of a Pascal VOC file."""
    root = ET.parse(xml_path).getroot()
    boxes = [[float(obj.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
             for obj in root.iter("object")]
    return np.array(boxes, dtype=float).reshape(-1, 4)


def split_boxes(boxes: np.ndarray, split_row: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of the train part (rows ``< split_row``) and of the test part (rows from ``split_row``, shifted
    so the test part starts at row 0), by box centre, clipped to their part; degenerate boxes dropped."""
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    train = boxes[cy < split_row].copy()
    train[:, 3] = np.minimum(train[:, 3], split_row)
    test = boxes[cy >= split_row].copy()
    test[:, 1] = np.maximum(test[:, 1], split_row)
    test[:, [1, 3]] -= split_row
    keep = lambda b: b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]  # noqa: E731
    return keep(train), keep(test)


def ellipses(boxes: np.ndarray, transform):
    """The inscribed ellipse of each box, as polygons in the CRS of ``transform`` (pixel -> map)."""
    from shapely import affinity
    from shapely.geometry import Point

    to_map = [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]
    out = []
    for x0, y0, x1, y1 in boxes:
        e = affinity.scale(Point(0, 0).buffer(1.0, quad_segs=16), (x1 - x0) / 2, (y1 - y0) / 2, origin=(0, 0))
        out.append(affinity.affine_transform(affinity.translate(e, (x0 + x1) / 2, (y0 + y1) / 2), to_map))
    return out


def _write_labels(path: Path, boxes: np.ndarray, transform, crs=CRS) -> None:
    import geopandas as gpd

    gpd.GeoDataFrame({"class_name": [CLASS_NAME] * len(boxes)}, geometry=ellipses(boxes, transform),
                     crs=crs).to_file(path)


def _write_raster(path: Path, data: np.ndarray, transform, crs=CRS, nodata=None) -> None:
    import rasterio

    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype.name, crs=crs, transform=transform, tiled=True, compress="deflate",
                   nodata=nodata, photometric="RGB")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = ("red", "green", "blue")


def prepare(folder, out) -> dict:
    """Write the training mosaic, its labels and one test raster + labels per image into ``out``.

    Returns
    -------
    dict
        ``train_raster``, ``train_labels``, ``train_crowns``, ``train_boxes`` (pixel coordinates of
        the mosaic), and ``tests``:
        ``{key: {"raster", "labels", "boxes" (n, 4) pixel coordinates, "crowns"}}``.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.transform import from_origin

    folder, out = Path(folder), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts, train_boxes, tests = [], [], {}
    for k, (key, name) in enumerate(IMAGES.items()):
        img_path = folder / name
        xml_path = img_path.with_suffix(".xml")
        for p in (img_path, xml_path):
            if not p.exists():
                raise FileNotFoundError(f"{p.name} is missing from the NEON folder {folder.name!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the PNGs: georeferenced below
            with rasterio.open(img_path) as src:
                data = src.read([1, 2, 3])
                georef = src.crs is not None and src.crs.is_projected
                crs = src.crs if georef else CRS
                transform = src.transform if georef else from_origin(300000.0 + 10000.0 * k, 3300000.0,
                                                                     PIXEL_SIZE, PIXEL_SIZE)
        split = int(round(TRAIN_SHARE * data.shape[1]))
        boxes_train, boxes_test = split_boxes(read_boxes(xml_path), split)
        parts.append((data[:, :split], boxes_train))
        test_transform = transform * transform.translation(0, split)
        test = {"raster": out / f"test_{key}.tif", "labels": out / f"test_{key}.gpkg", "boxes": boxes_test,
                "crowns": len(boxes_test)}
        _write_raster(test["raster"], np.ascontiguousarray(data[:, split:]), test_transform, crs)
        _write_labels(test["labels"], boxes_test, test_transform, crs)
        tests[key] = test
    # the training mosaic: parts side by side, top-aligned, no-data (0) below the shorter ones
    height, width = max(p.shape[1] for p, _ in parts), sum(p.shape[2] for p, _ in parts)
    mosaic = np.zeros((3, height, width), np.uint8)
    col = 0
    for data, boxes in parts:
        mosaic[:, :data.shape[1], col:col + data.shape[2]] = np.maximum(data, 1)
        train_boxes.append(boxes + [col, 0, col, 0])
        col += data.shape[2]
    transform = from_origin(200000.0, 3300000.0, PIXEL_SIZE, PIXEL_SIZE)
    boxes = np.concatenate(train_boxes)
    _write_raster(out / "train.tif", mosaic, transform, nodata=0)
    _write_labels(out / "train.gpkg", boxes, transform)
    return {"train_raster": out / "train.tif", "train_labels": out / "train.gpkg", "train_crowns": len(boxes),
            "train_boxes": boxes, "tests": tests}


def instance_boxes(panoptic_raster) -> np.ndarray:
    """Bounding boxes ``(n, 4)`` ``xmin, ymin, xmax, ymax`` (pixel coordinates, max exclusive) of the thing
    instances of a panoptic raster (band 1 class Value, band 2 instance id unique across the raster, 0 for
    stuff and void). Thing classes: the raster's ``THING_CLASSES`` tag (``geomax predict``); without
    it, every non-zero instance id."""
    import rasterio
    from scipy import ndimage

    from geomax.evaluate import class_table_from_tags

    with rasterio.open(panoptic_raster) as src:
        classes, ids = src.read(1), src.read(2).astype(np.int64)
        table = class_table_from_tags(src)
    if table is not None:
        ids = np.where(np.isin(classes, [c.value for c in table if c.is_thing]), ids, 0)
    uniq = np.unique(ids[ids > 0])
    if not uniq.size:
        return np.zeros((0, 4))
    dense = np.searchsorted(uniq, ids) + 1
    dense[ids == 0] = 0
    slices = ndimage.find_objects(dense)
    return np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in slices if s is not None], float)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of two sets of boxes ``xmin, ymin, xmax, ymax``."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def match(gt: np.ndarray, pred: np.ndarray, threshold: float = IOU_THRESHOLD) -> dict:
    """Greedy one-to-one matching, highest IoU first, at IoU >= ``threshold``: tp, fp, fn, precision, recall, F1."""
    tp = 0
    if len(gt) and len(pred):
        iou = box_iou(gt, pred)
        gi, pi = np.nonzero(iou >= threshold)
        used_g, used_p = set(), set()
        for k in np.argsort(-iou[gi, pi], kind="stable"):
            g, p = int(gi[k]), int(pi[k])
            if g not in used_g and p not in used_p:
                used_g.add(g)
                used_p.add(p)
        tp = len(used_g)
    return _prf(tp, len(pred) - tp, len(gt) - tp)


def _prf(tp: int, fp: int, fn: int) -> dict:
    return {"tp": tp, "fp": fp, "fn": fn, "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
            "f1": 2 * tp / max(2 * tp + fp + fn, 1)}


def score(gt: dict, pred: dict) -> dict:
    """Per image (``{key: boxes}`` both) and pooled (``"all"``) tp, fp, fn, precision, recall, F1, and the
    number of predicted boxes."""
    per = {key: {**match(gt[key], pred[key]), "predicted": len(pred[key])} for key in gt}
    tp, fp, fn = (sum(r[k] for r in per.values()) for k in ("tp", "fp", "fn"))
    return {"per_image": per, "all": {**_prf(tp, fp, fn), "predicted": sum(r["predicted"] for r in per.values())}}


def _self_check(folder: Path) -> None:
    import tempfile

    import rasterio
    from rasterio.features import rasterize
    from shapely.geometry import box

    with tempfile.TemporaryDirectory(prefix="neon_crowns_") as tmp:
        info = prepare(folder, tmp)
        gt = {k: t["boxes"] for k, t in info["tests"].items()}
        with rasterio.open(info["train_raster"]) as src:
            print(f"train mosaic {src.width} x {src.height} px, {info['train_crowns']} crowns; test parts: "
                  + ", ".join(f"{k} {t['crowns']}" for k, t in info["tests"].items()))
        fmt = lambda s: (f"F1 {s['all']['f1']:.3f} (P {s['all']['precision']:.3f} R {s['all']['recall']:.3f}; "  # noqa: E731
                         + ", ".join(f"{k} {r['f1']:.2f}" for k, r in s["per_image"].items()) + ")")
        print("ground truth vs itself:               ", fmt(score(gt, gt)))
        half = {k: b + np.c_[(b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2].repeat(2, 1) for k, b in gt.items()}
        print("vs boxes shifted by half their size:  ", fmt(score(gt, half)))
        # the raster path: ground-truth boxes painted into a panoptic raster (largest first, so small
        # crowns stay on top), read back by instance_boxes
        from_raster = {}
        for k, t in info["tests"].items():
            with rasterio.open(t["raster"]) as src:
                shape, transform = (src.height, src.width), src.transform
            order = np.argsort(-(t["boxes"][:, 2] - t["boxes"][:, 0]) * (t["boxes"][:, 3] - t["boxes"][:, 1]))
            ids = rasterize([(box(*t["boxes"][i]), int(i) + 1) for i in order], out_shape=shape, dtype="uint32")
            path = Path(tmp) / f"pan_{k}.tif"
            with rasterio.open(path, "w", driver="GTiff", width=shape[1], height=shape[0], count=2, dtype="uint32",
                               crs=CRS, transform=transform) as dst:
                dst.write(np.stack([(ids > 0).astype("uint32"), ids]))
            from_raster[k] = instance_boxes(path)
        print("vs boxes painted into a panoptic tif: ", fmt(score(gt, from_raster)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/neon_crowns.py NEON_DATA_FOLDER")
    _self_check(Path(sys.argv[1]))
