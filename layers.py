"""Caffe Python data layers for FCN, and the loaders they share with inference.

Each layer feeds whole images, one at a time: data tops are 1 x C x H x W
(colour is BGR minus the dataset's BGR mean), label tops 1 x 1 x H x W with
classes 0..n-1 and 255 for void. A net declares one with

    L.Python(module='layers', layer='VOCSegDataLayer', ntop=2,
             param_str=str(dict(voc_dir='...', split='seg11valid')))

`param_str` is a Python dict literal (or JSON object); it is read with
ast.literal_eval, never evaluated. Each dataset's layer reads the reference
release's param_str as is: its class counts and means come from datasets.py
unless param_str gives others. The release's prototxts name the module
voc_layers, nyud_layers, siftflow_layers or pascalcontext_layers
(RELEASE_MODULES): the folder layers_aliases/, on the environment's path,
makes each of those names this module. Keys every layer accepts besides its
own:

    num_classes        the net's number of classes: an int, or {label top:
                       int} for a layer with several label tops (SIFT Flow's
                       sem and geo); a dataset's layer defaults to its
                       dataset's, SegDataLayer requires it. A label value
                       that is neither a class nor 255 (void) is an error
                       naming the file.
    randomize  (True)  shuffle, but only while training: the split's name
                       contains 'train' (SegDataLayer: the net's phase is
                       TRAIN). Otherwise the split runs in file order,
                       wrapping around.
    seed       (None)  seeds the shuffle (re-shuffled each epoch) and the
                       augmentation; None draws fresh OS entropy.
    prefetch   (None)  load the next example in a background thread;
                       None means on while training.
    mirror     (False) random horizontal flips.
    jitter     (0)     random translation by up to this many pixels (<= 32)
                       in x and y; the image keeps its size, uncovered pixels
                       get the mean (0 after subtraction) and labels 255.

The plumbing (params, split file, order, prefetch, augmentation, reshape)
lives in SegDataLayerBase; each dataset subclass names its keys, its split
file, its files per example and how to load one file.
"""
import ast
import atexit
import contextlib
import json
import os
import random
import threading
import weakref

import numpy as np
import scipy.io
from PIL import Image

import caffe
from common import datasets

MAX_JITTER = 32
# The module names the reference release's prototxts give these layers
# (each a one-line module in layers_aliases/ that re-exports this one).
RELEASE_MODULES = ('voc_layers', 'nyud_layers', 'siftflow_layers', 'pascalcontext_layers')
# File name endings SegDataLayer treats as images when pairing two folders.
IMAGE_EXTENSIONS = datasets.IMAGE_EXTENSIONS


class ParamError(ValueError):
    """A layer's param_str is malformed, or has unknown, missing or bad keys."""


class DataError(ValueError):
    """A data file is unreadable or holds something other than expected."""


# ---------------------------------------------------------------- loaders

def _open_image(path, what):
    """Open and decode an image with Pillow; errors name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    try:
        with Image.open(path) as im:
            im.load()  # decode now (and close the file) so a bad file fails here, named
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f'{path}: cannot read {what} ({err})') from err
    return im


def load_image(path):
    """An image file as an H x W x 3 uint8 RGB array.

    Grayscale becomes 3 equal channels, alpha is dropped, palette and CMYK
    images convert to RGB. 16-bit and float images are refused.
    """
    im = _open_image(path, 'image')
    if im.mode in ('I', 'F') or im.mode.startswith('I;'):
        raise DataError(f'{path}: expected an 8-bit image, got Pillow mode {im.mode!r}')
    if im.mode != 'RGB':
        im = im.convert('RGB')
    return np.asarray(im, dtype=np.uint8)


def preprocess(rgb, mean):
    """H x W x 3 RGB -> float32 3 x H x W, BGR minus the BGR `mean`."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'preprocess: expected an H x W x 3 image, got shape {rgb.shape}')
    bgr = rgb[:, :, ::-1].astype(np.float32)
    # The float64 mean is subtracted in float64 and rounded once, as the
    # reference layers do (float32 array -= float64 array).
    bgr -= np.asarray(mean, dtype=np.float64).reshape(1, 1, 3)
    return np.ascontiguousarray(bgr.transpose(2, 0, 1))


def check_label(label, num_classes, path):
    """Raise DataError unless every value is in 0..num_classes-1 or void."""
    bad = ((label >= num_classes) & (label != datasets.VOID)) | (label < 0)
    if bad.any():
        values = np.unique(label[bad])
        shown = ', '.join(str(v) for v in values[:10]) + (' ...' if len(values) > 10 else '')
        raise DataError(f'{path}: label values {shown} outside 0..{num_classes - 1} '
                        f'(and {datasets.VOID} void) for the net\'s {num_classes} classes')
    return label


