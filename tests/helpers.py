"""What the test modules share: one tiny model-folder writer and one PASCAL
VOC layout writer (real JPEGs and palette PNGs). Test modules import it as
`helpers` (pytest puts tests/ on the path)."""
import os

import numpy as np
from PIL import Image

from common import caffe_setup

caffe_setup.quiet_caffe_log([])  # net construction logs every layer otherwise

import nets  # noqa: E402
import synthetic  # noqa: E402
from common import datasets  # noqa: E402

def write_model(folder, **options):
    """Write a tiny model folder (net.py defining synthetic.tiny_model(**options), its
    prototxts). Returns the folder."""
    folder = str(folder)
    nets.write_net_py(folder, synthetic.tiny_model(**options), 'A tiny model folder written by the tests.')
    return folder


def write_net(spec, path):
    """Write a NetSpec as a prototxt at `path`; returns the path as a string."""
    with open(path, 'w') as f:
        f.write(str(spec.to_proto()))
    return str(path)


def save_rgb(path, rgb):
    """Write an image; returns the RGB pixels Pillow decodes from the file
    (the truth for lossy JPEG)."""
    Image.fromarray(rgb).save(path)
    with Image.open(path) as im:
        return np.asarray(im.convert('RGB'))


def save_palette_png(path, label):
    datasets.save_label_png(path, np.asarray(label, np.uint8))


def write_voc(root, splits, sizes=None, seed=0, learnable=False):
    """PASCAL VOC layout under `root` (JPEGImages/, SegmentationClass/,
    ImageSets/Segmentation/<split>.txt) for `splits` {split: ids}.

    Default: tiny images (example k of a split is 6+k x 9-k, or `sizes`)
    with random labels over the 21 classes, row 0 void and class 20
    present. `learnable`: synthetic.squares scenes, which a net learns.
    Returns {id: (rgb as decoded, label)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, ids in splits.items():
        examples = {}
        for k, idx in enumerate(ids):
            if learnable:
                rgb, label = synthetic.squares(rng)
            else:
                h, w = sizes[k] if sizes else (6 + k, 9 - k)
                rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                label = rng.integers(0, len(datasets.VOC_CLASSES), (h, w)).astype(np.uint8)
                label[0, :] = datasets.VOID
                label[1, 0] = 20
            examples[idx] = (rgb, label)
        datasets.write_voc(root, {split: ids}, examples)
        for idx, (_, label) in examples.items():
            with Image.open(datasets.voc_image(root, idx)) as im:  # the truth for lossy JPEG
                out[idx] = (np.asarray(im.convert('RGB')), label)
    return out
