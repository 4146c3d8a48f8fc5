"""What the test modules share: one tiny model-folder writer and one PASCAL
VOC layout writer (real JPEGs and palette PNGs). Test modules import it as
`helpers` (pytest puts tests/ on the path)."""
import math
import os

import numpy as np
import scipy.io
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
        mkdirs(os.path.join(root, sub, datasets.SIFTFLOW_SUBDIR))
    write_split_files([os.path.join(root, f'{split}.txt') for split in splits], ['coast_n1'])
    rng = np.random.default_rng(seed)
    rgb = save_rgb(os.path.join(root, 'Images', datasets.SIFTFLOW_SUBDIR, 'coast_n1.jpg'), random_rgb(rng, 8, 8))
    sem = rng.integers(0, 34, (8, 8)).astype(np.int32)
    sem[0, :2] = (0, 33)
    geo = rng.choice([-1, 1, 2, 3], (8, 8)).astype(np.int32)
    scipy.io.savemat(os.path.join(root, 'SemanticLabels', datasets.SIFTFLOW_SUBDIR, 'coast_n1.mat'), {'S': sem})
    scipy.io.savemat(os.path.join(root, 'GeoLabels', datasets.SIFTFLOW_SUBDIR, 'coast_n1.mat'), {'S': geo})
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


NARROWING = 8  # narrowed(): channels of the trunk's convolutions divided by this
# OpenVINO bf16 against Caffe: the least share of pixels labelled alike,
# overall and in the image that agrees least (the target: 99.5%).
BF16_AGREEMENT = (0.995, 0.99)


def agreement(labels, reference):
    """The share of pixels of `labels` equal to `reference`'s."""
    return float((np.asarray(labels) == np.asarray(reference)).mean())


def random_weights(net, seed):
    """Fill every parameter blob with random numbers scaled by its fan-in,
    so that activations stay in range through the deep nets."""
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for blob in blobs:
            fan_in = int(np.prod(blob.data.shape[1:])) or 1
            rng.standard_normal(out=blob.data, dtype=np.float32)
            blob.data[...] *= np.float32(math.sqrt(2 / fan_in))


def narrowed(net_param, path):
    """Write `net_param` with the trunk's convolutions (those not named
    score*) NARROWING times narrower to `path`."""
    for lp in net_param.layer:
        if lp.type == 'Convolution' and not lp.name.startswith('score'):
            lp.convolution_param.num_output = max(1, lp.convolution_param.num_output // NARROWING)
    with open(path, 'w') as f:
        f.write(str(net_param))
    return path


OWN_CLASSES = ('background', 'red', 'blue')


def write_own_data(root, train=8, val=2, seed=0):
    """A data folder of one's own (docs/nets.md): images/<stem>.jpg,
    labels/<stem>.png (palette and grayscale PNGs, alternately) of
    synthetic.squares scenes (classes OWN_CLASSES), train.txt as Windows
    saves it (BOM, CRLF, a blank line) and val.txt. Returns the stems
    {split: [stem]}."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, 'images'), exist_ok=True)
    os.makedirs(os.path.join(root, 'labels'), exist_ok=True)
    splits = {'train': [f'scene{i:02d}' for i in range(train)],
              'val': [f'scene{i:02d}' for i in range(train, train + val)]}
    for k, stem in enumerate(splits['train'] + splits['val']):
        rgb, label = synthetic.squares(rng)
        Image.fromarray(rgb).save(os.path.join(root, 'images', stem + '.jpg'))
        path = os.path.join(root, 'labels', stem + '.png')
        if k % 2:
            Image.fromarray(label, 'L').save(path)
        else:
            save_palette_png(path, label)
    with open(os.path.join(root, 'train.txt'), 'w', encoding='utf-8-sig', newline='') as f:
        f.write('\r\n'.join(splits['train'][:2]) + '\r\n\r\n' + '\r\n'.join(splits['train'][2:]) + '\r\n')
    with open(os.path.join(root, 'val.txt'), 'w') as f:
        f.write('\n'.join(splits['val']) + '\n')
    return splits


def descendants(pid):
    """The ids of `pid`'s descendant processes now (a local Ray cluster's
    gcs, raylet and workers, for a test that they end)."""
    children = {}
    for entry in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{entry}/stat') as f:
                parent = int(f.read().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
