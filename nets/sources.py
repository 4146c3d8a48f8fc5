"""Where each model's data comes from: the Python data layer (from layers.py)
that feeds the train and val nets, and the Input layer of the deploy net.

A Source says, for one dataset: its splits, the prototxt names the reference
release used, its heads (class score outputs with their label tops), the
input tops (one stream, early fusion of colour and depth, or two streams for
late fusion) and the mean each input top subtracts (read by inference). The
data layer's param_str is the reference release's, key for key; a class
count or mean goes into it only where the source's differs from what the
layer holds for its dataset. Paths are relative to the model folder
(<repo>/<model>/), as locations.DATA_FROM_MODEL.
"""
from dataclasses import dataclass, field
from typing import Dict, Tuple

import layers
from common import datasets
from caffe import layers as L, params as P
from common.locations import DATA_FROM_MODEL

# The reference release's seed: the shuffled training order, and Caffe's
# random state (dropout) while training.
SEED = 1337
DEPLOY_SIZE = 500  # deploy nets are declared 500x500; they reshape to any input


@dataclass(frozen=True)
class Head:
    """One class-score output: its layer-name suffix, classes, label top and
    loss layer name (SIFT Flow has two heads, every other dataset one).
    `absent` maps a split to the classes it lacks, which its means leave out
    (see score.metrics)."""
    suffix: str
    classes: Tuple[str, ...]
    label: str = 'label'
    loss: str = 'loss'
    absent: Dict[str, Tuple[str, ...]] = field(default_factory=dict, hash=False)

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def score(self):
        """The net's score blob of this head."""
        return 'score' + self.suffix

    @property
    def name(self):
        """The head's name in reports: 'score', or the suffix ('sem', 'geo')."""
        return self.suffix.lstrip('_') or 'score'

    def excluded(self, split):
        """The classes left out of `split`'s means."""
        return tuple(self.absent.get(split, ()))


@dataclass(frozen=True)
class Source:
    name: str                      # dataset key: voc, nyud, siftflow, context
    train_split: str
    val_split: str
    train_file: str                # prototxt names of the reference release
    val_file: str
    heads: Tuple[Head, ...]
    test_interval: int             # iterations between scorings (reference solve.py)
    max_iter: int                  # the reference's training length (its solve.py loop)
    val_size: int                  # images in the val split (solver test_iter)
    inputs: Tuple[str, ...] = ('data',)   # data tops the net reads
    fusion: str = ''               # '', 'early' (concat to `data`) or 'late' (two streams)

    def data_layer_params(self, split):
        """(layer class in layers.py, param_str dict) for a split: the
        dataset's own params, then each of the net's facts (class counts,
        means) that the layer would not use by itself."""
        layer, params = self.dataset_params(split)
        held = getattr(layers, layer).defaults
        facts = dict(self.mean_params(), num_classes=self.label_classes)
        for key, value in facts.items():
            if key not in params and (key not in held or _differs(value, held[key])):
                params[key] = value
        return layer, params

    def dataset_params(self, split):
        """(layer class in layers.py, params saying where and how to read) for
        a split: the reference release's keys, in its order."""
        raise NotImplementedError

    def mean_params(self):
        """{param: value} of the mean(s) the data layer subtracts."""
        return {'mean': self.mean}

    @property
    def label_classes(self):
        """The data layer's `num_classes`: the one head's class count, or
        {label top: class count} for several heads."""
        if len(self.heads) == 1:
            return self.heads[0].num_classes
        return {h.label: h.num_classes for h in self.heads}

    @property
    def mean(self):
        """The BGR mean the colour input subtracts (`data`, or NYUD's `color`)."""
        raise NotImplementedError

    def data_layer(self, split):
        layer, params = self.data_layer_params(split)
        tops = list(self.inputs) + [h.label for h in self.heads]
        return tops, L.Python(module='layers', layer=layer, ntop=len(tops), param_str=str(params))

    def input_channels(self, top):
        return {'depth': 1}.get(top, 3)

    def deploy_input(self):
        """The deploy net's Input layer, named `input`; early fusion declares
        the concatenated 4-channel `data` blob directly."""
        tops = ['data'] if self.fusion == 'early' else list(self.inputs)
        channels = [sum(self.input_channels(t) for t in self.inputs)] if self.fusion == 'early' \
            else [self.input_channels(t) for t in tops]
        shape = [dict(dim=[1, c, DEPLOY_SIZE, DEPLOY_SIZE]) for c in channels]
        return tops, L.Input(name='input', ntop=len(tops), shape=shape)


