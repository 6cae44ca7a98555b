"""Why a training learned nothing: the causes geomax can see, and what to try.

:func:`empty_training_causes` looks at what a run leaves (the validation metrics, the
steps run) and at a sample of the training labels; :func:`warn_if_empty` turns them into
one plain warning when the validation PQ is 0 or the model predicted nothing.
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["label_shares", "empty_training_causes", "is_empty", "warn_if_empty", "MIN_STEPS"]

#: Fewer optimiser steps than this rarely find any object (a few thousand are usual).
MIN_STEPS = 500
_SAMPLE_CHIPS = 64


def label_shares(dataset, n_chips: int = _SAMPLE_CHIPS) -> tuple[float, dict[str, float]]:
    """Share of valid pixels with a label, and each class's share of the labelled pixels, over sampled chips."""
    n = dataset.n_chips
    if n == 0:
        return 0.0, {}
    idx = np.unique(np.linspace(0, n - 1, min(n, n_chips)).astype(int))
    counts = np.zeros(dataset.class_table.n_classes + 1, np.int64)
    n_valid = 0
    for i in idx:
        sample = dataset.load_sample(int(i))
        cls = np.asarray(sample.class_index)[np.asarray(sample.valid, bool)]
        n_valid += cls.size
        counts += np.bincount(cls.ravel().astype(np.int64), minlength=counts.size)[: counts.size]
    labelled = int(counts[1:].sum())
    shares = {dataset.class_table.info(k).name: float(counts[k]) / labelled for k in range(1, counts.size)} \
        if labelled else {}
    return (labelled / n_valid if n_valid else 0.0), shares


def _predicted_nothing(metrics: dict) -> bool:
    per_class = metrics.get("per_class") or {}
    return bool(per_class) and sum(int(d.get("tp", 0)) + int(d.get("fp", 0)) for d in per_class.values()) == 0


def empty_training_causes(metrics: dict, steps: int, batch_size: int, dataset,
                          class_threshold: float | None = None) -> list[str]:
    """The likely causes of an empty result, each with what to try (most likely first)."""
    causes = []
    if steps < MIN_STEPS:
        causes.append(f"only {steps} training steps ran (batches of {batch_size}); MaX-DeepLab usually needs "
                      "thousands before it finds objects: train longer (more --minutes or --epochs)")
    labelled, shares = label_shares(dataset)
    table = dataset.class_table
    if labelled == 0:
        causes.append("every sampled training pixel is void (no label): check the class field and that the labels "
                      "overlap the raster, then export again")
    elif labelled < 0.5 and not table.stuff_values:
        causes.append(f"only {100 * labelled:.0f}% of the valid training pixels carry a label and the rest is void, "
                      "so the model is never shown where the things are not: export again with --background class")
    rare = [f"'{name}' {100 * share:.2f}%" for name, share in shares.items() if share < 0.01]
    if rare:
        causes.append(f"class imbalance: {', '.join(rare)} of the labelled pixels; such classes need more examples "
                      "or a longer training")
    if _predicted_nothing(metrics):
        shown = f" ({class_threshold:g})" if class_threshold is not None else ""
        causes.append(f"the model predicted nothing on the validation chips: the class threshold{shown} may be too "
                      "high for a model this young; try predicting with --class-threshold 0.5 (class_threshold=0.5)")
    return causes


def is_empty(metrics: dict) -> bool:
    """Whether validation metrics show an empty result: PQ 0 (or undefined), or nothing predicted."""
    if not metrics or "all" not in metrics:
        return False
    return not metrics["all"]["pq"] > 0 or _predicted_nothing(metrics)


def warn_if_empty(metrics: dict, steps: int, batch_size: int, dataset, class_threshold: float | None = None,
                  stacklevel: int = 2, emit: bool = True) -> str | None:
    """The message (a ``UserWarning`` too with ``emit``) when the validation PQ is 0 or nothing was predicted."""
    if not is_empty(metrics):
        return None
    what = "predicted nothing" if _predicted_nothing(metrics) else "reached a validation PQ of 0"
    causes = empty_training_causes(metrics, steps, batch_size, dataset, class_threshold)
    message = (f"The model {what}: it has not learned to find the classes yet. Likely causes: "
               + ("; ".join(causes) if causes else "none geomax can see (check the labels with data.show_batch())")
               + ".")
    if emit:
        warnings.warn(message, UserWarning, stacklevel=stacklevel)
    return message
