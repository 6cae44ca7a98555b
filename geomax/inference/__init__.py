"""Large-raster inference: tiling, cross-tile stitching, COG writing and vectorisation.

The entry points are :func:`geomax.inference.predict_raster.predict_raster` (one
process) and :func:`geomax.inference.distributed.predict_raster_distributed` (a Dask
cluster). Both drive a loaded per-tile predictor
(:class:`~geomax.inference.predictor.TilePredictor`) through the same job
(:mod:`~geomax.inference.job`), tile loop (:mod:`~geomax.inference.tile_loop`) and
stitcher (:mod:`~geomax.inference.stitching`); loading a saved model is the workflow
layer's work (:func:`geomax.workflows.predict_raster`).
"""
