"""Datasets: in-memory uint8 arrays with on-device preprocessing (the default where a dataset
fits), and a streaming path built on grain over TFDS array_record (`normjax.data.streaming`,
grain imported only when a pipeline is built). `normjax.data.catalog` finds and describes
TFDS datasets for both."""

from normjax.data.augment import preprocess
from normjax.data.catalog import BUILT_IN, PREPARE_RECIPE, ImageInfo, default_data_dir, open_tfds, tfds_image_info
from normjax.data.sources import SYNTHETIC_DEFAULTS, Dataset, load_dataset
from normjax.data.streaming import (
    STATE_BYTES,
    DevicePrefetcher,
    Layout,
    StreamingSource,
    TrainStream,
    Workers,
    eval_batches,
    state_from_array,
    state_to_array,
)

__all__ = [
    "BUILT_IN",
    "PREPARE_RECIPE",
    "STATE_BYTES",
    "SYNTHETIC_DEFAULTS",
    "Dataset",
    "DevicePrefetcher",
    "ImageInfo",
    "Layout",
    "StreamingSource",
    "TrainStream",
    "Workers",
    "default_data_dir",
    "eval_batches",
    "load_dataset",
    "open_tfds",
    "preprocess",
    "state_from_array",
    "state_to_array",
    "tfds_image_info",
]
