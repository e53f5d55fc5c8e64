"""Datasets: in-memory uint8 arrays with on-device preprocessing (the default where a dataset
fits), and a streaming path built on grain over TFDS array_record (`normjax.data.streaming`,
grain imported only when a pipeline is built)."""

from normjax.data.augment import preprocess
from normjax.data.sources import DATASETS, SYNTHETIC_DEFAULTS, Dataset, default_data_dir, load_dataset
from normjax.data.streaming import (STATE_BYTES, DevicePrefetcher, Layout, StreamingSource, TrainStream, Workers,
                                    eval_batches, open_tfds, state_from_array, state_to_array, tfds_image_info)

__all__ = ['DATASETS', 'STATE_BYTES', 'SYNTHETIC_DEFAULTS', 'Dataset', 'DevicePrefetcher', 'Layout', 'StreamingSource',
           'TrainStream', 'Workers', 'default_data_dir', 'eval_batches', 'load_dataset', 'open_tfds', 'preprocess',
           'state_from_array', 'state_to_array', 'tfds_image_info']
