"""Data for the three HW2 models: the hw2_data builder (``python -m training.data``) and its readers.

The readers (``training.data.datasets``) import torch, so they are not imported here:
the builder runs without it.
"""

from training.data.build import PARTS, DataSourceError, build_all, check_sources

__all__ = ["PARTS", "DataSourceError", "build_all", "check_sources"]
