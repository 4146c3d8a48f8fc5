"""Fixtures the test modules share: one tiny model template, one model-folder
writer and one PASCAL VOC layout writer (real JPEGs and palette PNGs)."""
import os

import numpy as np
import pytest
from PIL import Image

# Quiet Caffe's glog (net construction logs every layer); must precede the
# first `import caffe`.
os.environ.setdefault('GLOG_minloglevel', '2')

import datasets  # noqa: E402  (after the glog setting)

# A narrow VGG16 FCN (1/32 of the channels, trained from scratch) on VOC-layout
# data at ../data/voc: a real model folder that trains in seconds.
TINY_NET_PY = '''\
from nets import VOC, Head, Model

model = Model(VOC(voc_dir='../data/voc', sbdd_dir='', val_split='val', val_size={val_size},
                  mean={mean!r}, heads=(Head('', {classes!r}),)),
              trunk='vgg16', stride={stride}, base_lr={lr!r}, init={init!r}, momentum=0.9,
              normalize_loss=True, trunk_width=1 / 32, trunk_filler='msra'{extra})
'''


def write_model(folder, stride=32, lr=1e-3, init=(), classes=datasets.VOC_CLASSES,
                mean=datasets.VOC_MEAN, val_size=2, extra=''):
    """Write a tiny model folder (net.py from TINY_NET_PY, its prototxts);
    `extra` adds Model keywords (", loss='sigmoid'"). Returns the folder."""
    import nets
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'net.py'), 'w') as f:
        f.write(TINY_NET_PY.format(stride=stride, lr=lr, init=tuple(init), classes=tuple(classes),
                                   mean=tuple(mean), val_size=val_size, extra=extra))
    nets.load(folder).write(folder)
    return folder


def save_rgb(path, rgb):
    """Write an image; returns the RGB pixels Pillow decodes from the file
    (the truth for lossy JPEG)."""
    Image.fromarray(rgb).save(path)
    with Image.open(path) as im:
        return np.asarray(im.convert('RGB'))


def save_palette_png(path, label):
    im = Image.fromarray(label.astype(np.uint8), mode='P')
    im.putpalette(datasets.voc_palette().ravel().tolist())
    im.save(path)


def write_voc(root, splits, sizes=None, seed=0, learnable=False):
    """PASCAL VOC layout under `root` (JPEGImages/, SegmentationClass/,
    ImageSets/Segmentation/<split>.txt) for `splits` {split: ids}.

    Default: tiny images (example k of a split is 6+k x 9-k, or `sizes`)
    with random labels over the 21 classes, row 0 void and class 20
    present. `learnable`: 36-48 px scenes a net can learn, a red square of
    class 1 and a blue one of class 2 on grey, each with a void border line.
    Returns {id: (rgb as decoded, label)}."""
    rng = np.random.default_rng(seed)
    for sub in ('JPEGImages', 'SegmentationClass', os.path.join('ImageSets', 'Segmentation')):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    out = {}
    for split, ids in splits.items():
        with open(os.path.join(root, 'ImageSets', 'Segmentation', split + '.txt'), 'w') as f:
            f.write('\n'.join(ids) + '\n')
        for k, idx in enumerate(ids):
            if learnable:
                h, w = rng.integers(36, 48, size=2)
                label = np.zeros((h, w), np.uint8)
                rgb = (90 + rng.integers(0, 20, (h, w, 3))).astype(np.uint8)
                for cls, colour in ((1, (220, 40, 40)), (2, (40, 40, 220))):
                    y, x = rng.integers(0, h - 16), rng.integers(0, w - 16)
                    label[y:y + 14, x:x + 14] = cls
                    label[max(y - 1, 0), x:x + 14] = datasets.VOID
                    rgb[y:y + 14, x:x + 14] = colour
            else:
                h, w = sizes[k] if sizes else (6 + k, 9 - k)
                rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                label = rng.integers(0, len(datasets.VOC_CLASSES), (h, w)).astype(np.uint8)
                label[0, :] = datasets.VOID
                label[1, 0] = 20
            decoded = save_rgb(os.path.join(root, 'JPEGImages', idx + '.jpg'), rgb)
            save_palette_png(os.path.join(root, 'SegmentationClass', idx + '.png'), label)
            out[idx] = (decoded, label)
    return out


# The writers above as fixtures, for test modules that take their helpers so.


@pytest.fixture(scope='session')
def model_writer():
    """write_model: a tiny model folder."""
    return write_model


@pytest.fixture(scope='session')
def voc_writer():
    """write_voc: a PASCAL VOC layout with real JPEGs and palette PNGs."""
    return write_voc
