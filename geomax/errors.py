"""Exceptions raised by geomax.

Every error a user can cause (bad path, wrong CRS, band mismatch, bad
argument...) is raised as a subclass of :class:`GeomaxError` with a message
that says what was wrong and how to fix it, before any output is written.
"""


class GeomaxError(Exception):
    """Base class of every error geomax raises on bad input."""


class DataError(GeomaxError):
    """A training-data folder, raster or label file is missing, corrupt or inconsistent."""


class ModelError(GeomaxError):
    """A model folder, checkpoint or model definition (.emd / .dlpk) is missing or invalid."""


class InputMismatchError(GeomaxError):
    """Input data does not match what the model expects (band count, band order, tile size)."""


class OutputExistsError(GeomaxError):
    """An output already exists and ``overwrite=True`` was not given."""


class ArgumentError(GeomaxError, ValueError):
    """A function argument has an invalid value."""


class OutputError(GeomaxError, OSError):
    """An output could not be written (disk full, read-only folder, ...); nothing the user had was changed."""
