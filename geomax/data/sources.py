"""Raster sources: a local path or a GDAL dataset name, told apart once for every reader.

Every raster geomax reads (export, ``predict``, ``predict_raster``, evaluation, the Dask
workers) is given to ``rasterio.open`` as :func:`raster_source` returns it:

* a local file (``scene.tif``, ``mosaic.vrt``, a :class:`~pathlib.Path`) stays a
  :class:`~pathlib.Path`;
* a URL becomes the name of GDAL's virtual file system for it: ``http://`` / ``https://``
  / ``ftp://`` -> ``/vsicurl/<url>``, ``s3://b/k`` -> ``/vsis3/b/k``, ``gs://`` ->
  ``/vsigs/``, ``az://`` -> ``/vsiaz/``, ``oss://`` -> ``/vsioss/``; ``file://`` is a
  local path; rasterio's chained schemes (``zip+https://a.zip!b.tif``) pass as they are;
* ``/vsi...`` names (``/vsizip/``, ``/vsicurl/``, ``/vsis3/``...), GDAL subdataset and
  connection strings (``NETCDF:"f.nc":var``, ``HDF5:...``, ``GPKG:...``, ``PG:...``:
  a driver name of two or more letters and a colon, when no local file has that name)
  and inline VRT XML pass as they are (a ``str``).

A URL is never wrapped in a :class:`~pathlib.Path` (which turns ``https://`` into
``https:/``); a :class:`~pathlib.Path` that was, and names no local file, is mended.
:func:`check_raster` and :func:`open_raster` turn a missing local file or a dataset
GDAL cannot open into a :class:`~geomax.errors.DataError` naming the raster, GDAL's
message and what to check.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import ArgumentError, DataError

__all__ = ["URL_PREFIXES", "raster_source", "is_gdal_name", "local_path", "check_raster", "open_raster",
           "raster_stem"]

#: URL schemes and the prefix of the GDAL virtual file system that reads them.
URL_PREFIXES = {"http": "/vsicurl/", "https": "/vsicurl/", "ftp": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/",
                "az": "/vsiaz/", "oss": "/vsioss/"}
#: Schemes rasterio itself chains with ``+`` (``zip+https://``, ``tar+s3://``...).
_CHAINABLE = set(URL_PREFIXES) | {"zip", "tar", "gzip", "file"}
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
# NETCDF:"f.nc":var, HDF5:f.h5://ds, GPKG:f.gpkg:layer, PG:dbname=...; one letter is a Windows drive
_SUBDATASET = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:(?!//)")
# what pathlib leaves of a URL: https://host/x -> https:/host/x
_MANGLED_URL = re.compile(r"^(https?|ftp|s3|gs|az|oss):/(?!/)")


def raster_source(raster: str | os.PathLike) -> str | Path:
    """What to give ``rasterio.open`` for ``raster``: a local :class:`~pathlib.Path` or a GDAL dataset name.

    Parameters
    ----------
    raster:
        A local path (``str`` or path-like), a URL (``https://``, ``s3://``, ``gs://``,
        ``az://``...), a ``/vsi...`` name or a GDAL subdataset / connection string.

    Returns
    -------
    pathlib.Path or str
        A :class:`~pathlib.Path` for a local file (whether it exists is not checked
        here), else the GDAL dataset name as a ``str`` (URLs in their ``/vsi...`` form).

    Raises
    ------
    ArgumentError
        ``raster`` is not a string or path, or is a URL of a scheme GDAL does not read.
    """
    if isinstance(raster, os.PathLike):
        text = os.fsdecode(os.fspath(raster))
        mangled = _MANGLED_URL.match(text.replace("\\", "/"))
        if mangled is None or Path(text).exists():
            return Path(text)
        text = text.replace("\\", "/")
        text = f"{mangled.group(1)}://{text[mangled.end():]}"
    elif isinstance(raster, str):
        text = raster
    else:
        raise ArgumentError(f"A raster is given as a path or a GDAL dataset name (a string); got "
                            f"{type(raster).__name__} {raster!r}.")
    name = text.strip()
    if name.startswith(("/vsi", "<VRTDataset")):
        return name
    url = _URL.match(name)
    if url is not None:
        return _url_source(name, url.group(1))
    if _SUBDATASET.match(name) and not Path(text).exists():
        return name
    return Path(text)


def _url_source(url: str, scheme: str) -> str | Path:
    parts = scheme.lower().split("+")
    if parts == ["file"]:
        return Path(unquote(urlsplit(url).path))
    if len(parts) == 1 and parts[0] in URL_PREFIXES:
        prefix = URL_PREFIXES[parts[0]]
        rest = url[len(scheme) + 3:]
        return prefix + (url if prefix == "/vsicurl/" else rest)
    if len(parts) > 1 and all(p in _CHAINABLE for p in parts):
        return url  # rasterio turns zip+https://a.zip!b.tif into /vsizip/vsicurl/...
    raise ArgumentError(f"'{url}': geomax reads rasters at {', '.join(s + '://' for s in URL_PREFIXES)} URLs, "
                        f"/vsi... names and GDAL subdataset names, not '{scheme}://'. Give the raster in one of "
                        "those forms (or download it and give the local path).")


def is_gdal_name(raster: str | os.PathLike) -> bool:
    """Whether ``raster`` is a GDAL dataset name (URL, ``/vsi...``, subdataset), not a local path."""
    return isinstance(raster_source(raster), str)


def local_path(raster) -> Path | None:
    """The local path of ``raster`` (``None`` for a GDAL dataset name or anything that is not a path)."""
    if not isinstance(raster, (str, os.PathLike)):
        return None
    source = raster_source(raster)
    return source if isinstance(source, Path) else None


def _what(what: str) -> str:
    return what[:1].upper() + what[1:]


def _missing(raster, what: str) -> DataError:
    return DataError(f"{_what(what)} '{raster}' does not exist. Check the path (relative paths start from the current "
                     "folder).")


def _cannot_open(raster, source: str | Path, what: str, exc: Exception) -> DataError:
    reason = str(exc).strip().rstrip(".")  # GDAL's message
    if isinstance(source, Path):
        return DataError(f"{_what(what)} '{raster}' cannot be read (corrupt or not a raster: {reason}). Is it a valid "
                         "raster? Check that it is a raster GDAL reads (GeoTIFF, ...), not cut short; re-export or "
                         "re-download it.")
    opened_as = f" (opened as '{source}')" if str(raster) != source else ""
    scheme = _URL.match(source)  # rasterio's chained schemes (zip+https://...) stay URLs
    chained = set(scheme.group(1).lower().split("+")) if scheme is not None else set()
    if source.startswith("/vsicurl/") or chained & {"http", "https", "ftp"}:
        hint = ("Check the URL and that this machine reaches it (a browser, curl or gdalinfo on the same name); a "
                "server must answer HTTP range requests")
    elif source.startswith(("/vsis3/", "/vsigs/", "/vsiaz/", "/vsioss/")):
        hint = ("Check the bucket and key, and the credentials GDAL reads (AWS_PROFILE or AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT / "
                "AZURE_STORAGE_ACCESS_KEY...; AWS_NO_SIGN_REQUEST=YES for a public bucket)")
    elif source.startswith("/vsi"):
        hint = "Check the archive or file path inside the name (/vsizip//path/to/file.zip/inner.tif)"
    else:
        hint = "Check the name (gdalinfo on the file lists its subdatasets)"
    return DataError(f"{_what(what)} '{raster}'{opened_as} cannot be opened: {reason}. {hint}.")


def check_raster(raster: str | os.PathLike, what: str = "input raster") -> str | Path:
    """:func:`raster_source` of ``raster`` after checking that it can be read; nothing is kept open.

    A local file is checked to exist (read later, by its reader); a GDAL dataset name is
    opened once (its header: one request for a remote file).

    Parameters
    ----------
    raster:
        As :func:`raster_source`.
    what:
        What the raster is, for the message (``"input raster"``, ``"panoptic raster"``).

    Raises
    ------
    DataError
        The local file does not exist, or GDAL cannot open the dataset name (the message
        names it, gives GDAL's reason and what to check).
    ArgumentError
        See :func:`raster_source`.
    """
    source = raster_source(raster)
    if isinstance(source, Path):
        if not source.exists():
            raise _missing(raster, what)
        return source
    with open_raster(raster, what):
        pass
    return source


def open_raster(raster: str | os.PathLike, what: str = "input raster"):
    """``rasterio.open`` of :func:`raster_source` (``raster``), for reading, with geomax errors.

    Returns
    -------
    rasterio.io.DatasetReader
        The open dataset (use it in a ``with`` block).

    Raises
    ------
    DataError
        A missing local file ("does not exist"), a local file GDAL cannot read (corrupt,
        not a raster), or a dataset name GDAL cannot open (unreachable URL, missing
        credentials, a wrong path inside an archive), with GDAL's message.
    ArgumentError
        See :func:`raster_source`.
    """
    import rasterio

    source = raster_source(raster)
    if isinstance(source, Path) and not source.exists():
        raise _missing(raster, what)
    try:
        return rasterio.open(source)
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise _cannot_open(raster, source, what, exc) from exc


def raster_stem(raster: str | os.PathLike) -> str:
    """A file-name stem for outputs named after ``raster``: its file name without extension.

    For a URL or ``/vsi...`` name, the last path segment (query string left out:
    ``https://h/a/scene.tif?sig=x`` -> ``scene``); for a subdataset string, the file's
    stem and the subdataset (``NETCDF:"/d/f.nc":temp`` -> ``f_temp``). Characters that do
    not belong in a file name become ``_``.
    """
    source = raster_source(raster)
    if isinstance(source, Path):
        return source.stem
    name = source
    for prefix in sorted(set(URL_PREFIXES.values()), key=len, reverse=True):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    sub = _SUBDATASET.match(name) if not name.startswith(("/vsi", "<")) else None
    if sub is not None and not _URL.match(name):
        body = name[sub.end():]
        quoted = re.match(r'\s*"([^"]*)"', body)
        if quoted:
            file_part, rest = quoted.group(1), body[quoted.end():]
        else:
            file_part, _, rest = body.partition(":")
        tail = [s for s in re.split(r"[:/]", rest) if s]
        stem = "_".join(s for s in (Path(file_part).stem, tail[-1] if tail else "") if s)
    else:
        path = urlsplit(name).path if _URL.match(name) else name.split("?", 1)[0]
        stem = Path(unquote(path.rstrip("/")).rsplit("/", 1)[-1]).stem
    return re.sub(r"[^\w.-]+", "_", stem).strip("_.") or "raster"