@dataclass(frozen=True)
class VOC(Source):
    # Train on SBD's 8,498 images, validate on seg11valid (VOC2011 seg val
    # minus SBD train), as the reference release does.
    name: str = 'voc'
    train_split: str = 'train'
    val_split: str = 'seg11valid'
    train_file: str = 'train.prototxt'
    val_file: str = 'val.prototxt'
    heads: Tuple[Head, ...] = (Head('', datasets.VOC_CLASSES),)
    test_interval: int = 4000
    max_iter: int = 25 * 4000
    val_size: int = datasets.SEG11VALID_SIZE
    voc_dir: str = f'{DATA_FROM_MODEL}/{datasets.voc_year_dir(2011)}'
    sbdd_dir: str = f'{DATA_FROM_MODEL}/{datasets.SBDD_DIR}'  # '' trains on voc_dir's train split
    mean: Tuple[float, ...] = datasets.VOC_MEAN

    def dataset_params(self, split):
        if split == self.train_split and self.sbdd_dir:
            return 'SBDDSegDataLayer', dict(sbdd_dir=self.sbdd_dir, seed=SEED, split=split,
                                            mean=self.mean)
        return 'VOCSegDataLayer', dict(voc_dir=self.voc_dir, seed=SEED, split=split, mean=self.mean)


@dataclass(frozen=True)
class Context(Source):
    name: str = 'context'
    train_split: str = 'train'
    val_split: str = 'val'
    train_file: str = 'train.prototxt'
    val_file: str = 'val.prototxt'
    heads: Tuple[Head, ...] = (Head('', datasets.CONTEXT_CLASSES),)
    test_interval: int = 8000
    max_iter: int = 50 * 8000
    val_size: int = 5105
    mean: Tuple[float, ...] = datasets.CONTEXT_MEAN

    def dataset_params(self, split):
        return 'PASCALContextSegDataLayer', dict(
            context_dir=f'{DATA_FROM_MODEL}/{datasets.CONTEXT_DIR}', seed=SEED, split=split,
            voc_dir=f'{DATA_FROM_MODEL}/{datasets.PASCAL_DIR}')


@dataclass(frozen=True)
class SIFTFlow(Source):
    # One trunk, two heads: 33 semantic and 3 geometric classes.
    name: str = 'siftflow'
    train_split: str = 'trainval'
    val_split: str = 'test'
    train_file: str = 'trainval.prototxt'
    val_file: str = 'test.prototxt'
    heads: Tuple[Head, ...] = (
        Head('_sem', datasets.SIFTFLOW_CLASSES, 'sem', 'loss',
             absent={'test': datasets.SIFTFLOW_ABSENT_FROM_TEST}),
        Head('_geo', datasets.SIFTFLOW_GEO_CLASSES, 'geo', 'loss_geo'))
    test_interval: int = 2000
    max_iter: int = 50 * 2000
    val_size: int = 200
    mean: Tuple[float, ...] = datasets.SIFTFLOW_MEAN

    def dataset_params(self, split):
        return 'SIFTFlowSegDataLayer', dict(siftflow_dir=f'{DATA_FROM_MODEL}/{datasets.SIFTFLOW_DIR}', seed=SEED,
                                            split=split)


@dataclass(frozen=True)
class NYUD(Source):
    """NYUDv2 40 classes. `modalities` picks colour, HHA, colour+depth (early
    fusion) or colour+HHA (late fusion, two streams named by modality)."""
    name: str = 'nyud'
    train_split: str = 'trainval'
    val_split: str = 'test'
    train_file: str = 'trainval.prototxt'
    val_file: str = 'test.prototxt'
    heads: Tuple[Head, ...] = (Head('', datasets.NYUD_CLASSES),)
    test_interval: int = 2000
    max_iter: int = 50 * 2000
    val_size: int = 654
    modalities: Tuple[str, ...] = ('color',)
    # What each modality subtracts: BGR colour, HHA in the file's channel
    # order, and log depth.
    means: Dict[str, object] = field(default_factory=lambda: dict(datasets.NYUD_MEANS), hash=False)

    def __post_init__(self):
        fusion = {('color',): '', ('hha',): '', ('color', 'depth'): 'early',
                  ('color', 'hha'): 'late'}.get(self.modalities)
        if fusion is None:
            raise ValueError(f'NYUD modalities {self.modalities!r}: expected (color,), (hha,), '
                             '(color, depth) or (color, hha)')
        # A single modality arrives as the `data` top, as in the reference nets.
        object.__setattr__(self, 'fusion', fusion)
        object.__setattr__(self, 'inputs', ('data',) if len(self.modalities) == 1 else self.modalities)

    @property
    def mean(self):
        return self.means['color']

    def mean_params(self):
        return {'means': {m: self.means[m] for m in self.modalities}}

    def dataset_params(self, split):
        return 'NYUDSegDataLayer', dict(tops=list(self.modalities) + ['label'], seed=SEED,
                                        nyud_dir=f'{DATA_FROM_MODEL}/{datasets.NYUD_DIR}', split=split)


