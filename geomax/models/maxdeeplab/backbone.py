"""Block groups (a stage of residual blocks, optionally each followed by a
dual-path transformer layer) and the axial-ResNet backbone of MaX-DeepLab."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from geomax.errors import ArgumentError
from geomax.models.maxdeeplab.axial_block import AxialBlock
from geomax.models.maxdeeplab.bottleneck import ConvBottleneck
from geomax.models.maxdeeplab.dual_path import DualPathTransformerLayer
from geomax.models.maxdeeplab.stem import InceptionStem


class BlockGroup(nn.Module):
    """A stage: ``num_blocks`` residual blocks, optionally each followed by a dual-path layer.

    Parameters
    ----------
    in_channels : int
        Input channels.
    filters : int
        Base width of the blocks (output ``4 * filters``).
    num_blocks : int
        Number of residual blocks.
    stride : int
        Stride of the first block (1 or 2).
    block_types : sequence of {"conv", "axial"}
        Type of each block.
    transformer : dict or None
        Keyword arguments of :class:`DualPathTransformerLayer` (without
        ``pixel_channels``); ``None`` for a stage without memory path.
    axial : dict
        Keyword arguments forwarded to :class:`AxialBlock` (heads, span, expansions).
    drop_path : float
        Drop-path rate of every block in the group.
    """

    def __init__(self, in_channels: int, filters: int, num_blocks: int, stride: int,
                 block_types: Sequence[str], transformer: dict | None, axial: dict,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ArgumentError(f"a stage needs at least one block, got num_blocks={num_blocks}")
        if len(block_types) != num_blocks:
            raise ArgumentError("block_types must give one type per block")
        self.blocks = nn.ModuleList()
        self.transformers = nn.ModuleList()
        channels = in_channels
        for i, kind in enumerate(block_types):
            s = stride if i == 0 else 1
            if kind == "conv":
                block: ConvBottleneck | AxialBlock = ConvBottleneck(channels, filters, s, drop_path)
            elif kind == "axial":
                if s != 1:
                    raise ArgumentError("axial blocks do not stride; make the first block 'conv'")
                block = AxialBlock(channels, filters, drop_path=drop_path, **axial)
            else:
                raise ArgumentError(f"unknown block type {kind!r}; use 'conv' or 'axial'")
            self.blocks.append(block)
            channels = block.out_channels
            if transformer is not None:
                self.transformers.append(DualPathTransformerLayer(
                    channels, drop_path=drop_path, **transformer))
        self.out_channels = channels

    @property
    def has_transformer(self) -> bool:
        """True when the blocks are followed by dual-path transformer layers."""
        return len(self.transformers) > 0

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Activated input -> (non-activated output, memory)."""
        pre = x
        for i, block in enumerate(self.blocks):
            pre = block(x)
            if self.has_transformer:
                pre, memory = self.transformers[i](pre, memory)
            x = torch.relu(pre)
        return pre, memory


class AxialResNetBackbone(nn.Module):
    """Stem + four stages (output strides 4, 8, 16, 16) of MaX-DeepLab's backbone.

    * stem: three 3x3 convs, the first strided (stride 2), no max-pool;
    * stage 2 (stride 4) and stage 3 (stride 8): conv bottlenecks;
    * stage 4 (stride 16): a strided conv bottleneck, then axial blocks;
    * stage 5 (stride 16, no further striding): axial blocks, each followed by a
      dual-path transformer layer (the memory path starts here).

    Parameters
    ----------
    in_channels : int
        Image bands.
    stem_channels : sequence of 3 ints
        Stem widths.
    stage_filters : sequence of 4 ints
        Base widths of stages 2-5 (outputs are 4x these).
    stage_blocks : sequence of 4 ints
        Blocks per stage.
    transformer : dict
        :class:`DualPathTransformerLayer` keyword arguments for stage 5.
    axial : dict
        :class:`AxialBlock` keyword arguments.
    drop_path_rate : float
        Drop-path rate at stride 16; earlier stages use a linear schedule
        (stage k of 4 gets ``rate * k / 4``), as deeplab2 does.
    """

    def __init__(self, in_channels: int, stem_channels: Sequence[int],
                 stage_filters: Sequence[int], stage_blocks: Sequence[int],
                 transformer: dict, axial: dict, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if len(stage_filters) != 4 or len(stage_blocks) != 4:
            raise ArgumentError("stage_filters and stage_blocks need 4 entries (stages 2-5); pass one value per "
                                "stage, as the variants in geomax.models.maxdeeplab.variants do")
        if stage_blocks[2] < 2:
            raise ArgumentError("stage 4 needs >= 2 blocks (a strided conv block, then axial); set "
                                "stage_blocks[2] to at least 2")
        self.stem = InceptionStem(in_channels, stem_channels)
        f2, f3, f4, f5 = (int(f) for f in stage_filters)
        n2, n3, n4, n5 = (int(n) for n in stage_blocks)
        self.stage2 = BlockGroup(self.stem.out_channels, f2, n2, 2, ["conv"] * n2, None, axial,
                                 drop_path_rate * 1 / 4)
        self.stage3 = BlockGroup(self.stage2.out_channels, f3, n3, 2, ["conv"] * n3, None, axial,
                                 drop_path_rate * 2 / 4)
        self.stage4 = BlockGroup(self.stage3.out_channels, f4, n4, 2,
                                 ["conv"] + ["axial"] * (n4 - 1), None, axial,
                                 drop_path_rate * 3 / 4)
        self.stage5 = BlockGroup(self.stage4.out_channels, f5, n5, 1, ["axial"] * n5,
                                 transformer, axial, drop_path_rate)
        self.channels = {2: self.stem.out_channels, 4: self.stage2.out_channels,
                         8: self.stage3.out_channels, 16: self.stage5.out_channels}

    def pixel_parameters(self) -> list[nn.Parameter]:
        """Parameters of the pixel path (stem and every residual block), not the memory path."""
        params = list(self.stem.parameters())
        for stage in (self.stage2, self.stage3, self.stage4, self.stage5):
            params += list(stage.blocks.parameters())
        return params

    def forward(self, image: torch.Tensor, memory: torch.Tensor
                ) -> tuple[dict[int, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Run the backbone.

        Returns
        -------
        features : dict
            Non-activated features by output stride (2: the stem, 4, 8, 16); stride 16
            is the stage-5 output.
        activated : torch.Tensor
            Activated stage-5 output (input of the next group and of the semantic head).
        memory : torch.Tensor
            Memory after the stage-5 dual-path layers.
        """
        pre = self.stem(image)
        x = torch.relu(pre)
        features = {2: pre}
        pre, _ = self.stage2(x, None)
        features[4] = pre
        pre, _ = self.stage3(torch.relu(pre), None)
        features[8] = pre
        pre, _ = self.stage4(torch.relu(pre), None)
        pre, memory = self.stage5(torch.relu(pre), memory)
        features[16] = pre
        return features, torch.relu(pre), memory
