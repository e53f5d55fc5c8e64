"""Datasets (in-memory uint8 arrays) and on-device preprocessing."""

from normjax.data.augment import preprocess
from normjax.data.sources import DATASETS, SYNTHETIC_DEFAULTS, Dataset, default_data_dir, load_dataset

__all__ = ['DATASETS', 'SYNTHETIC_DEFAULTS', 'Dataset', 'default_data_dir', 'load_dataset', 'preprocess']
