"""MaX-DeepLab network (Wang et al., CVPR 2021; deeplab2 semantics), one concept per file:

``stem`` -> ``bottleneck`` -> ``axial_attention`` -> ``axial_block`` -> ``dual_path``
-> ``backbone`` -> ``decoder`` -> ``heads`` -> ``network`` -> ``variants``.

Inputs must have sides that are multiples of :data:`INPUT_MULTIPLE` (16); use
:func:`pad_to_multiple` otherwise.
"""
from geomax.models.maxdeeplab.network import INPUT_MULTIPLE, MaXDeepLabNetwork, pad_to_multiple
from geomax.models.maxdeeplab.stem import adapt_first_conv_weight
from geomax.models.maxdeeplab.variants import VARIANTS, build_from_config, build_maxdeeplab, list_variants

__all__ = ["build_maxdeeplab", "build_from_config", "VARIANTS", "list_variants",
           "pad_to_multiple", "INPUT_MULTIPLE", "MaXDeepLabNetwork", "adapt_first_conv_weight"]
