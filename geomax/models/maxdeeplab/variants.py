"""Named MaX-DeepLab variants and the one constructor that builds them.

Every variant is a :class:`~geomax.config.NetworkConfig` (the paper's S is the
config's own defaults; the others change some settings); the built module keeps
``.config`` (variant name + every setting, band and class counts included) so
:func:`build_from_config` rebuilds the same architecture without the data.

==================  ==========================================================
variant             use
==================  ==========================================================
``max_deeplab_s``   the paper's MaX-DeepLab-S (about 62 M parameters without
                    the auxiliary semantic head)
``max_deeplab_l``   wide backbone (2x widths), stacked decoder (L = 2), larger memory;
                    about 358 M parameters (the paper's L has 451 M: its
                    wider-ResNet backbone is not reproduced block for block)
``max_deeplab_cpu`` default for CPU training: same code paths, narrow, 32 slots,
                    output stride 1 (stride-2 heads + full-resolution detail
                    term: vehicles a few pixels wide, one-pixel gaps)
``max_deeplab_tiny`` tests and smoke runs: a few narrow blocks, 16 slots, output
                    stride 2
==================  ==========================================================
"""
from __future__ import annotations

import dataclasses
import os
from types import MappingProxyType
from typing import Any, Mapping

from torch import nn

from geomax.config import NetworkConfig, check_known
from geomax.errors import ArgumentError
from geomax.models.maxdeeplab.network import MaXDeepLabNetwork

_S = NetworkConfig()  # the paper's MaX-DeepLab-S: NetworkConfig's own defaults

_L = dataclasses.replace(_S, stage_filters=(128, 256, 512, 1024), stage_blocks=(3, 6, 3, 3), memory_channels=512,
                         transformer_filters=256, decoder_num_stacks=2, drop_path_rate=0.3)

_CPU = dataclasses.replace(_S, stem_channels=(16, 16, 32), stage_filters=(16, 32, 64, 128),
                           stage_blocks=(2, 2, 3, 2), num_slots=32, memory_channels=128,
                           transformer_filters=64, transformer_ffn_channels=256, head_channels=64,
                           feature_dim=64, drop_path_rate=0.0, output_stride=1)

_TINY = dataclasses.replace(_S, stem_channels=(8, 8, 16), stage_filters=(8, 16, 16, 32),
                            stage_blocks=(1, 1, 2, 1), num_heads=4, num_slots=16, memory_channels=32,
                            transformer_filters=16, transformer_ffn_channels=64, head_channels=32,
                            feature_dim=32, drop_path_rate=0.0, output_stride=2)

#: Registry: variant name -> its :class:`~geomax.config.NetworkConfig` (frozen, read-only).
VARIANTS: Mapping[str, NetworkConfig] = MappingProxyType({
    "max_deeplab_s": _S,
    "max_deeplab_l": _L,
    "max_deeplab_cpu": _CPU,
    "max_deeplab_tiny": _TINY,
})


def list_variants() -> list[str]:
    """Names of the registered variants, sorted."""
    return sorted(VARIANTS)


def get_variant(variant: str, **overrides: Any) -> NetworkConfig:
    """The :class:`~geomax.config.NetworkConfig` of a named variant, with optional overrides.

    Raises
    ------
    ArgumentError
        Unknown variant, unknown setting or a value out of range.
    """
    if variant not in VARIANTS:
        raise ArgumentError(f"unknown MaX-DeepLab variant {variant!r}; choose one of "
                            f"{list_variants()}")
    check_known(overrides, NetworkConfig.field_names(), "network")
    return NetworkConfig.build(VARIANTS[variant], **overrides)


def build_maxdeeplab(variant: str, in_channels: int, num_classes: int,
                     pretrained_path: str | os.PathLike | None = None,
                     **overrides: Any) -> MaXDeepLabNetwork:
    """Build a MaX-DeepLab network from a named variant.

    Parameters
    ----------
    variant : str
        One of :func:`list_variants` (``max_deeplab_s``, ``max_deeplab_l``,
        ``max_deeplab_cpu``, ``max_deeplab_tiny``).
    in_channels : int
        Image bands.
    num_classes : int
        Real classes C (void excluded); class logits have C + 1 entries.
    pretrained_path : path, optional
        A user checkpoint (state dict) to load; the first convolution is adapted
        to ``in_channels`` (see :func:`~geomax.models.maxdeeplab.stem.adapt_first_conv_weight`)
        and tensors of other shapes are skipped. Not recorded in ``.config``
        (the config describes the architecture only). Nothing is downloaded.
    **overrides
        Any setting of :class:`~geomax.config.NetworkConfig` to change from the
        variant's (e.g. ``num_slots=64``).

    Returns
    -------
    MaXDeepLabNetwork
        With ``.config`` = ``{"variant": variant, "in_channels": ..., "num_classes": ...,
        **every NetworkConfig setting}`` (JSON-ready).
    """
    config = get_variant(variant, **overrides)
    for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError(f"{name} must be a positive integer, got {value!r}")
    model = MaXDeepLabNetwork(in_channels, num_classes, config)
    model.config = {"variant": variant, "in_channels": in_channels, "num_classes": num_classes,
                    **config.to_dict()}
    if pretrained_path is not None:
        model.load_pretrained(pretrained_path)
    return model


#: Values of ``output_stride`` and ``semantic_feature`` for a saved network config that does
#: not record them: such a network is stride 4 with its semantic head on the backbone
#: (docs/design.md, output stride).
_BEFORE_STRIDE_OPTIONS = {"output_stride": 4, "semantic_feature": "backbone"}


def build_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Rebuild the architecture recorded in a network's ``.config`` (weights not included).

    Parameters
    ----------
    config : mapping
        ``model.config`` of a built network (e.g. read back from a model package).
    """
    if not isinstance(config, Mapping) or "variant" not in config:
        raise ArgumentError("config must be a mapping with a 'variant' key (a network's .config)")
    kwargs = {**_BEFORE_STRIDE_OPTIONS, **config}
    variant = kwargs.pop("variant")
    try:
        in_channels = kwargs.pop("in_channels")
        num_classes = kwargs.pop("num_classes")
    except KeyError as exc:
        raise ArgumentError(f"config is missing {exc.args[0]!r}; pass the full .config of a built network "
                            "(with 'variant', 'in_channels' and 'num_classes')") from None
    return build_maxdeeplab(variant, in_channels, num_classes, **kwargs)
