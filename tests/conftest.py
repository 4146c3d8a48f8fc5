"""Fixtures the test modules share: one tiny model template, one model-folder
writer and one PASCAL VOC layout writer (real JPEGs and palette PNGs)."""
import os

import numpy as np
import pytest
from PIL import Image

# Quiet Caffe's glog (net construction logs every layer); must precede the
# first `import caffe`.
os.environ.setdefault('GLOG_minloglevel', '2')

import caffe  # noqa: E402  (after the glog setting)
import datasets  # noqa: E402
import surgery  # noqa: E402

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


TINY_CLASSES = ('background', 'square', 'circle')


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
    """(model folder, caffemodel): a tiny FCN-8s on TINY_CLASSES with a
    random trunk, random score layers (so that every class can come out)
    and bilinear upsampling."""
    folder = tmp_path_factory.mktemp('model') / 'tiny-fcn8s'
    write_model(folder, stride=8, classes=TINY_CLASSES, mean=(100.0, 110.0, 120.0), val_size=1)
    # Caffe's fillers draw the random trunk: seed them, or some draws give
    # one class everywhere on these noise images (seen about 1 run in 6).
    caffe.set_random_seed(0)
    net = caffe.Net(str(folder / 'deploy.prototxt'), caffe.TEST)
    rng = np.random.RandomState(0)
    # the fine skip dominates, so that classes change within small images
    for name, std in (('score_fr', 0.01), ('score_pool4', 0.1), ('score_pool3', 1.0)):
        net.params[name][0].data[...] = rng.normal(0, std, net.params[name][0].data.shape)
    surgery.interp(net, [k for k in net.params if k.startswith('upscore')])
    weights = str(folder / 'weights.caffemodel')
    net.save(weights)
    return str(folder), weights


@pytest.fixture(scope='module')
def tiny_val_images(tiny_model):
    """The ids of two images written in the VOC layout where tiny_model's
    val net reads its split (../data/voc from the model folder)."""
    folder, _ = tiny_model
    ids = ('val_a', 'val_b')
    write_voc(os.path.join(os.path.dirname(folder), 'data', 'voc'), {'val': ids},
              seed=3, learnable=True)  # scenes of TINY_CLASSES
    return ids