def load_label_image(path, num_classes=None, label_map=None):
    """A label image as an H x W int64 array of class indices.

    Palette ('P'), grayscale and 16-bit images give their pixel values; RGB
    images are read as VOC palette colours. `label_map` (dict old -> new)
    renames values before they are checked against `num_classes`.
    """
    im = _open_image(path, 'label')
    if im.mode in ('RGB', 'RGBA'):
        label = _palette_indices(np.asarray(im.convert('RGB')), path)
    elif im.mode in ('P', 'L', 'I', '1') or im.mode.startswith('I;'):
        label = np.asarray(im).astype(np.int64)
    else:
        raise DataError(f'{path}: expected a palette, grayscale or VOC-coloured label image, '
                        f'got Pillow mode {im.mode!r}')
    if label_map:
        label = _remap(label, label_map)
    if num_classes is not None:
        check_label(label, num_classes, path)
    return label


def _palette_indices(rgb, path):
    palette = datasets.voc_palette().astype(np.int64)
    code = lambda c: (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]
    keys = code(palette)
    colors = code(rgb.astype(np.int64))
    order = np.argsort(keys)
    pos = np.clip(np.searchsorted(keys[order], colors), 0, len(keys) - 1)
    index = order[pos]
    unknown = keys[index] != colors
    if unknown.any():
        y, x = np.argwhere(unknown)[0]
        raise DataError(f'{path}: colour {tuple(rgb[y, x])} at ({y}, {x}) is not in the '
                        'VOC palette (expected a palette or index label image)')
    return index.astype(np.int64)


def _remap(label, label_map):
    out = label.copy()
    for old, new in label_map.items():
        out[label == old] = new
    return out


def load_mat(path, key):
    """Variable `key` of a MATLAB file; errors name the file and the key."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'label not found: {path}')
    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises several types for corrupt files
        raise DataError(f'{path}: cannot read as a MATLAB file ({err})') from err
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith('__'))
        raise DataError(f'{path}: expected variable {key!r}, found {found}')
    return mat[key]


def _shift_labels(raw, num_classes, path, expected):
    """File labels 1..n (0 void) -> 0..n-1 (255 void), what the reference's
    uint8 `label -= 1` gives; done in wide ints so corrupt values (which
    uint8 would wrap silently) are reported instead. `expected` describes
    the file's values for the message."""
    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise DataError(f'{path}: expected a 2-D label map ({expected}), got shape {raw.shape}')
    raw = raw.astype(np.int64)
    bad = (raw < 0) | (raw > num_classes)
    if bad.any():
        raise DataError(f'{path}: label values {np.unique(raw[bad])[:10].tolist()} '
                        f'outside the expected {expected} for the net\'s {num_classes} classes')
    return np.where(raw == 0, datasets.VOID, raw - 1)


def load_voc_label(path, num_classes):
    """A VOC SegmentationClass palette PNG: H x W, 0..num_classes-1 and 255 void."""
    return load_label_image(path, num_classes=num_classes)


def load_sbd_label(path, num_classes):
    """An SBD cls/<id>.mat (struct GTcls, field Segmentation): H x W, 0..20."""
    gtcls = load_mat(path, 'GTcls')
    try:
        seg = np.asarray(gtcls['Segmentation'].flat[0])
    except (ValueError, IndexError, TypeError) as err:
        raise DataError(f'{path}: expected struct GTcls with field Segmentation ({err})') from err
    if seg.ndim != 2:
        raise DataError(f'{path}: GTcls.Segmentation should be 2-D, got shape {seg.shape}')
    return check_label(seg.astype(np.int64), num_classes, path)


def load_nyud_label(path, num_classes):
    """NYUDv2 segmentation/img_<id>.mat (1..40, 0 void) -> 0..39, 255 void."""
    n = num_classes
    return _shift_labels(load_mat(path, 'segmentation'), n, path, f'0..{n} (0 void)')


def load_nyud_depth(path, mean):
    """A 16-bit depth PNG (millimetres) -> float32 1 x H x W log depth minus `mean`."""
    im = _open_image(path, 'depth')
    if not (im.mode == 'I' or im.mode.startswith('I;16')):
        raise DataError(f'{path}: expected a 16-bit single-channel depth PNG (millimetres), '
                        f'got Pillow mode {im.mode!r}')
    depth = np.asarray(im).astype(np.float32)
    # 0 marks missing depth; log(0) = -inf would turn every convolution it
    # touches into NaN. Clamping to 1 mm keeps it finite (log 1 = 0) and far
    # below any real reading (the Kinect sees from about 500 mm), so the net
    # can still tell missing from near.
    logd = np.log(np.maximum(depth, 1.0)) - np.float32(mean)
    return logd[np.newaxis].astype(np.float32)


def load_nyud_hha(path, mean):
    """A 3-channel HHA PNG -> float32 3 x H x W minus `mean`, channels in
    file order (HHA is not swapped like RGB -> BGR)."""
    im = _open_image(path, 'HHA image')
    if im.mode != 'RGB':
        raise DataError(f'{path}: expected a 3-channel 8-bit HHA PNG, got Pillow mode {im.mode!r}')
    hha = np.asarray(im).astype(np.float32)
    hha -= np.asarray(mean, dtype=np.float64)
    return np.ascontiguousarray(hha.transpose(2, 0, 1))


