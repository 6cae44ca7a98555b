"""Fixtures of the inference tests."""
from inference_scene import scene  # noqa: F401  (pytest fixture)
