"""Facts about each dataset FCN is trained on, defined once.

Class names, BGR means, where each dataset lies under the data folder and
its on-disk layout, and the PASCAL VOC colour palette and label format. Data layers, scoring, inference and the fetch command all
read these; nothing else should repeat them.
"""
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

VOID = 255  # label ignored by the loss and by scoring

VOC_CLASSES = (
    'background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus',
    'car', 'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike',
    'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')

# Gupta et al.'s 40-class NYUDv2 task, label 1..40 in the files (0 void).
NYUD_CLASSES = (
    'wall', 'floor', 'cabinet', 'bed', 'chair', 'sofa', 'table', 'door',
    'window', 'bookshelf', 'picture', 'counter', 'blinds', 'desk', 'shelves',
    'curtain', 'dresser', 'pillow', 'mirror', 'floor mat', 'clothes',
    'ceiling', 'books', 'refridgerator', 'television', 'paper', 'towel',
    'shower curtain', 'box', 'whiteboard', 'person', 'night stand', 'toilet',
    'sink', 'lamp', 'bathtub', 'bag', 'otherstructure', 'otherfurniture',
    'otherprop')

# SIFT Flow semantic classes, label 1..33 in the files (0 void).
SIFTFLOW_CLASSES = (
    'awning', 'balcony', 'bird', 'boat', 'bridge', 'building', 'bus', 'car',
    'cow', 'crosswalk', 'desert', 'door', 'fence', 'field', 'grass', 'moon',
    'mountain', 'person', 'plant', 'pole', 'river', 'road', 'rock', 'sand',
    'sea', 'sidewalk', 'sign', 'sky', 'staircase', 'streetlight', 'sun',
    'tree', 'window')
# Absent from the SIFT Flow test set: excluded from the test means (the
# reference release's "not quite right" evaluation counted them as zero).
SIFTFLOW_ABSENT_FROM_TEST = ('cow', 'desert', 'moon')
SIFTFLOW_GEO_CLASSES = ('sky', 'horizontal', 'vertical')

# PASCAL-Context 59-class task (as in its 59_labels.txt) plus background 0.
# The data layer maps labels with the dataset's own files; these names are for
# reports when those files are not at hand.
CONTEXT_CLASSES = ('background',) + (
    'aeroplane', 'bag', 'bed', 'bedcloth', 'bench', 'bicycle', 'bird', 'boat',
    'book', 'bottle', 'building', 'bus', 'cabinet', 'car', 'cat', 'ceiling',
    'chair', 'clothes', 'computer', 'cow', 'cup', 'curtain', 'dog', 'door',
    'fence', 'floor', 'flower', 'food', 'grass', 'ground', 'horse',
    'keyboard', 'light', 'motorbike', 'mountain', 'mouse', 'person', 'plate',
    'platform', 'pottedplant', 'road', 'rock', 'sheep', 'shelves', 'sidewalk',
    'sign', 'sky', 'snow', 'sofa', 'diningtable', 'track', 'train', 'tree',
    'truck', 'tvmonitor', 'wall', 'water', 'window', 'wood')

# BGR means, subtracted after RGB->BGR (reference release values).
VOC_MEAN = (104.00699, 116.66877, 122.67892)
NYUD_MEAN = (116.190, 97.203, 92.318)
NYUD_HHA_MEAN = (132.431, 94.076, 118.477)  # in the HHA file's channel order
NYUD_LOG_DEPTH_MEAN = 7.844
SIFTFLOW_MEAN = (114.578, 115.294, 108.353)
# The reference PASCAL-Context data layer ignores any mean it is given and
# subtracts this constant (close to, but not, the VOC mean).
CONTEXT_MEAN = (104.007, 116.669, 122.679)

# Each class count, as the data layers check labels against it where a net
# does not give its own.
VOC_NUM_CLASSES = len(VOC_CLASSES)
NYUD_NUM_CLASSES = len(NYUD_CLASSES)
SIFTFLOW_NUM_CLASSES = len(SIFTFLOW_CLASSES)
SIFTFLOW_GEO_NUM_CLASSES = len(SIFTFLOW_GEO_CLASSES)
CONTEXT_NUM_CLASSES = len(CONTEXT_CLASSES)

# What each NYUD input subtracts, by the data layer's name for it.
NYUD_MEANS = {'color': NYUD_MEAN, 'hha': NYUD_HHA_MEAN, 'depth': NYUD_LOG_DEPTH_MEAN}

# seg11valid: VOC2011 segmentation val minus SBD train.
SEG11VALID_SIZE = 736


def voc_palette(n=256):
    """The PASCAL VOC colour map: n x 3 uint8, entry 255 (void) included.

    Colour of index i interleaves i's bits into the high bits of R, G, B
    (VOCdevkit's labelcolormap.m).
    """
    palette = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


