"""What input a model accepts: band selection and order, and checks of the values against the training data.

Shared by ``predict`` (:func:`geomax.data.image_io.read_image`) and ``predict_raster``:

* :func:`select_bands` picks the 1-based bands to read from a raster's band count and
  descriptions and refuses a wrong count, or named bands in another order than the
  model's (the error gives the right ``bands=``);
* :class:`InputSample` gathers statistics of sampled input pixels (per band min, max,
  mean and std over valid pixels, the data type, whether values are fractional);
* :func:`suggest_band_order` compares those statistics with the model's training
  :class:`~geomax.data.normalize.BandStats` and returns a clearly better band order, if any;
* :func:`value_range_problems` lists where the input's value range or data type differs
  from the training data in a way that matters;
* :func:`check_sample` turns both into at most one warning each.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np

from ..errors import ArgumentError, InputMismatchError
from .normalize import BandStats, RunningBandStats

__all__ = ["select_bands", "names_give_order", "band_labels", "InputSample", "suggest_band_order", "value_range_problems",
           "check_sample", "check_image_values"]

#: A band moved by :func:`suggest_band_order` must come closer to its training band by this many
#: training standard deviations (mean and spread distances summed), on average over the moved bands.
MIN_GAIN_PER_MOVED_BAND = 1.0
#: Values further than this many training spans beyond the training range are far outside it.
FAR_OUTSIDE_SPANS = 2.0
#: Training data whose bands all span at least this and hold whole-number extremes came from an integer product.
INTEGER_PRODUCT_MIN_SPAN = 16.0


# --------------------------------------------------------------------------- band selection
def band_labels(descriptions: Sequence[str | None], bands: Sequence[int]) -> list[str]:
    """How messages name the 1-based ``bands`` of a raster: ``band 3 'blue'`` (``band 3`` without a description)."""
    return [f"band {b}" + (f" '{descriptions[b - 1]}'" if descriptions[b - 1] else "") for b in bands]


def names_give_order(descriptions: Sequence[str | None], band_names: Sequence[str] | None) -> bool:
    """True when every band has a description and the model's band names are among them.

    Then the names tell the band order and :func:`select_bands` checks it; otherwise
    only statistics can (:func:`suggest_band_order`).
    """
    names = [str(n) for n in (band_names or [])]
    return bool(names) and all(d for d in descriptions) and set(names) <= set(descriptions)


def select_bands(descriptions: Sequence[str | None], count: int, bands: Sequence[int] | None, n_model: int,
                 band_names: Sequence[str] | None, source, *,
                 default_bands: Sequence[int] | None = None) -> list[int]:
    """The 1-based bands of a raster to read for a model, checked against its band count and names.

    Parameters
    ----------
    descriptions:
        The raster's band descriptions (``src.descriptions``; ``None`` or ``""`` when unset).
    count:
        The raster's band count.
    bands:
        1-based bands asked for, in the model's order (``None``: see ``default_bands``).
    n_model:
        Bands the model takes.
    band_names:
        The model's band names in order (``None`` or empty: unknown, the order is not checked).
    source:
        The raster, as named in messages.
    default_bands:
        Bands to read when ``bands`` is ``None`` and the raster has another band count than
        the model (e.g. the model's ``extract_bands`` + 1); ``None``: that is an error.

    Raises
    ------
    ArgumentError
        A band is not in the raster.
    InputMismatchError
        The band count differs from the model's, or the selected bands' descriptions are
        the model's band names in another order (the message gives the right ``bands``).
    """
    descs = list(descriptions)
    model_names = [str(n) for n in (band_names or [])]
    named = names_give_order(descs, model_names) and len(model_names) == n_model
    if bands is None:
        bands = _default_bands(descs, count, n_model, model_names, source, default_bands, named)
    else:
        bands = [int(b) for b in bands]
        bad = [b for b in bands if not 1 <= b <= count]
        if bad:
            raise ArgumentError(f"bands={bands}: {bad} not in 1..{count} ('{source}' has {count} bands). "
                                f"Give 1-based band numbers between 1 and {count}.")
        if len(bands) != n_model:
            raise InputMismatchError(f"bands={bands} selects {len(bands)} bands but the model takes {n_model} "
                                     f"({model_names or 'unnamed'}). Pass exactly {n_model} bands (1-based), in the "
                                     "model's band order.")
    if named:
        chosen = [descs[b - 1] for b in bands]
        if chosen != model_names:
            expected = [descs.index(n) + 1 for n in model_names]
            raise InputMismatchError(f"Band order mismatch: the selected bands of '{source}' are {chosen} but the "
                                     f"model was trained on {model_names}. Pass bands={expected}.")
    return bands


def _default_bands(descs: list, count: int, n_model: int, model_names: list[str], source,
                   default_bands: Sequence[int] | None, named: bool) -> list[int]:
    """The bands read without ``bands=``: all of them, or ``default_bands`` for another band count."""
    if count == n_model:
        return list(range(1, count + 1))
    if default_bands is not None and len(default_bands) == n_model and all(1 <= b <= count for b in default_bands):
        return [int(b) for b in default_bands]
    hint = f" Pass bands={[descs.index(n) + 1 for n in model_names]} to pick {model_names}." if named else \
        " Pass bands=[...] (1-based) to choose them."
    raise InputMismatchError(f"'{source}' has {count} bands but the model takes {n_model} "
                             f"({model_names or 'unnamed'}).{hint}")


# --------------------------------------------------------------------------- sampled statistics
class InputSample:
    """Statistics of sampled input pixels: per band min, max, mean and std over valid pixels.

    Feed it whole images or a few tiles (:meth:`update`); :func:`check_sample` compares
    it with the model's training statistics.

    Parameters
    ----------
    n_bands:
        Bands of the input (in the model's order).
    dtype:
        The input's data type (a file's band type, an array's dtype).
    """

    def __init__(self, n_bands: int, dtype):
        self.dtype = np.dtype(dtype)
        self._running = RunningBandStats([f"input band {i + 1}" for i in range(int(n_bands))])
        #: True once a sampled valid value has a fractional part.
        self.fractional = False

    def update(self, array: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add an image or tile (bands, H, W); ``valid`` (H, W) selects its pixels (default: finite ones)."""
        array = np.asarray(array)
        if valid is None:
            valid = np.isfinite(array).all(0) if array.dtype.kind == "f" else np.ones(array.shape[1:], bool)
        self._running.update(array, valid)
        if array.dtype.kind == "f" and not self.fractional:
            values = array[:, valid]
            self.fractional = bool(np.any(values != np.round(values)))

    @property
    def n_pixels(self) -> int:
        """Valid pixels sampled."""
        return int(self._running.count.min()) if self._running.count.size else 0

    def stats(self) -> BandStats:
        """The sampled statistics as :class:`~geomax.data.normalize.BandStats` (names ``input band 1``...)."""
        return self._running.result()


# --------------------------------------------------------------------------- band order
def _band_distances(sample: BandStats, training: BandStats) -> np.ndarray:
    """(n, n): how far sample band i lies from training band j, in training standard deviations of band j."""
    scale = training.std[None, :]
    mean_gap = np.abs(sample.mean[:, None] - training.mean[None, :]) / scale
    spread_gap = np.abs(sample.std[:, None] - training.std[None, :]) / scale
    return mean_gap + spread_gap


def suggest_band_order(sample: BandStats, training: BandStats) -> list[int] | None:
    """A band order that matches the training statistics clearly better than the given one, or ``None``.

    Each sample band is matched to a training band by mean and spread (an optimal
    assignment, :func:`scipy.optimize.linear_sum_assignment`). The matching is suggested
    only when it moves bands, every moved band comes closer by at least
    :data:`MIN_GAIN_PER_MOVED_BAND` training standard deviations on average, and the
    given order is at least twice as far off as the suggested one: bands with similar
    statistics never give a suggestion.

    Parameters
    ----------
    sample:
        Statistics of the input's bands, in the order given (e.g. ``InputSample.stats()``).
    training:
        The model's training statistics, in the model's order.

    Returns
    -------
    list[int] or None
        ``order``, 0-based: ``image[order]`` has the model's band order.
    """
    from scipy.optimize import linear_sum_assignment

    n = training.n_bands
    if sample.n_bands != n or n < 2:
        return None
    cost = _band_distances(sample, training)
    rows, cols = linear_sum_assignment(cost)
    moved = int((cols != rows).sum())
    if moved == 0:
        return None
    given, best = float(np.trace(cost)), float(cost[rows, cols].sum())
    if given - best < MIN_GAIN_PER_MOVED_BAND * moved or given < 2.0 * best:
        return None
    return [int(i) for i in np.argsort(cols)]  # cols[i] is the training band of sample band i


def _band_order_message(order: list[int], sample: BandStats, training: BandStats, source: str,
                        labels: Sequence[str], fix: str) -> str:
    looks = [f"{labels[i]} (mean {sample.mean[i]:.4g}, std {sample.std[i]:.4g}) looks like '{training.names[j]}' "
             f"(mean {training.mean[j]:.4g}, std {training.std[j]:.4g})" for j, i in enumerate(order) if i != j]
    return (f"{source}: the bands may be out of order. They have no names that give the order, but their statistics "
            f"match the model's training bands {training.names} much better in another order: {'; '.join(looks)}. "
            f"If the bands are in another order than the training data's, {fix}.")


# --------------------------------------------------------------------------- value range and type
def _training_kind(training: BandStats) -> str:
    """'f' when a training extreme is fractional, else 'i' when a band went negative, else 'u'."""
    extremes = np.concatenate([training.min, training.max])
    if np.any(extremes != np.round(extremes)):
        return "f"
    return "i" if np.any(training.min < 0) else "u"


def _span(training: BandStats) -> np.ndarray:
    return np.maximum(training.max - training.min, training.std)


def _kind_problems(sample: InputSample, training: BandStats) -> list[str]:
    kind, dtype = _training_kind(training), sample.dtype
    span = _span(training)
    problems = []
    if dtype.kind == "f" and sample.fractional and kind != "f" and np.all(span >= INTEGER_PRODUCT_MIN_SPAN):
        problems.append(f"the input holds fractional values ({dtype.name}) but the training data held whole "
                        f"numbers over {training.min.min():g}..{training.max.max():g} (an integer product)")
    elif dtype.kind in "uib" and kind == "f":
        problems.append(f"the input is {dtype.name} but the training data held fractional values over "
                        f"{training.min.min():g}..{training.max.max():g} (a floating-point product)")
    if dtype.kind in "ub" and np.any(training.min < 0):
        problems.append(f"the input is unsigned ({dtype.name}) but the training data had negative values "
                        f"(down to {training.min.min():g})")
    return problems


def _range_problems(sample: BandStats, training: BandStats, labels: Sequence[str]) -> list[str]:
    span = _span(training)
    below = training.min - sample.min
    above = sample.max - training.max
    negative = (sample.min < 0) & (training.min >= 0) & (sample.min < -0.01 * span)
    far = (below > FAR_OUTSIDE_SPANS * span) | (above > FAR_OUTSIDE_SPANS * span)
    return [f"{labels[i]} has values {sample.min[i]:.6g}..{sample.max[i]:.6g} but '{training.names[i]}' spanned "
            f"{training.min[i]:.6g}..{training.max[i]:.6g} in training"
            + (" (negative values where training had none)" if negative[i] else "")
            for i in range(training.n_bands) if negative[i] or far[i]]


def value_range_problems(sample: InputSample, training: BandStats, labels: Sequence[str] | None = None) -> list[str]:
    """Where the sampled input differs from the training data in value range or data type, one line each.

    A problem is: fractional values for a model trained on an integer product (or the
    reverse); unsigned input for training data with negative values; negative values
    where training had none; values more than :data:`FAR_OUTSIDE_SPANS` training spans
    beyond a band's training range. An empty list when nothing matters.

    Parameters
    ----------
    sample:
        The sampled input (its bands in the model's order).
    training:
        The model's training statistics.
    labels:
        How messages name the input's bands (default ``input band 1``...).
    """
    if sample.n_pixels == 0:
        return []
    stats = sample.stats()
    if stats.n_bands != training.n_bands:
        raise ArgumentError(f"The sample has {stats.n_bands} bands, the training statistics {training.n_bands}.")
    labels = list(labels) if labels is not None else stats.names
    return _kind_problems(sample, training) + _range_problems(stats, training, labels)


# --------------------------------------------------------------------------- the checks
def check_sample(sample: InputSample, training: BandStats, source: str, labels: Sequence[str] | None = None, *,
                 order_known: bool = False, fix: Callable[[list[int]], str] | None = None,
                 stacklevel: int = 2) -> list[int] | None:
    """Warn (``UserWarning``, at most one of each) when the sampled input does not look like the training data.

    One warning lists every :func:`value_range_problems`; another, when the band names
    could not tell the order (``order_known`` False), gives the :func:`suggest_band_order`.

    Parameters
    ----------
    sample:
        The sampled input, bands in the order they will be given to the model.
    training:
        The model's training statistics.
    source:
        The input, as named in messages (e.g. ``"'scene.tif'"``).
    labels:
        How messages name the input's bands.
    order_known:
        The bands' names already confirmed their order (:func:`names_give_order`).
    fix:
        Turns a suggested order into the advice of the message (default: "reorder them as ...").
    stacklevel:
        Of the warnings, as if this function called ``warnings.warn`` (2: its caller).

    Returns
    -------
    list[int] or None
        The suggested band order (0-based, see :func:`suggest_band_order`), or ``None``.
    """
    labels = list(labels) if labels is not None else sample.stats().names
    problems = value_range_problems(sample, training, labels)
    if problems:
        warnings.warn(f"{source}: the input values do not look like the model's training data: {'; '.join(problems)}. "
                      "Predictions on such input are unreliable: rescale the input to the training data's range "
                      "and data type, or use the same product (sensor, processing level, data type) as the "
                      "training data.", UserWarning, stacklevel=stacklevel)
    if order_known or sample.n_pixels == 0:
        return None
    stats = sample.stats()
    order = suggest_band_order(stats, training)
    if order is not None:
        advice = fix(order) if fix is not None else f"reorder them as {order} (0-based)"
        warnings.warn(_band_order_message(order, stats, training, source, labels, advice), UserWarning,
                      stacklevel=stacklevel)
    return order


def check_image_values(array: np.ndarray, valid: np.ndarray | None, training: BandStats, source: str,
                       labels: Sequence[str] | None = None, *, order_known: bool = False,
                       fix: Callable[[list[int]], str] | None = None, stacklevel: int = 2) -> list[int] | None:
    """:func:`check_sample` of one whole image (bands, H, W) with its validity (H, W)."""
    sample = InputSample(array.shape[0], array.dtype)
    sample.update(array, valid)
    return check_sample(sample, training, source, labels, order_known=order_known, fix=fix,
                        stacklevel=stacklevel + 1)
