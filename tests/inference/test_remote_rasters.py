"""Rasters GDAL opens that are not local files, and mosaics of several files.

A COG served over HTTP by a test server on the loopback address (with range requests,
counted), a GeoTIFF inside a zip (``/vsizip/``), folders and lists of tiles predicted as one
mosaic, and the errors of a missing file and of an unreachable URL.
"""
from __future__ import annotations

import http.server
import re
import shutil
import socket
import threading
import uuid
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from inference_scene import CLASSES, H, W
from rasterio.transform import from_origin
from rasterio.windows import Window

from geomax.data.image_io import read_image
from geomax.data.sources import open_raster, raster_source
from geomax.errors import ArgumentError, DataError
from geomax.inference.predictor import OracleTilePredictor
from geomax.workflows.export import export
from geomax.workflows.predict import predict_raster

ROW_SPLIT, COL_SPLIT = 110, 120  # where the scene is cut into files: the L building and the ring cross both


# ---- a file server with HTTP range requests ---------------------------------------------------------
class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves the files below ``server.root`` with single HTTP range requests (``SimpleHTTPRequestHandler``
    has none), counting requests and body bytes sent."""

    def log_message(self, format, *args):  # keep the test output quiet
        pass

    def do_HEAD(self):
        self._serve(send_body=False)

    def do_GET(self):
        self._serve(send_body=True)

    def _serve(self, send_body: bool) -> None:
        server = self.server
        path = server.root / unquote(urlsplit(self.path).path).lstrip("/")
        header = self.headers.get("Range")
        with server.lock:
            server.requests.append((self.command, self.path, header))
        if not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        if header:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
            if match is None or not (match.group(1) or match.group(2)):
                self.send_error(416, "only one byte range per request")
                return
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:  # bytes=-N: the last N bytes
                start = max(size - int(match.group(2)), 0)
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if send_body:
            with open(path, "rb") as f:
                f.seek(start)
                body = f.read(end - start + 1)
            self.wfile.write(body)
            with server.lock:
                server.bytes_sent += len(body)


class _FileServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        self.root = root
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.requests: list = []
            self.bytes_sent = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def http_server(tmp_path_factory):
    """A threaded HTTP server on 127.0.0.1 serving ``.root`` (range requests), stopped after the module."""
    server = _FileServer(tmp_path_factory.mktemp("served"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in ("NO_PROXY", "no_proxy"):  # a proxy of the environment must not see the loopback server
                mp.setenv(name, "127.0.0.1,localhost")
            yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def gdal_http():
    """GDAL settings for the test server: no directory listing or sidecar probes, no retries."""
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".tif",
                      GDAL_HTTP_MAX_RETRY="0", GDAL_HTTP_TIMEOUT="20"):
        yield


def _unique(stem: str) -> str:
    """A file name never served before (GDAL caches what it read of a URL for the whole process)."""
    return f"{stem}_{uuid.uuid4().hex[:8]}.tif"


def _read_out(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- (a) windowed reading over HTTP ----------------------------------------------------------------
def test_a_small_window_of_a_remote_cog_reads_a_small_part_of_it(http_server, gdal_http, tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(3, 1024, 1024), dtype=np.uint8)  # noise: nothing to compress away
    plain = tmp_path / "noise.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=1024, height=1024, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 4500000, 0.5, 0.5)) as dst:
        dst.write(data)
    name = _unique("noise")
    cog = http_server.root / name
    rasterio.shutil.copy(plain, cog, driver="COG", BLOCKSIZE=128, COMPRESS="NONE")
    url = f"{http_server.url}/{name}"
    assert raster_source(url) == f"/vsicurl/{url}"

    http_server.reset()
    window = Window(448, 448, 64, 64)  # inside one 128 px block
    with open_raster(url) as src:
        assert (src.width, src.height, src.count) == (1024, 1024, 3)
        remote = src.read(window=window)
    sent, requests = http_server.bytes_sent, list(http_server.requests)
    np.testing.assert_array_equal(remote, data[:, 448:512, 448:512])
    size = cog.stat().st_size
    assert size > 3 * 1024 * 1024
    assert 0 < sent < 0.25 * size, (sent, size, requests)
    print(f"64x64 window of a {size} byte COG over HTTP: {sent} bytes in {len(requests)} requests "
          f"({100 * sent / size:.1f} % of the file)")
    assert all(h is not None for method, _, h in requests if method == "GET"), requests  # every GET a range


# ---- (b) predict_raster on a URL -------------------------------------------------------------------
def test_predict_raster_on_a_url_equals_the_local_file(http_server, gdal_http, trained_model, synthetic_scene,
                                                       tmp_path):
    name = _unique("scene")
    cog = http_server.root / name
    rasterio.shutil.copy(synthetic_scene.raster, cog, driver="COG", BLOCKSIZE=64, COMPRESS="DEFLATE")
    local = predict_raster(trained_model.predictor, cog, tmp_path / "local.tif", progress=False)
    http_server.reset()
    url = f"{http_server.url}/{name}"
    remote = predict_raster(trained_model.predictor, url, tmp_path / "remote.tif", progress=False)
    assert any(method == "GET" for method, _, _ in http_server.requests)  # it was read over HTTP
    np.testing.assert_array_equal(_read_out(remote.out_raster), _read_out(local.out_raster))
    with rasterio.open(remote.out_raster) as a, rasterio.open(local.out_raster) as b:
        assert a.crs == b.crs and a.transform == b.transform
    assert (remote.n_tiles, remote.n_instances) == (local.n_tiles, local.n_instances)


# ---- (c) /vsizip/ ----------------------------------------------------------------------------------
def test_a_geotiff_inside_a_zip_exports_like_the_file(synthetic_scene, tmp_path):
    archive = tmp_path / "scene.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(synthetic_scene.raster, "inner/scene.tif")
    name = f"/vsizip/{archive}/inner/scene.tif"
    kwargs = dict(class_table_source="synthetic", tile_size=128, keep_empty=True, log=lambda line: None)
    zipped = export(name, synthetic_scene.labels, tmp_path / "from_zip", **kwargs)
    plain = export(synthetic_scene.raster, synthetic_scene.labels, tmp_path / "from_file", **kwargs)
    assert zipped.n_chips == plain.n_chips == 4
    chips = sorted(p.name for p in (tmp_path / "from_file" / "images").glob("*.tif"))
    assert sorted(p.name for p in (tmp_path / "from_zip" / "images").glob("*.tif")) == chips and chips
    for chip in chips:
        np.testing.assert_array_equal(_read_out(tmp_path / "from_zip" / "images" / chip),
                                      _read_out(tmp_path / "from_file" / "images" / chip))
    names, bands = list(synthetic_scene.band_names), list(range(len(synthetic_scene.band_names)))
    for got, expected in zip(read_image(name, names, bands), read_image(synthetic_scene.raster, names, bands)):
        np.testing.assert_array_equal(got, expected)


# ---- (d) mosaics -----------------------------------------------------------------------------------
def _split(image: Path, folder: Path, crs_of_last=None) -> list[Path]:
    """``image`` cut into four GeoTIFFs at :data:`ROW_SPLIT` / :data:`COL_SPLIT` (the last in another CRS, if given)."""
    folder.mkdir(parents=True)
    paths = []
    with rasterio.open(image) as src:
        for r0, r1 in ((0, ROW_SPLIT), (ROW_SPLIT, src.height)):
            for c0, c1 in ((0, COL_SPLIT), (COL_SPLIT, src.width)):
                window = Window(c0, r0, c1 - c0, r1 - r0)
                path = folder / f"tile_r{r0}_c{c0}.tif"
                last = r0 == ROW_SPLIT and c0 == COL_SPLIT
                with rasterio.open(path, "w", driver="GTiff", width=c1 - c0, height=r1 - r0, count=src.count,
                                   dtype=src.dtypes[0], nodata=src.nodata,
                                   crs=crs_of_last if last and crs_of_last else src.crs,
                                   transform=src.window_transform(window)) as dst:
                    dst.write(src.read(window=window))
                paths.append(path)
    return paths


def _oracle(scene):
    return OracleTilePredictor((scene.class_map, scene.instance_map), CLASSES)


def _same_instances(out: np.ndarray, truth: np.ndarray) -> None:
    """Instance maps equal up to renumbering: the same pixels carry an id, and ids correspond one to one."""
    assert np.array_equal(out > 0, truth > 0)
    m = truth > 0
    pairs = np.unique(np.stack([truth[m], out[m]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1], "one object got several ids (split at a file border?)"
    assert len(np.unique(pairs[1])) == pairs.shape[1], "one id covers several objects"


def test_a_folder_or_a_list_of_tiles_predicts_as_one_raster(scene, tmp_path):
    paths = _split(scene.image, tmp_path / "tiles")
    before = sorted(p.name for p in (tmp_path / "tiles").iterdir())
    inst = scene.instance_map
    crossing = [i for i in np.unique(inst[inst > 0])
                if len({(r < ROW_SPLIT, c < COL_SPLIT) for r, c in zip(*np.nonzero(inst == i))}) > 1]
    assert crossing, "the test needs objects that cross a file border"

    kw = dict(tile_size=64, overlap=16, progress=False)
    whole = predict_raster(_oracle(scene), scene.image, tmp_path / "whole.tif", **kw)
    out = tmp_path / "out"
    from_folder = predict_raster(_oracle(scene), tmp_path / "tiles", out / "folder.tif", **kw)
    from_list = predict_raster(_oracle(scene), [str(p) for p in reversed(paths)], out / "list.tif", **kw)

    cls_whole, inst_whole, _ = _read_out(whole.out_raster)
    assert np.array_equal(cls_whole, scene.class_map)
    for res in (from_folder, from_list):
        cls, inst_out, conf = _read_out(res.out_raster)
        assert np.array_equal(cls, cls_whole)
        _same_instances(inst_out, scene.instance_map)  # objects across the file borders are one instance
        _same_instances(inst_out, inst_whole)
        assert res.n_instances == whole.n_instances and res.n_merges > 0
        with rasterio.open(res.out_raster) as a, rasterio.open(whole.out_raster) as b:
            assert a.crs == b.crs and a.transform == b.transform and a.shape == (H, W)
    # nothing was written into the input folder, and no scratch (the mosaic's VRT) is left beside the outputs
    assert sorted(p.name for p in (tmp_path / "tiles").iterdir()) == before
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".vrt"]


def test_a_mosaic_refuses_mismatched_rasters_and_outputs_in_its_folder(scene, tmp_path):
    _split(scene.image, tmp_path / "mixed", crs_of_last="EPSG:32633")  # the scene is in EPSG:32632
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"differ in CRS.*EPSG:32632.*EPSG:32633"):
        predict_raster(_oracle(scene), tmp_path / "mixed", out / "pred.tif", progress=False)
    assert not out.exists()
    tiles = tmp_path / "tiles"
    _split(scene.image, tiles)
    with pytest.raises(ArgumentError, match="inside the input folder"):
        predict_raster(_oracle(scene), tiles, tiles / "pred.tif", progress=False)
    assert sorted(p.name for p in tiles.iterdir()) == sorted(p.name for p in (tmp_path / "mixed").iterdir())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no GeoTIFF"):
        predict_raster(_oracle(scene), empty, out / "pred.tif", progress=False)
    with pytest.raises(ArgumentError, match="empty"):
        predict_raster(_oracle(scene), [], out / "pred.tif", progress=False)


# ---- (e) clear errors ------------------------------------------------------------------------------
def test_a_missing_file_and_an_unreachable_url_raise_clear_errors(scene, gdal_http, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataError, match="missing.tif' does not exist. Check the path"):
        predict_raster(_oracle(scene), tmp_path / "missing.tif", out / "pred.tif", progress=False)
    url = f"http://127.0.0.1:{_closed_port()}/scene.tif"
    with pytest.raises(DataError, match=re.escape(url)) as err:
        predict_raster(_oracle(scene), url, out / "pred.tif", progress=False)
    assert "cannot be opened" in str(err.value) and "/vsicurl/" in str(err.value)
    with pytest.raises(DataError, match="cannot be opened"):
        read_image(url, ["a", "b", "c"], [0, 1, 2])
    with pytest.raises(DataError, match="cannot be opened"):
        export(url, scene.labels, tmp_path / "chips", class_table_source="synthetic", log=lambda line: None)
    with pytest.raises(ArgumentError, match="not 'foo://'"):
        predict_raster(_oracle(scene), "foo://host/scene.tif", out / "pred.tif", progress=False)
    assert not out.exists() and not (tmp_path / "chips").exists()


def test_a_mangled_url_path_is_read_as_the_url(http_server, gdal_http, scene):
    name = _unique("image")
    shutil.copy(scene.image, http_server.root / name)
    url = f"{http_server.url}/{name}"
    with open_raster(Path(url)) as src:  # Path() made it http:/127.0.0.1:port/...
        assert src.shape == (H, W)
