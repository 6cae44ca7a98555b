"""The full MaX-DeepLab network: backbone -> decoder -> heads, plus input padding
and loading of user checkpoints.

Input sides must be multiples of :data:`INPUT_MULTIPLE` (16, the backbone's
output stride); :func:`pad_to_multiple` pads an image to that. Because the
axial attention uses a fixed-size relative positional table (clamped beyond its
span) and everything else is convolutional, the same weights run at any such
size (trained at 256 px, predicting 512 or 640 px tiles).
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geomax.common import (
    PRED_CLASS_LOGITS,
    PRED_DETAIL_FEATURES,
    PRED_MASK_LOGITS,
    PRED_MEMORY_FEATURES,
    PRED_PIXEL_FEATURES,
    PRED_SEMANTIC_LOGITS,
)
from geomax.config import NetworkConfig
from geomax.errors import ArgumentError, InputMismatchError, ModelError
from geomax.models.maxdeeplab.backbone import AxialResNetBackbone
from geomax.models.maxdeeplab.decoder import Decoder
from geomax.models.maxdeeplab.heads import ClassHead, DetailHead, MaskHead, PixelHead, SemanticHead
from geomax.models.maxdeeplab.layers import conv_bn
from geomax.models.maxdeeplab.stem import adapt_first_conv_weight

#: Image height and width must be multiples of this (the backbone's output stride).
INPUT_MULTIPLE = 16


def pad_to_multiple(image: Any, multiple: int = INPUT_MULTIPLE, value: float = 0.0
                    ) -> tuple[Any, tuple[int, int]]:
    """Pad an image at the bottom and right so both sides are multiples of ``multiple``.

    Parameters
    ----------
    image : torch.Tensor or numpy.ndarray
        (..., H, W) image or batch, e.g. (bands, H, W) or (B, bands, H, W).
    multiple : int
        Required multiple (:data:`INPUT_MULTIPLE` for this network).
    value : float
        Fill value (0, the value of normalised no-data pixels).

    Returns
    -------
    padded, (pad_h, pad_w)
        The padded array (same type) and the rows / columns added; crop the
        predictions with ``[..., :H, :W]`` (at the output stride s: ``:H // s``,
        after resizing).
    """
    if multiple < 1:
        raise ArgumentError(f"multiple must be >= 1, got {multiple}")
    if image.ndim < 2:
        raise InputMismatchError(f"expected an image with at least 2 dimensions (H, W), got "
                                 f"shape {tuple(image.shape)}")
    h, w = image.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return image, (0, 0)
    if isinstance(image, torch.Tensor):
        return F.pad(image, (0, pad_w, 0, pad_h), value=value), (pad_h, pad_w)
    widths = [(0, 0)] * (image.ndim - 2) + [(0, pad_h), (0, pad_w)]
    return np.pad(image, widths, constant_values=value), (pad_h, pad_w)


class MaXDeepLabNetwork(nn.Module):
    """MaX-DeepLab mask transformer (axial-ResNet backbone, dual-path transformer, heads).

    Build it through :func:`geomax.models.maxdeeplab.build_maxdeeplab` with a named
    variant; the constructor takes a :class:`~geomax.config.NetworkConfig` (defaults:
    the paper's MaX-DeepLab-S) and/or its settings as keywords, described below.

    Parameters
    ----------
    in_channels : int
        Image bands.
    num_classes : int
        C, real classes; class and semantic logits have C + 1 entries (0 = void).
    config : NetworkConfig, optional
        The architecture; keyword ``options`` override its settings.
    stem_channels : sequence of 3 ints
        Widths of the three stem convolutions.
    stage_filters : sequence of 4 ints
        Base widths of stages 2-5 (block outputs are 4x).
    stage_blocks : sequence of 4 ints
        Blocks in stages 2-5 (stage 4: first block is a strided conv, the rest axial).
    num_heads : int
        Heads of axial and dual-path attention.
    max_span : int
        Span of the relative positional table (distances up to ``max_span - 1``;
        clamped beyond).
    attention_bottleneck_expansion, key_expansion, value_expansion : float
        Channel ratios of the axial blocks (2, 1, 2).
    num_slots : int
        N, memory slots (mask proposals).
    memory_channels : int
        Dm, memory width.
    transformer_filters : int
        Base width of the dual-path layers (bottleneck ``2x``, keys ``1x``, values ``2x``).
    transformer_ffn_channels : int
        Hidden width of the memory feed-forward network.
    extra_blocks : int
        Axial + dual-path blocks after the backbone at stride 16.
    decoder_num_stacks : int
        L, stacked decoder repeats (0: a single 16 -> 8 -> 4 pass).
    decoder_blocks : int
        Residual blocks after each decoder fusion.
    head_channels : int
        Width of the pixel / semantic head convolutions and of the memory
        feed-forward layers of the class and mask heads.
    feature_dim : int
        D, dimension of pixel features and mask kernels.
    drop_path_rate : float
        Drop-path rate at stride 16 (linear schedule before).
    void_prior : float
        Initial p(void) of every slot.
    mask_logit_scale_init : float
        Initial shared scale of the mask logits.
    semantic_feature : str
        What the auxiliary semantic head reads: ``"decoder"`` (the decoder output
        at the output stride, as deeplab2 does with a stacked decoder or its
        auxiliary semantic decoder: per-pixel class supervision at high
        resolution, which small objects need) or ``"backbone"`` (the stride-16
        backbone output, resized; what a saved config without this key rebuilds).
    output_stride : int
        Resolution of masks, pixel features and semantic logits: 4 (the paper),
        2 (one more decoder fusion with the stem feature; small objects such as
        vehicles of a few pixels keep enough mask cells, at about 4x the cost of
        the mask-level work) or 1 (then a last fusion with a light full-resolution
        feature of the image, two 3x3 conv-BN-ReLU of ``full_res_channels``; the
        heads stay at stride 2 and a :class:`DetailHead` adds a full-resolution term
        to the upsampled mask logits: masks at the pixel, for objects only a few
        pixels wide or gaps of one pixel, at about 1.4x the training time of stride 2).
    full_res_channels : int
        Width of the full-resolution image feature and of the detail embedding
        (``output_stride=1`` only).
    """

    def __init__(self, in_channels: int, num_classes: int, config: NetworkConfig | None = None,
                 **options: Any) -> None:
        super().__init__()
        if int(in_channels) < 1:
            raise ArgumentError(f"in_channels must be >= 1, got {in_channels}")
        if int(num_classes) < 1:
            raise ArgumentError(f"num_classes must be >= 1 (real classes, void excluded), "
                                f"got {num_classes}")
        cfg = NetworkConfig.build(config, **options)
        (stem_channels, stage_filters, stage_blocks, num_heads, max_span, num_slots, memory_channels,
         transformer_filters, transformer_ffn_channels, extra_blocks, decoder_num_stacks, decoder_blocks,
         head_channels, feature_dim, drop_path_rate, output_stride, semantic_feature, full_res_channels) = (
            cfg.stem_channels, cfg.stage_filters, cfg.stage_blocks, cfg.num_heads, cfg.max_span, cfg.num_slots,
            cfg.memory_channels, cfg.transformer_filters, cfg.transformer_ffn_channels, cfg.extra_blocks,
            cfg.decoder_num_stacks, cfg.decoder_blocks, cfg.head_channels, cfg.feature_dim, cfg.drop_path_rate,
            cfg.output_stride, cfg.semantic_feature, cfg.full_res_channels)
        void_prior, mask_logit_scale_init = cfg.void_prior, cfg.mask_logit_scale_init
        attention_bottleneck_expansion = cfg.attention_bottleneck_expansion
        key_expansion, value_expansion = cfg.key_expansion, cfg.value_expansion
        self.semantic_feature = semantic_feature
        self.output_stride = int(output_stride)
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.num_slots = int(num_slots)
        self.input_multiple = INPUT_MULTIPLE
        self.config: dict[str, Any] = {}  # filled by build_maxdeeplab

        axial = dict(num_heads=num_heads, max_span=max_span,
                     bottleneck_expansion=attention_bottleneck_expansion,
                     key_expansion=key_expansion, value_expansion=value_expansion)
        transformer = dict(memory_channels=memory_channels, filters=transformer_filters,
                           num_heads=num_heads, ffn_channels=transformer_ffn_channels)
        self.backbone = AxialResNetBackbone(in_channels, stem_channels, stage_filters,
                                            stage_blocks, transformer, axial, drop_path_rate)
        # Learned initial memory, one row per slot (deeplab2: N(0, 1) initialisation).
        self.memory = nn.Parameter(torch.randn(1, num_slots, memory_channels))
        f2, f3, _, f5 = stage_filters
        channels = dict(self.backbone.channels)
        # Full-resolution image feature for output_stride 1 (the stem's first conv is strided).
        self.full_res = None
        if self.output_stride == 1:
            c = int(full_res_channels)
            self.full_res = nn.Sequential(conv_bn(in_channels, c, 3), conv_bn(c, c, 3))
            channels[1] = c
        self.decoder = Decoder(channels, f5, f3, f2, extra_blocks,
                               decoder_num_stacks, decoder_blocks, transformer, axial,
                               drop_path_rate, output_stride, max(f2 // 2, 4), max(f2 // 4, 4))
        # Pixel, semantic and mask heads read the decoder at stride max(output_stride, 2);
        # at output_stride 1 a detail head adds the full-resolution term to the mask logits.
        head_in = self.decoder.channels_by_stride[max(self.output_stride, 2)]
        self.detail_head = (DetailHead(self.decoder.channels_by_stride[1], memory_channels, int(full_res_channels))
                            if self.output_stride == 1 else None)
        self.pixel_head = PixelHead(head_in, head_channels, feature_dim)
        self.mask_head = MaskHead(memory_channels, head_channels, feature_dim,
                                  mask_logit_scale_init)
        self.class_head = ClassHead(memory_channels, head_channels, num_classes, void_prior)
        semantic_in = (head_in if semantic_feature == "decoder"
                       else self.backbone.channels[16])
        self.semantic_head = SemanticHead(semantic_in, head_channels, num_classes)

    # ------------------------------------------------------------------ parameter groups
    def backbone_parameters(self) -> list[nn.Parameter]:
        """Pixel-path parameters of the backbone: stem and every residual block of stages 2-5.

        These are the weights an ImageNet-style checkpoint would provide; freeze them or
        give them a lower learning rate.
        """
        return self.backbone.pixel_parameters()

    def transformer_parameters(self) -> list[nn.Parameter]:
        """Everything else: memory, dual-path layers, decoder and the four heads."""
        ids = {id(p) for p in self.backbone_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def param_groups(self) -> list[list[nn.Parameter]]:
        """``[backbone_parameters, transformer_parameters]`` (a fastai splitter's output)."""
        return [self.backbone_parameters(), self.transformer_parameters()]

    def first_conv(self) -> nn.Conv2d:
        """The convolution that reads the image bands."""
        return self.backbone.stem.first_conv

    # ------------------------------------------------------------------ forward
    def check_input(self, image: torch.Tensor) -> None:
        """Raise :class:`InputMismatchError` unless ``image`` is (B, in_channels, H, W) with
        H and W multiples of :data:`INPUT_MULTIPLE`."""
        if not isinstance(image, torch.Tensor) or image.ndim != 4:
            shape = tuple(getattr(image, "shape", ()))
            raise InputMismatchError(f"expected an image batch (B, {self.in_channels}, H, W), "
                                     f"got shape {shape}")
        if image.shape[1] != self.in_channels:
            raise InputMismatchError(
                f"the model expects {self.in_channels} bands but the image has {image.shape[1]}; "
                f"select the bands the model was trained on (or build a model for "
                f"{image.shape[1]} bands)")
        h, w = image.shape[-2:]
        if h % INPUT_MULTIPLE or w % INPUT_MULTIPLE or h == 0 or w == 0:
            raise InputMismatchError(
                f"image size {h}x{w} is not a multiple of {INPUT_MULTIPLE}; pad it with "
                f"geomax.models.maxdeeplab.pad_to_multiple and crop the outputs (or use a size that is a "
                f"multiple of {INPUT_MULTIPLE})")

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict masks, classes, semantic logits and features.

        Parameters
        ----------
        image : torch.Tensor
            (B, in_channels, H, W) normalised image, H and W multiples of 16.

        Returns
        -------
        dict
            ``PRED_MASK_LOGITS`` (B, N, H/s, W/s) pre-softmax mask logits,
            ``PRED_CLASS_LOGITS`` (B, N, C + 1), ``PRED_SEMANTIC_LOGITS``
            (B, C + 1, H/s, W/s), ``PRED_PIXEL_FEATURES`` (B, D, H/s, W/s) unit norm,
            ``PRED_MEMORY_FEATURES`` (B, N, Dm); keys from :mod:`geomax.common`;
            s is ``output_stride``; the pixel features are at stride ``max(s, 2)``;
            with ``s = 1`` also ``PRED_DETAIL_FEATURES`` (B, d, H, W) unit norm.
        """
        self.check_input(image)
        b = image.shape[0]
        memory = self.memory.expand(b, -1, -1)
        features, activated, memory = self.backbone(image, memory)
        if self.full_res is not None:
            features = {**features, 1: self.full_res(image)}
        out_size = (image.shape[-2] // self.output_stride, image.shape[-1] // self.output_stride)
        by_stride, memory = self.decoder(features, activated, memory)
        decoded = torch.relu(by_stride[max(self.output_stride, 2)])
        pixel_features = self.pixel_head(decoded)
        mask_logits = self.mask_head(memory, pixel_features)
        extra = {}
        if self.detail_head is not None:
            detail = self.detail_head.embed(torch.relu(by_stride[1]))
            mask_logits = F.interpolate(mask_logits, size=out_size, mode="bilinear", align_corners=False)
            mask_logits = mask_logits + self.detail_head(memory, detail)
            extra[PRED_DETAIL_FEATURES] = detail
        return {
            PRED_MASK_LOGITS: mask_logits,
            PRED_CLASS_LOGITS: self.class_head(memory),
            PRED_SEMANTIC_LOGITS: self.semantic_head(
                decoded if self.semantic_feature == "decoder" else activated, out_size),
            PRED_PIXEL_FEATURES: pixel_features,
            PRED_MEMORY_FEATURES: memory,
            **extra,
        }

    # ------------------------------------------------------------------ checkpoints
    def load_pretrained(self, path: str | os.PathLike) -> dict[str, list[str]]:
        """Load a user checkpoint (state dict) into this network, no downloads.

        Accepts a raw state dict or a dict holding it under ``"model"`` or
        ``"state_dict"``. The first convolution is adapted to this network's band
        count with :func:`~geomax.models.maxdeeplab.stem.adapt_first_conv_weight`
        (extra bands get the mean kernel; all scaled by ``k / bands``). Other
        tensors whose shape differs (e.g. the class head for another class count)
        are skipped with a warning.

        Returns
        -------
        dict
            ``{"loaded": [...], "skipped": [...], "missing": [...]}`` parameter names.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ModelError(f"pretrained checkpoint {path!r} does not exist; give the path of "
                             f"a .pth file saved with torch.save(model.state_dict(), path)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt file, not a torch file
            raise ModelError(f"cannot read checkpoint {path!r}: {exc}; check that it is a .pth file saved with "
                             "torch.save(model.state_dict(), path) and not cut short") from exc
        if isinstance(state, dict):
            for key in ("model", "state_dict"):
                if key in state and isinstance(state[key], dict):
                    state = state[key]
                    break
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                                  for v in state.values()):
            raise ModelError(f"checkpoint {path!r} does not hold a state dict of tensors; save it with "
                             "torch.save(model.state_dict(), path)")
        own = self.state_dict()
        # convolutions that read the image bands (the full-resolution one at output stride 1)
        band_keys = ("backbone.stem.conv1.0.weight", "full_res.0.0.weight")
        loaded, skipped = [], []
        new_state = {}
        for key, value in state.items():
            if key not in own:
                skipped.append(key)
                continue
            target = own[key].shape
            if key in band_keys and value.shape != target and value.ndim == 4 \
                    and value.shape[0] == target[0] and value.shape[2:] == target[2:]:
                value = adapt_first_conv_weight(value, self.in_channels)
            if value.shape != own[key].shape:
                skipped.append(key)
                continue
            new_state[key] = value
            loaded.append(key)
        if not loaded:
            raise ModelError(f"no tensor of {path!r} matches this network; was it saved from a "
                             f"MaX-DeepLab network of this package? Pass a checkpoint saved from a geomax "
                             "MaX-DeepLab network")
        self.load_state_dict(new_state, strict=False)
        missing = [k for k in own if k not in new_state]
        if skipped:
            warnings.warn(f"pretrained checkpoint: skipped {len(skipped)} tensors that do not fit "
                          f"this network (e.g. {skipped[:3]})")
        return {"loaded": loaded, "skipped": skipped, "missing": missing}
