"""Large-raster inference: tiling, cross-tile stitching, COG writing and vectorisation.

The entry point is :func:`geomax.inference.predict_raster.predict_raster`; it drives
any per-tile predictor (:class:`~geomax.inference.predictor.TilePredictor`).
"""