def load_siftflow_label(path, kind, num_classes):
    """SIFT Flow label .mat (key S) -> H x W with 255 void.

    kind 'semantic': 1..33 (0 void) -> 0..32. kind 'geometric': 1..3 (-1 and
    0 void; the reference maps -1 to 0 before the shift) -> 0..2.
    """
    raw = np.asarray(load_mat(path, 'S'))
    n = num_classes
    if kind == 'semantic':
        return _shift_labels(raw, n, path, f'semantic labels 0..{n} (0 void)')
    if kind == 'geometric':
        raw = np.where(raw == -1, 0, raw)
        return _shift_labels(raw, n, path, f'geometric labels -1..{n} (-1 and 0 void)')
    raise ValueError(f"load_siftflow_label: kind must be 'semantic' or 'geometric', got {kind!r}")


def _read_index_names(path):
    """Lines 'idx: name' -> [(idx, name with all whitespace removed)]."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'PASCAL-Context label list not found: {path}')
    entries = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            idx, _, name = line.partition(':')
            name = ''.join(name.split())
            if not idx.strip().isdigit() or not name:
                raise DataError(f"{path}:{n}: expected 'idx: name', got {line.strip()!r}")
            entries.append((int(idx), name))
    return entries


# Task names in 59_labels.txt that the full labels.txt spells differently.
CONTEXT_RENAMED = {'diningtable': 'table', 'bedcloth': 'bedclothes', 'clothes': 'cloth'}


def context_label_lut(context_dir):
    """Look-up table: full PASCAL-Context label index -> 59-class task label.

    Task classes get their position in 59_labels.txt + 1 (1..59), every other
    full label 0 (background). Names match with spaces removed, with the
    three CONTEXT_RENAMED exceptions.
    """
    full_path = os.path.join(context_dir, 'labels.txt')
    task_path = os.path.join(context_dir, '59_labels.txt')
    full = _read_index_names(full_path)
    task = _read_index_names(task_path)
    if len(task) != len(datasets.CONTEXT_CLASSES) - 1:
        raise DataError(f'{task_path}: expected {len(datasets.CONTEXT_CLASSES) - 1} task '
                        f'classes, found {len(task)}')
    index_of = {name: idx for idx, name in full}
    lut = np.zeros(max(idx for idx, _ in full) + 1, dtype=np.int64)
    for position, (_, name) in enumerate(task):
        full_name = CONTEXT_RENAMED.get(name, name)
        if full_name not in index_of:
            raise DataError(f'{full_path}: has no label {full_name!r} (task class {name!r} '
                            f'of {task_path})')
        lut[index_of[full_name]] = position + 1
    return lut


def load_context_label(path, lut, num_classes):
    """PASCAL-Context trainval/<id>.mat (LabelMap, full indices) -> H x W 0..59
    (task classes from `lut`, see context_label_lut)."""
    full = np.asarray(load_mat(path, 'LabelMap'))
    if full.ndim != 2:
        raise DataError(f'{path}: LabelMap should be 2-D, got shape {full.shape}')
    full = full.astype(np.int64)  # indices exceed 255
    bad = (full < 0) | (full >= len(lut))
    if bad.any():
        raise DataError(f'{path}: LabelMap values {np.unique(full[bad])[:10].tolist()} '
                        f'outside the label list 0..{len(lut) - 1}')
    return check_label(lut[full], num_classes, path)


def example_id(example):
    """A name for an example: its id, or for an (image, label) pair the image's stem."""
    if isinstance(example, str):
        return example
    return os.path.splitext(os.path.basename(example[0]))[0]


