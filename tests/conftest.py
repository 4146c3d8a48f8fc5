"""Fixtures the test modules share: one tiny model template, one model-folder
writer, and writers of small datasets in each dataset's real on-disk format
(the `dataset_writers` fixture: PASCAL VOC, SBD, NYUDv2, SIFT Flow,
PASCAL-Context)."""
import os
import types

import numpy as np
import pytest
import scipy.io
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


SIFT_SUBDIR = 'spatial_envelope_256x256_static_8outdoorcategories'


def mkdirs(*paths):
    for p in paths:
        os.makedirs(p, exist_ok=True)


def random_rgb(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_sbdd(root, n=5, split='train', seed=0):
    """SBD layout under `root` (img/, cls/ MATLAB GTcls structs, <split>.txt):
    example k has label k everywhere except a void row. Returns (ids,
    {id: (rgb as decoded, label)})."""
    rng = np.random.default_rng(seed)
    mkdirs(os.path.join(root, 'img'), os.path.join(root, 'cls'))
    ids = [f'2008_{k:06d}' for k in range(n)]
    write_split_files([os.path.join(root, f'{split}.txt')], ids)
    out = {}
    for k, idx in enumerate(ids):
        rgb = save_rgb(os.path.join(root, 'img', f'{idx}.jpg'), random_rgb(rng, 8, 10))
        seg = np.full((8, 10), k, np.uint8)
        seg[-1] = 255
        boundaries = np.empty((20, 1), object)  # a cell array, as in SBD
        boundaries[:, 0] = [np.zeros((8, 10), np.uint8)] * 20
        gtcls = {'Segmentation': seg, 'Boundaries': boundaries,
                 'CategoriesPresent': np.array([[k]], np.uint8)}
        scipy.io.savemat(os.path.join(root, 'cls', f'{idx}.mat'), {'GTcls': gtcls})
        out[idx] = (rgb, seg)
    return ids, out


def write_split_files(paths, ids):
    """Each of `paths` a split file listing `ids`."""
    for path in paths:
        with open(path, 'w') as f:
            f.write('\n'.join(ids) + '\n')


def write_nyud(root, splits=('test',), seed=0):
    """NYUDv2 layout under `root` (data/images, data/depth 16-bit PNGs,
    data/hha, segmentation/ .mat labels 0..40, <split>.txt for each of
    `splits`) with two 6 x 8 examples. Returns {id: (color, depth, hha,
    segmentation)}."""
    rng = np.random.default_rng(seed)
    for sub in ('data/images', 'data/depth', 'data/hha', 'segmentation'):
        mkdirs(os.path.join(root, sub))
    write_split_files([os.path.join(root, f'{split}.txt') for split in splits], ['0001', '0002'])
    out = {}
    for idx in ('0001', '0002'):
        color = random_rgb(rng, 6, 8)
        Image.fromarray(color).save(os.path.join(root, 'data', 'images', f'img_{idx}.png'))
        depth = rng.integers(500, 10000, (6, 8)).astype(np.uint16)
        depth[0, 0] = 0  # missing depth
        Image.fromarray(depth).save(os.path.join(root, 'data', 'depth', f'img_{idx}.png'))
        hha = random_rgb(rng, 6, 8)
        Image.fromarray(hha).save(os.path.join(root, 'data', 'hha', f'img_{idx}.png'))
        seg = rng.integers(0, 41, (6, 8)).astype(np.uint8)
        seg[0, :2] = (0, 40)
        scipy.io.savemat(os.path.join(root, 'segmentation', f'img_{idx}.mat'), {'segmentation': seg})
        out[idx] = color, depth, hha, seg
    return out


def write_siftflow(root, splits=('test',), seed=1):
    """SIFT Flow layout under `root` (Images/, SemanticLabels/ and GeoLabels/
    .mat files, <split>.txt for each of `splits`) with one 8 x 8 example,
    coast_n1: semantic labels 0..33 (0 void), geometric -1..3 (-1 void).
    Returns (rgb as decoded, semantic, geometric)."""
    for sub in ('Images', 'SemanticLabels', 'GeoLabels'):
        mkdirs(os.path.join(root, sub, SIFT_SUBDIR))
    write_split_files([os.path.join(root, f'{split}.txt') for split in splits], ['coast_n1'])
    rng = np.random.default_rng(seed)
    rgb = save_rgb(os.path.join(root, 'Images', SIFT_SUBDIR, 'coast_n1.jpg'), random_rgb(rng, 8, 8))
    sem = rng.integers(0, 34, (8, 8)).astype(np.int32)
    sem[0, :2] = (0, 33)
    geo = rng.choice([-1, 1, 2, 3], (8, 8)).astype(np.int32)
    scipy.io.savemat(os.path.join(root, 'SemanticLabels', SIFT_SUBDIR, 'coast_n1.mat'), {'S': sem})
    scipy.io.savemat(os.path.join(root, 'GeoLabels', SIFT_SUBDIR, 'coast_n1.mat'), {'S': geo})
    return rgb, sem, geo


def context_index(task_class):
    """The full-label index write_context gives a task class (later classes
    above 255, as in the real labels.txt)."""
    return 2 + 7 * datasets.CONTEXT_CLASSES[1:].index(task_class)


def write_context(root, voc_dir, label_map, splits=('val',)):
    """PASCAL-Context under `root` (labels.txt with 459 entries: the 59 task
    classes under the full list's spellings, some with spaces, at
    context_index(), among fillers; 59_labels.txt; trainval/<id>.mat) and
    its VOC2010 images and `splits` under `voc_dir`: one example,
    2008_000002, whose LabelMap is `label_map`. Returns its rgb as decoded."""
    task = list(datasets.CONTEXT_CLASSES[1:])
    full_name = {t: {'diningtable': 'table', 'bedcloth': 'bedclothes', 'clothes': 'cloth',
                     'pottedplant': 'potted plant', 'tvmonitor': 'tv monitor'}.get(t, t)
                 for t in task}
    names = [f'filler{i}' for i in range(459)]
    for t in task:
        names[context_index(t) - 1] = full_name[t]
    mkdirs(os.path.join(root, 'trainval'), os.path.join(voc_dir, 'VOC2010', 'JPEGImages'),
           os.path.join(voc_dir, 'VOC2010', 'ImageSets', 'Main'))
    with open(os.path.join(root, 'labels.txt'), 'w') as f:
        f.write(''.join(f'{i + 1}: {n}\n' for i, n in enumerate(names)))
    with open(os.path.join(root, '59_labels.txt'), 'w') as f:
        f.write(''.join(f'{k + 1}: {t}\n' for k, t in enumerate(task)))
    write_split_files([os.path.join(voc_dir, 'VOC2010', 'ImageSets', 'Main', f'{split}.txt')
                       for split in splits], ['2008_000002'])
    rgb = save_rgb(os.path.join(voc_dir, 'VOC2010', 'JPEGImages', '2008_000002.jpg'),
                   random_rgb(np.random.default_rng(2), *label_map.shape))
    scipy.io.savemat(os.path.join(root, 'trainval', '2008_000002.mat'), {'LabelMap': label_map})
    return rgb


@pytest.fixture
def dataset_writers():
    """The dataset writers: voc, sbdd, nyud, siftflow, context (and
    context_index, random_rgb, save_palette_png)."""
    return types.SimpleNamespace(voc=write_voc, sbdd=write_sbdd, nyud=write_nyud,
                                 siftflow=write_siftflow, context=write_context,
                                 context_index=context_index, random_rgb=random_rgb,
                                 save_palette_png=save_palette_png)
