"""Install geomax: panoptic segmentation of georeferenced imagery with MaX-DeepLab."""
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "geomax" / "_version.py").read_text(), version)

setup(
    name="geomax",
    version=version["__version__"],
    description="Panoptic segmentation of satellite and aerial imagery with MaX-DeepLab (fastai + rasterio + geopandas)",
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["geomax", "geomax.*"]),
    package_data={"geomax": ["py.typed"]},
    install_requires=[
        "torch>=2.1",
        "fastai>=2.7",
        "fastprogress>=1.0",
        "rasterio>=1.3",
        "affine>=2.3",
        "geopandas>=0.14",
        "pyogrio>=0.7",
        "shapely>=2.0",
        "scipy>=1.10",
        "numpy>=1.24",
        "pandas>=2.0",
        "pycocotools>=2.0.7",
        "matplotlib>=3.7",
    ],
    extras_require={
        "test": ["pytest>=7", "dask[distributed]>=2024.1", "accelerate>=0.26", "ruff>=0.4", "mypy>=1.8"],
        "dist": ["dask[distributed]>=2024.1", "accelerate>=0.26"],
    },
    entry_points={"console_scripts": ["geomax=geomax.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: GIS",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