@dataclass(frozen=True)
class LMDB(Source):
    """Images and labels in LMDB, read by Caffe's own Data layers (one for
    images, one for labels), so the caffe tool trains and tests the nets
    with no Python. Each split is two LMDBs of Caffe Datum records in the
    same order, one image each: BGR uint8 images (the mean is subtracted by
    the Data layer) and labels as 1-channel uint8 images (255 void)."""
    name: str = 'lmdb'
    train_split: str = 'train'
    val_split: str = 'val'
    train_file: str = 'train.prototxt'
    val_file: str = 'val.prototxt'
    heads: Tuple[Head, ...] = ()      # required: the classes
    test_interval: int = VOC.test_interval
    max_iter: int = VOC.max_iter
    val_size: int = 0                 # required: images in the val LMDBs
    lmdb_dir: str = 'lmdb'  # holds <split>-image/ and <split>-label/
    mean: Tuple[float, ...] = datasets.VOC_MEAN

    def __post_init__(self):
        if len(self.heads) != 1 or self.val_size < 1:
            raise ValueError('LMDB: give one head (the classes) and val_size (images in the val LMDBs)')

    def lmdb_path(self, split, kind):
        """The LMDB of a split's 'image's or 'label's."""
        return f'{self.lmdb_dir}/{split}-{kind}'

    def data_layer(self, split):
        # One image a batch, as the reference nets train: sizes may differ.
        image = L.Data(source=self.lmdb_path(split, 'image'), backend=P.Data.LMDB, batch_size=1,
                       transform_param=dict(mean_value=list(self.mean)))
        label = L.Data(source=self.lmdb_path(split, 'label'), backend=P.Data.LMDB, batch_size=1)
        return ['data', self.heads[0].label], (image, label)


@dataclass(frozen=True)
class DataFolder(Source):
    """Your own data (docs/nets.md): a folder with images/<stem>.<jpg|png|...>,
    labels/<stem>.png (class indices, 255 void), train.txt and val.txt
    (one stem a line), or in the PASCAL VOC layout (datasets.layout_of),
    read by layers.SegDataLayer. Give the classes (one head) and data_dir,
    relative to the model folder."""
    name: str = 'folder'
    train_split: str = datasets.OWN_SPLITS[0]
    val_split: str = datasets.OWN_SPLITS[1]
    train_file: str = 'train.prototxt'
    val_file: str = 'val.prototxt'
    heads: Tuple[Head, ...] = ()      # required: the classes
    test_interval: int = VOC.test_interval
    max_iter: int = VOC.max_iter
    val_size: int = 1                 # images in the val split (the solver's test_iter)
    data_dir: str = ''                # required
    mean: Tuple[float, ...] = datasets.VOC_MEAN

    def __post_init__(self):
        if len(self.heads) != 1 or not self.data_dir:
            raise ValueError('DataFolder: give data_dir and one head (the classes)')

    def dataset_params(self, split):
        return 'SegDataLayer', dict(data_dir=self.data_dir, seed=SEED, split=split, mean=self.mean)


def _differs(value, held):
    """Whether a param value differs from what the layer holds; a dict (NYUD's
    means) is compared on the keys it gives."""
    if isinstance(value, dict) and isinstance(held, dict):
        return any(k not in held or _differs(v, held[k]) for k, v in value.items())
    if isinstance(value, (list, tuple)) and isinstance(held, (list, tuple)):
        return list(value) != list(held)
    return value != held


def source_of_data_layer(layer):
    """The dataset (a Source with its defaults) whose nets read data layer
    `layer` (a layers.py class name), or None for a user's own data."""
    for source in (VOC(), NYUD(), SIFTFlow(), Context()):
        if any(source.data_layer_params(split)[0] == layer
               for split in (source.train_split, source.val_split)):
            return source
    return None
