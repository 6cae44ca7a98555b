"""Geoprocessing tool script: Train Deep Learning Model (MaXDeepLab).

Runs with plain Python (`python TrainDeepLearningModel.py --help`); the same tool appears in
ArcGIS Pro through ``geomax.pyt``. Its parameters and the workflow call
they map to are defined once in ``geomax.workflows.tools`` (re-exported by ``_toolspec.py``).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _toolspec import script_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(script_main("TrainDeepLearningModel"))
