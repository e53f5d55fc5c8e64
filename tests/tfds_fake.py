"""Small TFDS datasets prepared offline as array_record, for the streaming tests.

`builder(name, features, examples)` makes an unregistered `GeneratorBasedBuilder`; preparing it
into a data dir lets `tfds.data_source` (and so normjax) read it by name, as a real prepared
dataset. Images are passed encoded (PNG, JPEG): encoding numpy images in tfds needs TensorFlow.
"""

import io

import numpy as np
import tensorflow_datasets as tfds


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


def smooth(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random RGB image (gradients plus a blob), so crops and resizes are comparable."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    c = rng.uniform(0.2, 0.8, (3, 3))
    img = np.stack(
        [c[k, 0] * x + c[k, 1] * y + c[k, 2] * np.sin(6 * x * (k + 1)) * np.cos(5 * y) for k in range(3)], -1
    )
    return np.clip(255 * (img - img.min()) / (np.ptp(img) + 1e-9), 0, 255).astype(np.uint8)


def builder(name: str, features: dict, examples: dict, ordered: bool = False) -> type:
    """A GeneratorBasedBuilder class (unregistered) writing `examples[split]` lists."""

    dataset_name = name

    class Fake(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = dataset_name
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features), disable_shuffling=ordered
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in examples}

        def _generate_examples(self, split):
            yield from enumerate(examples[split])

    return Fake


def prepare(root, name: str, features: dict, examples: dict, ordered: bool = False) -> None:
    """Writes dataset `name` (`examples[split]`: lists of feature dicts) into data dir `root`
    (`ordered`: records in the order given; tfds shuffles them by key otherwise)."""
    builder(name, features, examples, ordered)(data_dir=str(root), file_format="array_record").download_and_prepare()


def prepare_digits(root, name: str = "nj_digits") -> None:
    """scikit-learn's digits (normjax's built-in `digits`, the same split) as a TFDS dataset of
    8x8x1 PNGs: real data that learns in seconds, for the streamed-training tests."""
    from normjax.data import load_dataset

    ds = load_dataset("digits")

    def records(images, labels):
        return [{"image": png(x), "label": int(y)} for x, y in zip(images, labels)]

    prepare(
        root,
        name,
        {"image": tfds.features.Image(shape=(8, 8, 1)), "label": tfds.features.ClassLabel(num_classes=10)},
        {"train": records(ds.train_images, ds.train_labels), "test": records(ds.test_images, ds.test_labels)},
        ordered=True,
    )
