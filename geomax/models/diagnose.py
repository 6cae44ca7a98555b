"""Why a training learned nothing, or little: the causes geomax can see, and what to try.

:func:`empty_training_causes` looks at what a run leaves (the validation metrics, the
steps run) and at a sample of the training labels; :func:`warn_if_empty` turns them into
one plain warning when the validation PQ is 0 or the model predicted nothing.
:func:`warn_if_weak` speaks when the model learned something but finds few of the objects
(validation PQ of the things under :data:`WEAK_PQ_THINGS`), as a from-scratch model on real
imagery with a short budget does (the NEON tree crowns of ``benchmarks/neon_variants.py``:
validation PQ_things 0.04-0.12 after 10 CPU minutes, box F1 0.08-0.19).
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["label_shares", "empty_training_causes", "is_empty", "warn_if_empty", "MIN_STEPS",
           "WEAK_PQ_THINGS", "thing_instances", "is_weak", "weak_training_causes", "warn_if_weak"]

#: Fewer optimiser steps than this rarely find any object (a few thousand are usual).
MIN_STEPS = 500
#: Validation PQ of the things under which a model that learned something is called weak: it misses,
#: splits or misplaces most objects (the synthetic user-data cells reach 0.6-0.85 in 10 CPU minutes).
WEAK_PQ_THINGS = 0.25
#: Optimiser steps under which "train longer" leads the causes of a weak result.
WEAK_STEPS = 5000
#: Labelled objects under which "label more" is named.
FEW_OBJECTS = 1000
_SAMPLE_CHIPS = 64


def _sampled_chips(dataset, n_chips: int) -> np.ndarray:
    """Indices of at most ``n_chips`` chips of ``dataset``, evenly spread (all of them when it has fewer)."""
    n = dataset.n_chips
    return np.unique(np.linspace(0, n - 1, min(n, n_chips)).astype(int)) if n else np.zeros(0, int)


def label_shares(dataset, n_chips: int = _SAMPLE_CHIPS) -> tuple[float, dict[str, float]]:
    """Share of valid pixels with a label, and each class's share of the labelled pixels, over sampled chips."""
    idx = _sampled_chips(dataset, n_chips)
    if not idx.size:
        return 0.0, {}
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


def thing_instances(dataset, n_chips: int = _SAMPLE_CHIPS) -> int:
    """Thing instances in the training chips, estimated from sampled chips (the count itself when all are sampled)."""
    idx = _sampled_chips(dataset, n_chips)
    if not idx.size:
        return 0
    found = 0
    for i in idx:
        ids = np.asarray(dataset.load_sample(int(i)).instance)
        found += int(np.unique(ids[ids > 0]).size)
    return int(round(found * dataset.n_chips / len(idx)))


def is_weak(metrics: dict) -> bool:
    """Whether validation metrics show a model that learned something but finds few objects:
    not empty, things in the validation chips, and their PQ under :data:`WEAK_PQ_THINGS`."""
    things = (metrics or {}).get("things") or {}
    if is_empty(metrics) or not things.get("n"):
        return False
    return bool(things.get("pq", float("nan")) < WEAK_PQ_THINGS)


def weak_training_causes(steps: int, batch_size: int, dataset) -> list[str]:
    """What limits a weak result that geomax can see, each with what to try (most likely first)."""
    causes = []
    if steps < WEAK_STEPS:
        causes.append(f"only {steps} training steps ran (batches of {batch_size}): on real imagery a model trained from "
                      "scratch usually needs many thousands: train longer (more --minutes or --epochs), on a GPU if there "
                      "is one")
    objects = thing_instances(dataset)
    if objects < FEW_OBJECTS:
        causes.append(f"about {objects} labelled objects in the training chips; a network that starts from nothing "
                      "learns their look from these alone: label more (thousands are usual)")
    causes.append("the network starts from random weights: start from a geomax model trained on similar imagery "
                  "(--pretrained MODEL_FOLDER, pretrained_path=...) when there is one")
    return causes


def warn_if_weak(metrics: dict, steps: int, batch_size: int, dataset, stacklevel: int = 2,
                 emit: bool = True) -> str | None:
    """The message (a ``UserWarning`` too with ``emit``) when the model finds few of the objects (:func:`is_weak`)."""
    if not is_weak(metrics):
        return None
    things = metrics["things"]
    causes = weak_training_causes(steps, batch_size, dataset)
    rq = f", recognition quality {100 * things['rq']:.1f}" if things.get("rq") is not None else ""
    message = (f"The model finds few of the objects yet: validation PQ of the things {100 * things['pq']:.1f}{rq} "
               f"(geomax calls under {100 * WEAK_PQ_THINGS:.0f} weak). It is usable, but expect missed, split or "
               "merged objects. Likely causes: " + "; ".join(causes) + ".")
    if emit:
        warnings.warn(message, UserWarning, stacklevel=stacklevel)
    return message