# --- where each dataset lies --------------------------------------------------
# Folders under the data folder (data/ at the repository root, ../data from a
# model folder), as the reference release lays them out.
PASCAL_DIR = 'pascal'
SBDD_DIR = 'sbdd/dataset'
NYUD_DIR = 'nyud'
SIFTFLOW_DIR = 'sift-flow'
CONTEXT_DIR = 'pascal-context'
# SIFT Flow keeps its images and labels one folder further down.
SIFTFLOW_SUBDIR = 'spatial_envelope_256x256_static_8outdoorcategories'


def voc_year_dir(year):
    """A PASCAL VOC release's folder under the data folder (pascal/VOC2011)."""
    return f'{PASCAL_DIR}/VOC{year}'


def voc_image(voc_dir, idx):
    return os.path.join(voc_dir, 'JPEGImages', idx + '.jpg')


def voc_label(voc_dir, idx):
    return os.path.join(voc_dir, 'SegmentationClass', idx + '.png')


def voc_split(voc_dir, split, task='Segmentation'):
    """A VOC split file: ImageSets/Segmentation (or Main, PASCAL-Context's)/<split>.txt."""
    return os.path.join(voc_dir, 'ImageSets', task, split + '.txt')


# --- a data folder of your own -------------------------------------------------
# File name endings read as images (any case), in a folder of one's own data
# and in folders of photos.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.tif', '.tiff', '.gif', '.webp')


@dataclass(frozen=True)
class Layout:
    """Where a data folder keeps its images, labels and split lists: images
    `<images>/<stem>.<one of image_endings>`, labels `<labels>/<stem>.png`
    (class indices 0..n-1 in a palette or grayscale PNG, VOID ignored),
    splits `<splits>/<split>.txt` (one stem a line)."""
    name: str
    images: str
    labels: str
    splits: str
    image_endings: tuple

    def split_file(self, data_dir, split):
        return os.path.join(data_dir, self.splits, split + '.txt')

    def label(self, data_dir, stem):
        return os.path.join(data_dir, self.labels, stem + '.png')

    def image_files(self, data_dir):
        """{stem: [image paths]} of the images folder (a stem with several
        files is ambiguous: the caller says so)."""
        folder = os.path.join(data_dir, self.images)
        found = {}
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
            stem, ending = os.path.splitext(name)
            if ending.lower() in self.image_endings:
                found.setdefault(stem, []).append(os.path.join(folder, name))
        return found

    def missing_image(self, data_dir, stem):
        """How to say where the image of `stem` was looked for."""
        return os.path.join(data_dir, self.images, f'{stem}.<{"|".join(e[1:] for e in self.image_endings)}>')


# The layout of your own data (docs/nets.md), and PASCAL VOC's.
OWN_LAYOUT = Layout('images/ labels/ train.txt val.txt', 'images', 'labels', '', IMAGE_EXTENSIONS)
VOC_LAYOUT = Layout('PASCAL VOC', 'JPEGImages', 'SegmentationClass',
                    os.path.join('ImageSets', 'Segmentation'), ('.jpg',))
LAYOUTS = (OWN_LAYOUT, VOC_LAYOUT)
OWN_SPLITS = ('train', 'val')  # the splits a model of your own trains and scores on


def layout_of(data_dir):
    """The Layout of a data folder: PASCAL VOC's where it has JPEGImages/,
    else the own layout (images/, labels/)."""
    if os.path.isdir(os.path.join(data_dir, VOC_LAYOUT.images)):
        return VOC_LAYOUT
    return OWN_LAYOUT


def split_ids(path):
    """The stems a split file lists, one a line, in order: blank lines,
    surrounding spaces, CRLF line ends and a UTF-8 byte order mark (as
    Windows editors save) are tolerated."""
    with open(path, encoding='utf-8-sig') as f:
        return [line.strip() for line in f if line.strip()]


def save_label_png(path, label):
    """Write a class-index map (0..255, 255 void) as a PASCAL VOC palette PNG."""
    h, w = label.shape
    im = Image.frombytes('P', (w, h), np.ascontiguousarray(label, dtype=np.uint8).tobytes())
    im.putpalette(voc_palette().tobytes())
    im.save(path)


def write_voc(voc_dir, splits, examples, jpeg_quality=None):
    """A PASCAL VOC layout under `voc_dir`: `examples` {id: (H x W x 3 uint8
    RGB, H x W uint8 label)} as JPEGImages/<id>.jpg and SegmentationClass/<id>.png,
    and `splits` {split: ids} as ImageSets/Segmentation/<split>.txt."""
    for idx, (rgb, label) in examples.items():
        for path in (voc_image(voc_dir, idx), voc_label(voc_dir, idx)):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(rgb).save(voc_image(voc_dir, idx),
                                  **({'quality': jpeg_quality} if jpeg_quality else {}))
        save_label_png(voc_label(voc_dir, idx), label)
    for split, ids in splits.items():
        os.makedirs(os.path.dirname(voc_split(voc_dir, split)), exist_ok=True)
        with open(voc_split(voc_dir, split), 'w') as f:
            f.write('\n'.join(ids) + '\n')