def read_split(path):
    """Ids of a split file, one per line; blank lines, CRLF line ends and a
    UTF-8 byte order mark (as Windows editors save) are tolerated."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'split file not found: {path}')
    ids = datasets.split_ids(path)
    if not ids:
        raise DataError(f'{path}: split file lists no examples')
    return ids


# ---------------------------------------------------------------- params

def _is_bool(v):
    return isinstance(v, bool)


def _is_str(v):
    return isinstance(v, str) and v != ''


def _is_mean(v):
    return (isinstance(v, (list, tuple)) and len(v) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


# What each key must hold: (check, description for the error message).
PARAM_CHECKS = {
    'voc_dir': (_is_str, 'a folder path'),
    'sbdd_dir': (_is_str, 'a folder path'),
    'nyud_dir': (_is_str, 'a folder path'),
    'siftflow_dir': (_is_str, 'a folder path'),
    'context_dir': (_is_str, 'a folder path'),
    'data_dir': (_is_str, 'a folder path'),
    'image_dir': (_is_str, 'a folder path'),
    'label_dir': (_is_str, 'a folder path'),
    'list_file': (_is_str, 'a file path'),
    'split': (_is_str, 'a split name'),
    'mean': (_is_mean, 'three numbers (B, G, R)'),
    'means': (lambda v: isinstance(v, dict) and all(
        k in ('color', 'hha') and _is_mean(x) or k == 'depth' and _is_number(x)
        for k, x in v.items()),
        "a dict of 'color' and 'hha': three numbers, 'depth': a number (log depth)"),
    'randomize': (_is_bool, 'True or False'),
    'seed': (lambda v: v is None or isinstance(v, (int, str)) and not isinstance(v, bool),
             'an int, a string or None'),
    'prefetch': (lambda v: v is None or _is_bool(v), 'True, False or None (on while training)'),
    'mirror': (_is_bool, 'True or False'),
    'jitter': (lambda v: _is_int(v, 0, MAX_JITTER), f'an int 0..{MAX_JITTER} (pixels)'),
    'tops': (lambda v: isinstance(v, (list, tuple)) and len(v) > 0, 'a non-empty list'),
    'num_classes': (lambda v: _is_int(v, 1, datasets.VOID) or isinstance(v, dict) and v and all(
        _is_str(k) and _is_int(x, 1, datasets.VOID) for k, x in v.items()),
        f'an int 1..{datasets.VOID}, or a dict of label top -> int 1..{datasets.VOID}'),
    'keep': (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
             'a fraction 0 < keep <= 1'),
    'cell': (lambda v: _is_int(v, 1, 1024), 'an int 1..1024 (pixels)'),
    'label_map': (lambda v: v is None or isinstance(v, dict) and all(
        _is_int(k, -2**31, 2**31) and _is_int(x, 0, datasets.VOID) for k, x in v.items()),
        f'None or a dict of int -> int 0..{datasets.VOID}'),
}

COMMON_DEFAULTS = {'randomize': True, 'seed': None, 'prefetch': None,
                   'mirror': False, 'jitter': 0}


def parse_params(param_str, layer, required, defaults):
    """param_str (a dict literal or JSON object) -> dict with defaults filled.

    Read with ast.literal_eval, so an expression such as a function call is
    refused without being run. Unknown or missing keys raise ParamError
    listing the valid ones.
    """
    valid = sorted(set(required) | set(defaults))
    try:
        params = ast.literal_eval(param_str.strip()) if param_str.strip() else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        try:
            params = json.loads(param_str)
        except ValueError:
            raise ParamError(f'{layer}: param_str must be a dict literal such as '
                             f"\"{{'split': 'train'}}\" (no expressions or calls), got "
                             f'{param_str!r}; valid keys: {valid}') from None
    if not isinstance(params, dict):
        raise ParamError(f'{layer}: param_str must be a dict, got {param_str!r}; '
                         f'valid keys: {valid}')
    unknown = sorted(str(k) for k in params if k not in valid)
    missing = [k for k in required if k not in params]
    if unknown or missing:
        raise ParamError(f'{layer}: ' + '; '.join(
            ([f'unknown keys {unknown}'] if unknown else [])
            + ([f'missing keys {missing}'] if missing else []))
            + f'; valid keys: {valid} (required: {list(required)})')
    params = {**defaults, **params}
    for key, value in params.items():
        check, expected = PARAM_CHECKS[key]
        if value is None and key in defaults and defaults[key] is None:
            continue  # an optional key left unset
        if not check(value):
            raise ParamError(f'{layer}: param {key!r} must be {expected}, got {value!r}')
    return params


# ---------------------------------------------------------------- prefetch

# Loads in flight, joined at exit so no daemon thread dies inside a decoder.
_PREFETCH_THREADS = weakref.WeakSet()


@atexit.register
def _join_prefetch_threads():
    for thread in list(_PREFETCH_THREADS):
        with contextlib.suppress(RuntimeError):  # a signal cut its start() short: never started
            thread.join(timeout=10)


class _Prefetch:
    """One example loading in a short-lived daemon thread.

    pycaffe keeps the GIL while Caffe computes, so the thread overlaps the
    net only where it is itself outside the GIL (file reads, Pillow's
    decoding, large numpy operations).
    """

    def __init__(self, load, plan):
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, args=(load, plan),
                                       name='fcn-data-prefetch', daemon=True)
        _PREFETCH_THREADS.add(self.thread)
        self.thread.start()

    def _run(self, load, plan):
        try:
            self.result = load(plan)
        except BaseException as err:  # handed to the main thread by get()
            self.error = err

    def get(self):
        self.join()
        if self.error is not None:
            raise self.error
        return self.result

    def join(self):
        """Wait for the load (a thread a signal kept from starting has
        nothing to wait for)."""
        with contextlib.suppress(RuntimeError):  # "cannot join thread before it is started"
            self.thread.join()


# ---------------------------------------------------------------- layers

class SegDataLayerBase(caffe.Layer):
    """Plumbing shared by the data layers. A subclass sets:

    required    param keys without a default
    defaults    its own param keys with defaults (COMMON_DEFAULTS are added)
    top_names   its tops, in output order
    label_tops  which tops are labels (1 x 1 x H x W, void 255)

    and defines split_file() (or list_examples()), example_files(example)
    -> {top: path} and load(top, path) -> array (labels H x W, data
    C x H x W float32). configure() may read extra files once at setup.
    """
    required = ()
    defaults = {}
    top_names = ('data', 'label')
    label_tops = ('label',)

    # --- what subclasses provide
    def configure(self):
        pass

    @classmethod
    def split_path(cls, params):
        """The split file that `params` (parsed param_str) name."""
        raise NotImplementedError

    @classmethod
    def input_paths(cls, params):
        """The files the layer reads before its first example (split files,
        lists): what must exist for a net with these params to start."""
        return [cls.split_path(params)]

    def split_file(self):
        return self.split_path(self.params)

    def list_examples(self):
        # Absolute, so that messages name the file wherever the user is
        # (the net's paths are relative to the model folder).
        return read_split(os.path.abspath(self.split_file()))

    def example_files(self, example):
        raise NotImplementedError

    def load(self, top, path):
        raise NotImplementedError

    def training(self):
        """Whether this layer feeds training: shuffling and prefetch follow it."""
        return 'train' in self.params['split']

    # --- Caffe interface
    def setup(self, bottom, top):
        name = type(self).__name__
        self.params = parse_params(self.param_str, name, self.required,
                                   {**COMMON_DEFAULTS, **self.defaults})
        self.configure()
        if len(bottom) != 0:
            raise ParamError(f'{name}: a data layer takes no bottoms, got {len(bottom)}')
        if len(top) != len(self.top_names):
            raise ParamError(f'{name}: needs {len(self.top_names)} tops '
                             f'({", ".join(self.top_names)}), got {len(top)}')
        self.num_classes = self._class_counts()
        self.examples = self.list_examples()
        p = self.params
        self.shuffle = p['randomize'] and self.training()
        self.prefetch = self.training() if p['prefetch'] is None else p['prefetch']
        # Multi-GPU (NCCL, one process per GPU): each solver takes its own
        # share of the training sequence, every solver_count-th example.
        self._share = (caffe.solver_rank(), caffe.solver_count()) if self.training() else (0, 1)
        self.seek(0)

    def _class_counts(self):
        """{label top: the net's class count}, from param `num_classes` (the
        dataset's own counts unless the net gives others)."""
        name, given = type(self).__name__, self.params['num_classes']
        if not isinstance(given, dict):
            if len(self.label_tops) == 1:
                return {self.label_tops[0]: given}
            raise ParamError(f'{name}: param \'num_classes\' must give a count per label top '
                             f'({", ".join(self.label_tops)}), got {given!r}')
        if set(given) != set(self.label_tops):
            raise ParamError(f'{name}: param \'num_classes\' must give a count for each label '
                             f'top {list(self.label_tops)}, got {given!r}')
        return dict(given)

    def seek(self, consumed):
        """Continue as if `consumed` examples had been served since setup (the
        training loop resumes the data order with the iteration)."""
        p = self.params
        if getattr(self, '_pending', None) is not None:
            self._pending.join()  # its example is discarded
        # Separate streams, so switching augmentation on leaves the order alone.
        self._order_rng = random.Random(p['seed'])
        self._augment_rng = random.Random(None if p['seed'] is None else f'augment-{p["seed"]}')
        self._order, self._position = list(range(len(self.examples))), len(self.examples)
        self._current = None   # the example the tops hold until forward
        self._pending = None   # a _Prefetch of the one after
        for _ in range(consumed):
            self._next_plan()

    def reshape(self, bottom, top):
        # Caffe calls reshape at setup and before every forward: load once
        # per forward, so the sequence does not depend on how often.
        if self._current is None:
            pending, self._pending = self._pending, None
            self._current = pending.get() if pending else self._load(self._next_plan())
        # Index the blob vectors: pycaffe cannot iterate them.
        for i, array in enumerate(self._current):
            top[i].reshape(1, *array.shape)

    def forward(self, bottom, top):
        for i, array in enumerate(self._current):
            top[i].data[...] = array
        self._current = None
        if self.prefetch:
            self._pending = _Prefetch(self._load, self._next_plan())

    def backward(self, top, propagate_down, bottom):
        pass

    def close(self):
        """Stop prefetching: wait for the load in flight (its example is still
        the next one served); later examples load in the calling thread."""
        self.prefetch = False
        if self._pending is not None:
            self._pending.join()

    # --- order, augmentation and loading
    def _next_plan(self):
        """The next example of this solver's share of the sequence."""
        rank, count = self._share
        plans = [self._next_shared_plan() for _ in range(count)]
        return plans[rank]

    def _next_shared_plan(self):
        """The next example's index and augmentation draws. All randomness is
        drawn here, in the calling thread, so prefetching cannot change it."""
        if self._position == len(self._order):
            if self.shuffle:
                self._order_rng.shuffle(self._order)
            self._position = 0
        index = self._order[self._position]
        self._position += 1
        p, rng = self.params, self._augment_rng
        flip = p['mirror'] and rng.random() < 0.5
        dy, dx = (rng.randint(-p['jitter'], p['jitter']) for _ in range(2)) if p['jitter'] else (0, 0)
        return index, flip, dy, dx

    def _load(self, plan):
        """Load one example as the arrays of its tops (no Caffe calls: runs in
        the prefetch thread too)."""
        index, flip, dy, dx = plan
        files = {top: os.path.abspath(path)  # messages name files wherever the user is
                 for top, path in self.example_files(self.examples[index]).items()}
        arrays = []
        for top in self.top_names:
            array = self.load(top, files[top])
            if top in self.label_tops:
                array = array[np.newaxis]
            arrays.append(array)
        ref_top = self.top_names[0]
        for top, array in zip(self.top_names, arrays):
            if array.shape[1:] != arrays[0].shape[1:]:
                raise DataError(
                    f'{files[top]}: {top} is {array.shape[1]}x{array.shape[2]} but '
                    f'{files[ref_top]} ({ref_top}) is {arrays[0].shape[1]}x{arrays[0].shape[2]}; '
                    'they must be the same size')
        out = []
        for top, array in zip(self.top_names, arrays):
            fill = datasets.VOID if top in self.label_tops else 0
            array = _translate(array[..., ::-1] if flip else array, dy, dx, fill)
            out.append(array.astype(np.float32))
        return out


def _translate(array, dy, dx, fill):
    """Shift the last two axes by (dy, dx), same size, uncovered pixels `fill`."""
    if dy == 0 and dx == 0:
        return array
    h, w = array.shape[-2:]
    out = np.full_like(array, fill)
    if abs(dy) < h and abs(dx) < w:
        out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            array[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


class VOCSegDataLayer(SegDataLayerBase):
    """PASCAL VOC: JPEGImages/<id>.jpg, SegmentationClass/<id>.png.
    Keys: voc_dir, split; mean (default the VOC mean), num_classes (default
    VOC's 21). Tops: data, label."""
    required = ('voc_dir', 'split')
    defaults = {'mean': datasets.VOC_MEAN, 'num_classes': datasets.VOC_NUM_CLASSES}

    @classmethod
    def split_path(cls, params):
        return datasets.voc_split(params['voc_dir'], params['split'])

    def example_files(self, idx):
        d = self.params['voc_dir']
        return {'data': datasets.voc_image(d, idx), 'label': datasets.voc_label(d, idx)}

    def load(self, top, path):
        if top == 'data':
            return preprocess(load_image(path), self.params['mean'])
        return load_voc_label(path, self.num_classes[top])


class SBDDSegDataLayer(SegDataLayerBase):
    """SBD: img/<id>.jpg, cls/<id>.mat (GTcls.Segmentation), split <sbdd_dir>/<split>.txt.
    Keys: sbdd_dir, split; mean (default the VOC mean), num_classes (default
    VOC's 21). Tops: data, label."""
    required = ('sbdd_dir', 'split')
    defaults = VOCSegDataLayer.defaults  # SBD labels VOC's classes on VOC-like images

    @classmethod
    def split_path(cls, params):
        return os.path.join(params['sbdd_dir'], params['split'] + '.txt')

    def example_files(self, idx):
        d = self.params['sbdd_dir']
        return {'data': os.path.join(d, 'img', idx + '.jpg'),
                'label': os.path.join(d, 'cls', idx + '.mat')}

    def load(self, top, path):
        if top == 'data':
            return preprocess(load_image(path), self.params['mean'])
        return load_sbd_label(path, self.num_classes[top])


class NYUDSegDataLayer(SegDataLayerBase):
    """NYUDv2 40 classes. Keys: nyud_dir, split, tops (names from color,
    depth, hha, label; output in the listed order); means (what input tops
    subtract, {'color': BGR, 'hha': in file order, 'depth': log depth}; a top
    it leaves out subtracts the NYUD mean), num_classes (default 40)."""
    required = ('nyud_dir', 'split', 'tops')
    defaults = {'means': datasets.NYUD_MEANS, 'num_classes': datasets.NYUD_NUM_CLASSES}
    TOPS = ('color', 'depth', 'hha', 'label')

    def configure(self):
        tops = list(self.params['tops'])
        if any(t not in self.TOPS for t in tops) or len(set(tops)) != len(tops):
            raise ParamError(f'NYUDSegDataLayer: param \'tops\' must list distinct names from '
                             f'{list(self.TOPS)}, got {tops!r}')
        self.params['means'] = {**datasets.NYUD_MEANS, **self.params['means']}
        self.top_names = tuple(tops)

    @classmethod
    def split_path(cls, params):
        return os.path.join(params['nyud_dir'], params['split'] + '.txt')

    def example_files(self, idx):
        d = self.params['nyud_dir']
        name = f'img_{idx}'
        return {'color': os.path.join(d, 'data', 'images', name + '.png'),
                'depth': os.path.join(d, 'data', 'depth', name + '.png'),
                'hha': os.path.join(d, 'data', 'hha', name + '.png'),
                'label': os.path.join(d, 'segmentation', name + '.mat')}

    def load(self, top, path):
        means = self.params['means']
        if top == 'color':
            return preprocess(load_image(path), means['color'])
        if top == 'depth':
            return load_nyud_depth(path, means['depth'])
        if top == 'hha':
            return load_nyud_hha(path, means['hha'])
        return load_nyud_label(path, self.num_classes[top])


class SIFTFlowSegDataLayer(SegDataLayerBase):
    """SIFT Flow. Keys: siftflow_dir, split; mean (default the SIFT Flow
    mean), num_classes ({'sem': n, 'geo': n}, default 33 and 3).
    Tops: data, sem, geo."""
    required = ('siftflow_dir', 'split')
    defaults = {'mean': datasets.SIFTFLOW_MEAN,
                'num_classes': {'sem': datasets.SIFTFLOW_NUM_CLASSES,
                                'geo': datasets.SIFTFLOW_GEO_NUM_CLASSES}}
    top_names = ('data', 'sem', 'geo')
    label_tops = ('sem', 'geo')
    SUBDIR = datasets.SIFTFLOW_SUBDIR

    @classmethod
    def split_path(cls, params):
        return os.path.join(params['siftflow_dir'], params['split'] + '.txt')

    def example_files(self, idx):
        d = self.params['siftflow_dir']
        return {'data': os.path.join(d, 'Images', self.SUBDIR, idx + '.jpg'),
                'sem': os.path.join(d, 'SemanticLabels', self.SUBDIR, idx + '.mat'),
                'geo': os.path.join(d, 'GeoLabels', self.SUBDIR, idx + '.mat')}

    def load(self, top, path):
        if top == 'data':
            return preprocess(load_image(path), self.params['mean'])
        return load_siftflow_label(path, 'semantic' if top == 'sem' else 'geometric',
                                   self.num_classes[top])


class PASCALContextSegDataLayer(SegDataLayerBase):
    """PASCAL-Context 59 classes + background. Keys: voc_dir (holding
    VOC2010), context_dir, split (VOC2010 ImageSets/Main); mean (default the
    reference layer's constant, datasets.CONTEXT_MEAN), num_classes (default
    60). Tops: data, label."""
    required = ('voc_dir', 'context_dir', 'split')
    defaults = {'mean': datasets.CONTEXT_MEAN, 'num_classes': datasets.CONTEXT_NUM_CLASSES}

    def configure(self):
        self.lut = context_label_lut(self.params['context_dir'])

    @classmethod
    def split_path(cls, params):
        return datasets.voc_split(os.path.join(params['voc_dir'], 'VOC2010'), params['split'], 'Main')

    @classmethod
    def input_paths(cls, params):
        return [cls.split_path(params)] + [os.path.join(params['context_dir'], name)
                                           for name in ('labels.txt', '59_labels.txt')]

    def example_files(self, idx):
        return {'data': datasets.voc_image(os.path.join(self.params['voc_dir'], 'VOC2010'), idx),
                'label': os.path.join(self.params['context_dir'], 'trainval', idx + '.mat')}

    def load(self, top, path):
        if top == 'data':
            return preprocess(load_image(path), self.params['mean'])
        return load_context_label(path, self.lut, self.num_classes[top])


class SegDataLayer(SegDataLayerBase):
    """A user's own data: images and label images (palette, grayscale or
    16-bit index PNGs, or VOC-coloured RGB).

    Keys: one of data_dir + split (a data folder: images/<stem>.<jpg|png|...>,
    labels/<stem>.png, <split>.txt listing stems; or the PASCAL VOC layout;
    datasets.layout_of), list_file (lines 'image label', whitespace-separated,
    paths relative to the list file's folder or absolute) or image_dir +
    label_dir (paired by file stem); num_classes; mean (default VOC mean);
    label_map (dict old -> new, applied before the class check); seed.
    Trains (shuffles and prefetches by default) when the net's phase is TRAIN.
    """
    defaults = {'data_dir': None, 'split': None, 'list_file': None, 'image_dir': None,
                'label_dir': None, 'mean': datasets.VOC_MEAN, 'label_map': None}
    required = ('num_classes',)
    WAYS = (('data_dir', 'split'), ('list_file',), ('image_dir', 'label_dir'))

    def configure(self):
        p = self.params
        given = [way for way in self.WAYS if any(p[k] is not None for k in way)]
        if len(given) != 1 or any(p[k] is None for k in given[0]):
            ways = '; '.join(' + '.join(way) for way in self.WAYS)
            got = ', '.join(f'{k}={p[k]!r}' for way in self.WAYS for k in way if p[k] is not None)
            raise ParamError(f'SegDataLayer: give one of {ways}; got {got or "none"}')

    def training(self):
        return self.phase == caffe.TRAIN

    @classmethod
    def split_path(cls, params):
        return datasets.layout_of(params['data_dir']).split_file(params['data_dir'], params['split'])

    @classmethod
    def input_paths(cls, params):
        if params['data_dir'] is not None:
            # The folder: which layout it has (so where its split files are)
            # is seen from the model folder, where the layer runs.
            return [params['data_dir']]
        return [params['list_file']] if params['list_file'] else [params['image_dir'], params['label_dir']]

    def list_examples(self):
        p = self.params
        if p['data_dir'] is not None:
            return self._folder_examples(os.path.abspath(p['data_dir']), p['split'])
        return self._read_list(p['list_file']) if p['list_file'] else \
            self._pair_folders(p['image_dir'], p['label_dir'])

    @classmethod
    def _folder_examples(cls, data_dir, split):
        """(image, label) of each stem a data folder's split lists."""
        layout = datasets.layout_of(data_dir)
        split_file = layout.split_file(data_dir, split)
        images = layout.image_files(data_dir)
        pairs = []
        for stem in read_split(split_file):
            found = images.get(stem, [])
            if len(found) != 1:
                raise (FileNotFoundError if not found else DataError)(
                    f'{split_file}: {stem}: ' + (f'no image {layout.missing_image(data_dir, stem)}'
                                                 if not found else f'several images {found}'))
            pairs.append((found[0], layout.label(data_dir, stem)))
        return pairs

    @staticmethod
    def _read_list(path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f'list file not found: {path}')
        base = os.path.dirname(os.path.abspath(path))
        pairs = []
        with open(path) as f:
            for n, line in enumerate(f, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 2:
                    raise DataError(f"{path}:{n}: expected 'image_path label_path', "
                                    f'got {line.strip()!r}')
                pairs.append(tuple(os.path.join(base, x) for x in fields))
        if not pairs:
            raise DataError(f'{path}: list file lists no examples')
        return pairs

    @staticmethod
    def _pair_folders(image_dir, label_dir):
        for d in (image_dir, label_dir):
            if not os.path.isdir(d):
                raise FileNotFoundError(f'folder not found: {d}')
        labels = {}
        for name in sorted(os.listdir(label_dir)):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            if stem in labels:
                raise DataError(f'{label_dir}: two labels for {stem!r}: {labels[stem]} and {name}')
            labels[stem] = name
        pairs = []
        for name in sorted(os.listdir(image_dir)):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            if stem not in labels:
                raise FileNotFoundError(f'label not found for image {os.path.join(image_dir, name)}: '
                                        f'expected {os.path.join(label_dir, stem)}.<ext>')
            pairs.append((os.path.join(image_dir, name), os.path.join(label_dir, labels[stem])))
        if not pairs:
            raise DataError(f'{image_dir}: no images ({", ".join(IMAGE_EXTENSIONS)})')
        return pairs

    def example_files(self, pair):
        return {'data': pair[0], 'label': pair[1]}

    def load(self, top, path):
        p = self.params
        if top == 'data':
            return preprocess(load_image(path), p['mean'])
        return load_label_image(path, self.num_classes[top], p['label_map'])


# ---------------------------------------------------------------- loss ablations
# Not data layers: they turn a label top into what an ablation's loss
# takes (PAMI's loss sampling and sigmoid cross-entropy). No gradient flows
# to labels, so backward does nothing.

class _LabelTransformLayer(caffe.Layer):
    required = ()
    defaults = {}

    def setup(self, bottom, top):
        name = type(self).__name__
        self.params = parse_params(self.param_str, name, self.required, self.defaults)
        if len(bottom) != 1 or len(top) != 1:
            raise ParamError(f'{name}: takes one bottom (a label) and gives one top, '
                             f'got {len(bottom)} bottoms and {len(top)} tops')

    def backward(self, top, propagate_down, bottom):
        pass


class LossSamplingLayer(_LabelTransformLayer):
    """Loss sampling: each `cell` x `cell` patch of the label (one cell of a
    stride-`cell` net's final layer, from the top left) is kept with
    probability `keep` and otherwise voided (255), so the loss sees a random
    sample of the final layer's cells. Keys: keep (0 < keep <= 1), cell
    (pixels), seed (as the data layers': the draws of the n-th forward
    depend on (seed, n) only, so seek(n) resumes them)."""
    required = ('keep', 'cell')
    defaults = {'seed': None}

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self.seek(0)

    def seek(self, consumed):
        """Continue as if `consumed` labels had been sampled (training resumes)."""
        self._served = consumed

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        p = self.params
        key = f"loss-sampling-{p['seed']}-{self._served}"
        rng = np.random.default_rng(None if p['seed'] is None else random.Random(key).getrandbits(64))
        self._served += 1
        n, c, h, w = bottom[0].data.shape
        cell = p['cell']
        kept = rng.random((n, 1, -(-h // cell), -(-w // cell))) < p['keep']
        kept = np.repeat(np.repeat(kept, cell, axis=2), cell, axis=3)[:, :, :h, :w]
        top[0].data[...] = np.where(kept, bottom[0].data, datasets.VOID)


class OneHotLabelLayer(_LabelTransformLayer):
    """A label (N x 1 x H x W, void 255) as N x num_classes x H x W one-hot
    targets for SigmoidCrossEntropyLoss; a void pixel is 255 in every
    channel, which that loss's ignore_label 255 skips."""
    required = ('num_classes',)

    def setup(self, bottom, top):
        super().setup(bottom, top)
        if not isinstance(self.params['num_classes'], int):
            raise ParamError(f'OneHotLabelLayer: param \'num_classes\' must be an int, '
                             f'got {self.params["num_classes"]!r}')

    def reshape(self, bottom, top):
        n, _, h, w = bottom[0].data.shape
        top[0].reshape(n, self.params['num_classes'], h, w)

    def forward(self, bottom, top):
        k = self.params['num_classes']
        label = bottom[0].data[:, 0]
        if ((label >= k) & (label != datasets.VOID)).any():
            raise DataError(f'OneHotLabelLayer: label values must be 0..{k - 1} or '
                            f'{datasets.VOID} (void), got {np.unique(label).tolist()}')
        onehot = (label[:, None] == np.arange(k)[None, :, None, None]).astype(np.float32)
        top[0].data[...] = np.where(label[:, None] == datasets.VOID, datasets.VOID, onehot)
