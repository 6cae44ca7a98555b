"""Dictionary keys shared by the network, the loss, the post-processor and the data.

Defined once here (deeplab2's ``common.py`` habit) and imported everywhere else.

Class indexing inside the model: index 0 is *void / no object* (the empty set of
the MaX-DeepLab paper); indices 1..C follow the ``Classes`` list of the class
table (:class:`geomax.data.classes.ClassTable`).
"""

# ---- network outputs (dict returned by the MaX-DeepLab network's forward) ----
#: (B, N, H/s, W/s) mask logits at the output stride s (network ``output_stride``,
#: 4 by default, 2 as an option), one channel per memory slot.
PRED_MASK_LOGITS = "mask_logits"
#: (B, N, C + 1) class logits per memory slot; index 0 is void.
PRED_CLASS_LOGITS = "class_logits"
#: (B, C + 1, H/s, W/s) auxiliary semantic logits; index 0 (void) is never a training target.
PRED_SEMANTIC_LOGITS = "semantic_logits"
#: (B, D, H/s, W/s) L2-normalised pixel features g.
PRED_PIXEL_FEATURES = "pixel_features"
#: (B, N, Dm) memory (slot) features after the last dual-path layer.
PRED_MEMORY_FEATURES = "memory_features"
#: (B, d, H, W) L2-normalised full-resolution detail embedding (networks with
#: ``output_stride=1`` only; see ``DetailHead``).
PRED_DETAIL_FEATURES = "detail_features"

# ---- training targets (dict, one batch; padded to ``n_masks`` segments) ----
#: (B, H, W) int64 class index per pixel, 0 = void / unlabeled / no data.
GT_SEMANTIC = "semantic"
#: (B, K, H, W) bool, non-overlapping masks: one per thing instance and one per stuff class present.
GT_MASKS = "masks"
#: (B, K) int64 class index of each mask; 0 marks a padding entry (no segment).
GT_CLASSES = "classes"
#: (B, H, W) bool, False on no-data pixels, which every loss and metric ignores.
GT_VALID = "valid"
#: (B, K) bool, True where the mask is a thing instance.
GT_IS_THING = "is_thing"
#: (B, H, W) int64 index k of the mask ``GT_MASKS[:, k]`` holding the pixel, -1 where none (optional:
#: the loss works from it in O(pixels x slots) and derives it from the masks when it is missing).
GT_SEGMENT_INDEX = "segment_index"

TARGET_KEYS = (GT_SEMANTIC, GT_MASKS, GT_CLASSES, GT_VALID, GT_IS_THING, GT_SEGMENT_INDEX)

#: Default output stride of mask logits, pixel features and semantic logits
#: (a network's own is ``network.output_stride``: 4 or 2).
OUTPUT_STRIDE = 4
