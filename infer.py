"""Segment photos with a trained FCN: a label PNG, an overlay and the share
of pixels per class for each image.

    python infer.py PHOTO_OR_FOLDER [...] [--model voc-fcn8s] [--weights W]
        [--gpu N] [--out DIR] [--recursive] [--max-side N] [--scores]
        [--json FILE] [--memory GB] [--engine caffe|onnx|openvino]
        [--precision bf16|f32] [--allow-module NAME]
        [--ray ADDRESS] [--skip-done]

Photos are read as viewers show them: the EXIF orientation is applied;
16-bit, palette, CMYK, grayscale and transparent images become 8-bit RGB
(transparency over white). A photo longer than --max-side pixels on its
longer side is resized for the net and the class probabilities are upsampled
back (bilinear), so every output has the photo's own size. Before each photo
the memory the net needs is estimated: a photo that would not fit is reported
with a --max-side that would, and skipped. The net is loaded once.

Outputs mirror the inputs' folder tree under --out. For a photo <dir>/<stem>.<ext>:
    <out>/<dir>/<stem>.png           class indices, PASCAL VOC palette (as score.py saves)
    <out>/<dir>/<stem>_overlay.png   the photo with the classes' colours blended in
    <out>/<dir>/<stem>_scores.npy    with --scores: C x H x W class probabilities (float16)
(<stem>.<ext>.png and so on where two photos of a folder share a stem).
--json FILE: one entry per image (its outputs, sizes, and class shares, or
its error). A photo that cannot be read is reported and skipped; the others
are segmented, and the run ends with a summary and exit status 1.
Each photo's outputs are written to temporary files and renamed into place
together when whole. Before any work the run stops if an output would
overwrite an input (a photo, the weights) or another output, or if --scores
would not fit on the disk. Ctrl-C or SIGTERM stops it in one line saying
how many images were done (exit status 130 or 143).
Default weights: the model's published caffemodel where `python -m fetch
weights <model>` puts it (<model>/<file>), else its latest training
snapshot. --engine onnx runs the net in ONNX Runtime (CPU) instead of Caffe:
exported once, checked against Caffe, and cached beside the weights
(onnx_engine.py); --engine openvino runs the same export in OpenVINO (CPU,
the fastest), at --precision (default: the CPU's fastest that keeps the
labels, bf16 where the CPU computes in it; f32: exact). The engine and its
precision are printed first and recorded in --json.
--ray ADDRESS spreads the photos over a Ray cluster's workers, each loading
the net once through the same checks ('local': a cluster started on this
machine; 'auto' or host:port: a running one; docs/cluster.md), with the
same outputs and --json. --skip-done segments only the photos whose outputs
are missing or not whole (common/finished.py): a rerun after an interruption.
"""
import collections
import contextlib
import functools
import json
import os
import sys
from typing import NamedTuple, Optional, Tuple

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from common import caffe_setup, cli

if __name__ == '__main__':
    cli.quit_while_starting('infer.py')  # until main() handles signals
caffe_setup.quiet_caffe_log()  # before layers imports caffe

import caffe  # noqa: E402

import cluster  # noqa: E402
import engines  # noqa: E402
import layers  # noqa: E402
import loading  # noqa: E402
from common import datasets, finished, locations, outputs  # noqa: E402
from common.progress import Progress  # noqa: E402
from common.snapshots import file_sha256  # noqa: E402

DEFAULT_MODEL = cli.DEFAULT_MODEL
OVERLAY_ALPHA = 0.5  # weight of the class colour over object pixels
# The nets learned from PASCAL-sized images (at most 500 px a side): photos
# resized to 1000 px keep objects near the scale the nets know, and FCN-8s
# then needs about 2.5 GB on the CPU; a 12 MP photo at full size needs about
# 20 GB and is no better segmented. 0 keeps every photo's own size.
DEFAULT_MAX_SIDE = 1000
# Probabilities need no more precision; it halves the files (a 12 MP photo's
# 21 classes: 0.5 GB).
SCORES_DTYPE = np.float16
OVERLAY_ROWS = 512  # the overlay is blended this many rows at a time (bounded float copies)
TRANSPARENT_BACKGROUND = (255, 255, 255)  # what transparent pixels show, as most viewers do
GB = 2 ** 30


class InferError(cli.InputError):
    """A problem the user must act on; the message says what."""


class ImageError(InferError):
    """One image cannot be segmented (unreadable, or too large for memory):
    reported and skipped."""


class Result(NamedTuple):
    """One image's outcome: its outputs, or its error."""
    path: str
    label: Optional[str] = None
    overlay: Optional[str] = None
    shares: Tuple = ()
    scores: Optional[str] = None
    size: Optional[Tuple[int, int]] = None       # the photo's (width, height)
    net_size: Optional[Tuple[int, int]] = None   # the net input's (width, height)
    error: Optional[str] = None


class Prediction(NamedTuple):
    """Segmenter.predict's answer for one image, at the image's own size."""
    labels: np.ndarray                     # H x W uint8 class indices (as infer.py's label PNG)
    classes: Tuple[str, ...]               # the class names, in index order
    probabilities: Optional[np.ndarray] = None  # C x H x W float32, with probabilities=True


# ------------------------------------------------------------------ the net
def net_scores(net, rgb, mean, score_blob='score'):
    """C x H x W float32 class scores of the net (an engines.Engine, or a
    caffe.Net as the release's scripts pass it) for an H x W x 3 RGB image
    (any size)."""
    return engines.scores(engines.as_engine(net), layers.preprocess(rgb, mean), score_blob)


def segment(net, rgb, mean, score_blob='score'):
    """H x W uint8 class indices for an H x W x 3 RGB image (any size)."""
    return net_scores(net, rgb, mean, score_blob).argmax(axis=0).astype(np.uint8)


def check_rgb_model(model):
    source = model.source
    if tuple(source.inputs) != ('data',) or source.fusion or \
            getattr(source, 'modalities', ('color',)) != ('color',):
        raise InferError(f'{model.name}: infer.py segments colour images; this model reads '
                         f'{"/".join(getattr(source, "modalities", source.inputs))}')


def load_net(model, weights):
    """The model's deploy net (a caffe.Net) with `weights`, checked before
    Caffe reads them."""
    return engines.load(model.folder, weights, 'caffe').net


def memory_model(engine, model, gpu=None):
    """What a photo costs in memory on `engine` (None on a GPU, whose
    memory is not the host's): Caffe's blobs (MemoryModel), else the
    measured fraction of them another engine's tensors take
    (EXPORTED_MEMORY)."""
    if gpu is not None:
        return None
    classes = len(model.source.heads[0].classes)
    if engine.name == 'caffe':
        return MemoryModel(engine.net, classes)
    # the deploy net without weights, for its blob shapes only
    shapes = caffe.Net(locations.deploy_prototxt(model.folder), caffe.TEST)
    return EXPORTED_MEMORY[engine.name](shapes, classes, model.trunk)


def load_engine(model, weights, engine='caffe', gpu=None, allow_modules=(), **options):
    """(engines.Engine, memory model or None) of the model's deploy net with
    `weights` on `engine` (engines.load)."""
    runner = engines.load(model.folder, weights, engine, gpu, allow_modules=allow_modules, **options)
    return runner, memory_model(runner, model, gpu)


# ------------------------------------------------------------------ photos
def to_rgb(im):
    """An H x W x 3 uint8 RGB array of a Pillow image of any mode: integer
    images deeper than 8 bits are taken as 16-bit and scaled, float ones are
    scaled from 0..1 (or clipped to 0..255 if larger), transparency is
    composited over TRANSPARENT_BACKGROUND."""
    if im.mode.startswith('I') or im.mode == 'F':
        values = np.asarray(im, dtype=np.float32)
        if im.mode == 'F':
            values = values * 255 if values.size and values.max() <= 1 else values
        elif im.mode.startswith('I;16') or (values.size and values.max() > 255):
            values = values / 257  # 65535 -> 255
        gray = np.clip(np.round(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or \
            (im.mode == 'P' and 'transparency' in im.info):
        rgba = im.convert('RGBA')
        background = Image.new('RGBA', rgba.size, TRANSPARENT_BACKGROUND + (255,))
        im = Image.alpha_composite(background, rgba)
    if im.mode != 'RGB':
        im = im.convert('RGB')
    return np.asarray(im, dtype=np.uint8)


def load_photo(path):
    """An image file as viewers show it (EXIF orientation applied), as an
    H x W x 3 uint8 RGB array; an ImageError naming the file otherwise."""
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(ImageOps.exif_transpose(im))
    except MemoryError:
        raise ImageError(f'{path}: not enough memory to decode it') from None
    except Exception as e:  # noqa: BLE001 -- any decoder failure means: this file is unreadable
        raise ImageError(f'{path}: cannot read image ({type(e).__name__}: {e})') from e


def image_rgb(image):
    """(H x W x 3 uint8 RGB array, what to call it in messages) of what
    Segmenter.predict takes: a path, a PIL image, or an array (H x W x 3
    uint8 RGB, or H x W grayscale)."""
    if isinstance(image, (str, os.PathLike)):
        return load_photo(image), str(image)
    if isinstance(image, Image.Image):
        return to_rgb(ImageOps.exif_transpose(image)), 'the PIL image'
    rgb = np.asarray(image)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or not rgb.size:
        raise InferError(f'an image array must be H x W x 3 uint8 RGB (or H x W), got '
                         f'{" x ".join(map(str, rgb.shape))} {rgb.dtype}')
    return rgb, 'the image array'


def net_size(height, width, max_side):
    """(height, width) of the net input for a photo: scaled so its longer side
    is at most max_side (0: no limit)."""
    if not max_side or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(rgb, size):
    """The H x W x 3 image at size (height, width), Pillow's antialiased bilinear."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size[::-1], Image.Resampling.BILINEAR))


def probabilities(scores):
    """Softmax over the classes (axis 0) of C x h x w float32 scores, in
    place (a large photo's scores are gigabytes: no copies)."""
    scores -= scores.max(axis=0)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=0)
    return scores


def upsample_labels(probs, size, scores_file=None):
    """H x W uint8 class indices of C x h x w probabilities upsampled (bilinear)
    to size (H, W), one class at a time so that a large photo holds a few H x W
    arrays, not C; with scores_file (a binary file open for writing), the
    upsampled probabilities are written to it as a .npy (C x H x W,
    SCORES_DTYPE), a class at a time. Plain writes, not a memory map: a full
    disk is then an OSError (ENOSPC), not a bus error."""
    height, width = size
    if scores_file is not None:
        np.lib.format.write_array_header_1_0(scores_file, dict(
            descr=np.lib.format.dtype_to_descr(np.dtype(SCORES_DTYPE)), fortran_order=False,
            shape=(len(probs), height, width)))
    best = np.full(size, -np.inf, np.float32)
    label = np.zeros(size, np.uint8)
    for c, p in enumerate(probs):
        p = upsample_class(p, size)
        better = p > best  # strict: the first of equal classes wins, as argmax
        label[better] = c
        np.maximum(best, p, out=best)
        if scores_file is not None:
            p.astype(SCORES_DTYPE).tofile(scores_file)
    return label


def upsample_class(p, size):
    """One class's h x w float32 probabilities at size (H, W), bilinear: the
    one resampling of upsample_labels and upsample_probabilities."""
    if p.shape == tuple(size):
        return p
    return np.asarray(Image.fromarray(p).resize(size[::-1], Image.Resampling.BILINEAR))


def upsample_probabilities(probs, size):
    """C x H x W float32 probabilities of C x h x w ones, upsampled (bilinear,
    as upsample_labels) to size (H, W)."""
    full = np.empty((len(probs), *size), np.float32)
    for c, p in enumerate(probs):
        full[c] = upsample_class(p, size)
    return full


# ------------------------------------------------------------------ memory
# Bytes per pixel besides the net's blobs: at the net's input size, the
# resized photo (3), the preprocessed image and its copy (3 channels x float32
# x 2), the softmax's maximum and sum (float32 x 2) and, per class, the copy
# of the scores (float32); at the photo's size, the photo (3), its labels (1),
# the best probability so far and one upsampled class with its copy
# (float32 x 3), and the overlay's rows.
NET_BYTES_PER_PIXEL = 35
NET_BYTES_PER_PIXEL_PER_CLASS = 4
PHOTO_BYTES_PER_PIXEL = 20


class MemoryModel:
    """The memory a forward pass of the deploy net takes for an h x w input.

    Every blob's height is an affine function of the input's height and its
    width of the input's width (up to the rounding of pooling and of
    strided convolutions), so the bytes of all blobs are A*h*w + B*h + C*w + D:
    the model reads the blob counts Caffe computes at four small input sizes
    (reshaping allocates nothing) and solves for A, B, C, D. Max pooling's
    argmax masks (one int32 per pooled value) count with the blobs; the tops
    of Split layers do not (they share their bottom's data).
    """
    SIZES = (128, 256)

    def __init__(self, net, classes):
        copies = {}
        for name, layer in zip(net._layer_names, net.layers):
            for top in net.top_names[name]:
                copies[top] = {'Pooling': 2, 'Split': 0}.get(layer.type, 1)
        counts = {}
        for h in self.SIZES:
            for w in self.SIZES:
                net.blobs['data'].reshape(1, net.blobs['data'].shape[1], h, w)
                net.reshape()
                counts[h, w] = 4 * sum(blob.count * copies.get(name, 1) for name, blob in net.blobs.items())
        (h1, h2), (w1, w2) = self.SIZES, self.SIZES
        self.a = (counts[h2, w2] - counts[h2, w1] - counts[h1, w2] + counts[h1, w1]) / ((h2 - h1) * (w2 - w1))
        self.b = (counts[h2, w1] - counts[h1, w1]) / (h2 - h1) - self.a * w1
        self.c = (counts[h1, w2] - counts[h1, w1]) / (w2 - w1) - self.a * h1
        self.d = counts[h1, w1] - self.a * h1 * w1 - self.b * h1 - self.c * w1
        self.classes = classes

    def blob_bytes(self, height, width):
        """Bytes of the net's blobs for a height x width input."""
        return max(0.0, self.a * height * width + self.b * height + self.c * width + self.d)

    def needed(self, photo_size, size):
        """Bytes one photo of photo_size (height, width) takes when the net runs
        at size (height, width): the blobs, the CPU convolution workspace, and
        the arrays of this module."""
        pixels = size[0] * size[1]
        return (self.blob_bytes(*size) + caffe.conv_workspace_limit()
                + pixels * (NET_BYTES_PER_PIXEL + NET_BYTES_PER_PIXEL_PER_CLASS * self.classes)
                + photo_size[0] * photo_size[1] * PHOTO_BYTES_PER_PIXEL)

    def held(self, height, width):
        """Bytes the net keeps after a run at height x width."""
        return self.blob_bytes(height, width)

    def held_after(self, held, height, width):
        """Bytes held after a run at height x width when `held` were held
        before it: the larger (Caffe's blobs never shrink)."""
        return max(held, self.held(height, width))

    def workspace_held(self):
        """Bytes of convolution workspace held now (reused by the next run)."""
        return caffe.conv_workspace_bytes()

    def largest_side(self, photo_size, budget):
        """The largest --max-side whose run of a photo of photo_size fits in
        budget bytes (0 if none does)."""
        lo, hi = 0, max(photo_size)
        while lo < hi:  # the largest side s with needed(...) <= budget
            mid = (lo + hi + 1) // 2
            if self.needed(photo_size, net_size(*photo_size, mid)) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return lo


class OnnxMemoryModel(MemoryModel):
    """The memory of a forward pass in ONNX Runtime (onnx_engine's session:
    no arena): its tensors at their peak, a measured fraction of the bytes
    of all Caffe's blobs, which depends on the trunk (ONNX Runtime frees
    each tensor after its last reader and reuses the memory, but its
    convolutions' buffers differ by kernel), plus this module's arrays.
    Nothing stays held between photos."""
    # ONNX Runtime's peak RSS increase during one forward over the sum of
    # Caffe's blob bytes at the same size, measured with
    # `python tools/onnx_memory.py --models voc-fcn8s voc-fcn-googlenet
    # voc-fcn-alexnet --sizes 500x500 1000x750 2000x1500` (onnxruntime
    # 1.32, 2 cores): vgg16 0.34-0.35, googlenet 0.50-0.59, caffenet
    # 1.28-1.42; each rounded up by about a tenth. Other trunks: the largest.
    BLOB_FRACTION = {'vgg16': 0.4, 'googlenet': 0.65, 'caffenet': 1.6}

    def __init__(self, net, classes, trunk=None):
        super().__init__(net, classes)
        self.fraction = self.BLOB_FRACTION.get(trunk, max(self.BLOB_FRACTION.values()))

    def needed(self, photo_size, size):
        pixels = size[0] * size[1]
        return (self.fraction * self.blob_bytes(*size)
                + pixels * (NET_BYTES_PER_PIXEL + NET_BYTES_PER_PIXEL_PER_CLASS * self.classes)
                + photo_size[0] * photo_size[1] * PHOTO_BYTES_PER_PIXEL)

    def held(self, height, width):
        return 0.0

    def workspace_held(self):
        return 0.0


class OpenvinoMemoryModel(OnnxMemoryModel):
    """The memory of a forward pass in OpenVINO (openvino_engine's compiled
    model, any precision): its tensors at their peak, a measured fraction
    of Caffe's blob bytes, plus this module's arrays; after a forward it
    keeps that size's buffers (HELD_SHARE of the peak) until a forward of
    another size replaces them."""
    # OpenVINO's (bf16) peak RSS increase during one forward over Caffe's
    # blob bytes, measured with `python tools/onnx_memory.py --models
    # voc-fcn8s --sizes 500x500 1000x750 2000x1500 --engine openvino`
    # (openvino 2026.4, 2 cores; docs/performance.md): vgg16 0.281-0.291,
    # rounded up by about a tenth. Other trunks, not measured: ONNX
    # Runtime's (OnnxMemoryModel), which it stays below on vgg16.
    BLOB_FRACTION = {**OnnxMemoryModel.BLOB_FRACTION, 'vgg16': 0.32}
    # Kept after the forward over its peak: 171/190, 395/455 and 1325/1565
    # MiB at those sizes.
    HELD_SHARE = 0.9

    def held(self, height, width):
        return self.HELD_SHARE * self.fraction * self.blob_bytes(height, width)

    def held_after(self, held, height, width):
        return self.held(height, width)  # the last size's buffers only


# The memory models of the engines that run the export (memory_model).
EXPORTED_MEMORY = {'onnx': OnnxMemoryModel, 'openvino': OpenvinoMemoryModel}


def available_memory():
    """Bytes the system can give now (Linux's MemAvailable, else the free
    physical pages), or None where neither is known."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (ValueError, OSError, AttributeError):
        return None


# ------------------------------------------------------------------ outputs
def overlay(rgb, label, alpha=OVERLAY_ALPHA):
    """The image with each non-background pixel tinted by its class colour."""
    colors = datasets.voc_palette()[label].astype(np.float32)
    tint = (label > 0)[..., None] * alpha
    return np.round(rgb * (1 - tint) + colors * tint).astype(np.uint8)


def class_shares(label, class_names):
    """[(class name, fraction of pixels)] for the classes present, largest first."""
    counts = np.bincount(label.ravel(), minlength=len(class_names))[:len(class_names)]
    return sorted(((class_names[i], c / label.size) for i, c in enumerate(counts) if c),
                  key=lambda x: -x[1])


def write_overlay(rgb, label, path):
    """The overlay PNG of a photo, blended OVERLAY_ROWS rows at a time."""
    blended = np.empty_like(rgb)
    for top in range(0, len(rgb), OVERLAY_ROWS):
        rows = slice(top, top + OVERLAY_ROWS)
        blended[rows] = overlay(rgb[rows], label[rows])
    Image.fromarray(blended).save(path)


def summary_line(shares):
    return ', '.join(f'{name} {100 * share:.1f}%' for name, share in shares)


# What each photo gets, by kind: the file name suffix and what messages call it.
OUTPUT_SUFFIXES = {'label': '.png', 'overlay': '_overlay.png', 'scores': '_scores.npy'}
OUTPUT_KINDS = {'label': 'label PNG', 'overlay': 'overlay', 'scores': 'scores'}


def output_paths(out_base, scores=False):
    """{kind: path} of the files a photo's outputs go to."""
    return {kind: out_base + suffix for kind, suffix in OUTPUT_SUFFIXES.items()
            if scores or kind != 'scores'}


def output_bytes(photo_size, classes, scores=False):
    """An upper bound on the bytes a photo's outputs take: the PNGs at most
    their raw pixels (plus zlib's small overhead), the scores exactly."""
    pixels = photo_size[0] * photo_size[1]
    return int(pixels * 4 * 1.01) + 4096 + (classes * pixels * np.dtype(SCORES_DTYPE).itemsize
                                            if scores else 0)


def check_finite_scores(scores, path):
    """Weights that overflow (finite, but huge) give infinite or NaN
    scores, which argmax would turn into class 0 everywhere: an InferError."""
    if not np.isfinite(scores).all():
        raise InferError(f'{path}: the net\'s scores are not finite (NaN or infinity): '
                         'the weights overflow; check them (weights of a diverged training run?)')


def check_outputs_apart(todo, out, scores=False, json_path=None, reads=()):
    """Before any work: an InferError if an output would overwrite an input
    (a photo, `reads`: the weights and the net) or another output (two
    photos whose outputs share a name), naming both."""
    writes = [(p, f'the {OUTPUT_KINDS[kind]} of {path}')
              for path, base in todo for kind, p in output_paths(os.path.join(out, base), scores).items()]
    if json_path:
        writes.append((json_path, '--json'))
    try:
        outputs.guard(writes, [(path, f'the input photo {path}') for path, _ in todo] + list(reads))
    except outputs.OutputError as e:
        raise InferError(f'{e}; choose another --out' if 'input photo' in str(e) else str(e)) from None


def scores_space(todo, out, classes):
    """Before any work with --scores: an InferError if the scores of every
    readable photo (sizes from the headers, without decoding) cannot fit in
    --out's free space."""
    needed = 0
    for path, _ in todo:
        try:
            with Image.open(path) as im:
                needed += output_bytes(im.size[::-1], classes, scores=True)
        except Exception:  # noqa: BLE001 -- unreadable: reported (and skipped) when its turn comes
            continue
    try:
        outputs.check_space(out, needed, f'--scores of {len(todo)} images')
    except outputs.OutputError as e:
        raise InferError(str(e)) from None


# ------------------------------------------------------------------ inputs
def image_paths(inputs, recursive=False):
    """[(image path, output base)]: files as given, folders expanded to their
    images (sorted; subfolders with `recursive`). Output bases mirror the
    inputs' tree below their common folder, so that same-named photos of
    different folders stay apart. A missing input is an InferError naming it."""
    found = []
    roots = []
    for item in inputs:
        if os.path.isdir(item):
            roots.append(os.path.abspath(item))
            walk = os.walk(item) if recursive else [(item, [], os.listdir(item))]
            before = len(found)
            for folder, subfolders, files in walk:
                subfolders.sort()
                found += [os.path.join(folder, f) for f in sorted(files)
                          if f.lower().endswith(layers.IMAGE_EXTENSIONS)
                          and os.path.isfile(os.path.join(folder, f))]
            if len(found) == before:
                raise InferError(f'no images ({", ".join(layers.IMAGE_EXTENSIONS)}) in folder {item}'
                                 + ('' if recursive else ' (--recursive for its subfolders)'))
        elif os.path.isfile(item):
            roots.append(os.path.dirname(os.path.abspath(item)))
            found.append(item)
        else:
            raise InferError(f'image not found: {item}')
    paths = list(dict.fromkeys(found))  # each once, in order
    root = os.path.commonpath(roots)
    bases = [os.path.splitext(os.path.relpath(os.path.abspath(p), root))[0] for p in paths]
    clashes = {b for b, n in collections.Counter(bases).items() if n > 1}
    return [(p, os.path.relpath(os.path.abspath(p), root) if b in clashes else b)
            for p, b in zip(paths, bases)]


# ------------------------------------------------------------------ command
class Segmenter:
    """A model's deploy net, loaded once (the one way: loading.py, then
    engines.load), and what segmenting a photo needs: the Python API.

        seg = Segmenter('voc-fcn8s')            # or a model folder; weights=None: its default
        r = seg.predict('photo.jpg')            # a path, a PIL image or an H x W x 3 uint8 array
        r.labels, r.classes                     # H x W uint8 class indices, the class names
        seg.predict(image, probabilities=True).probabilities   # C x H x W float32

    `predict` writes nothing; calling the Segmenter with a path and an
    output base writes infer.py's files (label PNG, overlay, scores), from
    the same segmentation. `engine_options` go to the engine's loader
    (engines.ENGINES)."""

    def __init__(self, model, weights=None, engine='caffe', gpu=None, max_side=DEFAULT_MAX_SIDE,
                 memory=None, allow_modules=(), **engine_options):
        _, self.model = loading.folder_model(model)
        if self.model is None:
            raise InferError(f'{locations.model_folder(model)}: no net.py (infer.py needs the model\'s '
                             'classes and mean)')
        check_rgb_model(self.model)
        if not weights:
            weights = loading.default_weights(self.model.folder, self.model.name)
        self.weights = weights
        # how it was loaded: a cluster's workers load it the same way (segment_on_cluster)
        self.engine_name, self.engine_options = engine, engine_options
        self.allow_modules = tuple(allow_modules)
        self.engine, self.memory_model = load_engine(self.model, weights, engine, gpu, allow_modules,
                                                     **engine_options)
        self.net = self.engine  # the name earlier callers use
        # What the net was read from: no output may overwrite them.
        self.inputs = [(weights, f'the weights {weights}'),
                       (locations.deploy_prototxt(self.model.folder), 'the deploy net'),
                       (os.path.join(self.model.folder, 'net.py'), "the model's net.py")]
        self.head = self.model.source.heads[0]
        self.mean = self.model.source.mean
        self.max_side = max_side
        self.memory = memory  # bytes for one photo; None: what the system has available
        self.held = 0.0  # bytes the engine holds from earlier photos (MemoryModel.held_after)

    def probabilities(self, rgb, path='the image'):
        """(C x h x w class probabilities at the net's size, that size) of
        an H x W x 3 RGB array, memory checked first."""
        photo_size = rgb.shape[:2]
        size = net_size(*photo_size, self.max_side)
        self.check_memory(path, photo_size, size)
        probs = net_scores(self.engine, resize(rgb, size), self.mean, self.head.score)
        check_finite_scores(probs, path)
        if self.memory_model is not None:
            self.held = self.memory_model.held_after(self.held, *size)
        return probabilities(probs), size

    def predict(self, image, probabilities=False):
        """The Prediction of an image: a path (read as viewers show it, as
        infer.py reads photos), a PIL image, or an H x W x 3 uint8 RGB
        array (H x W: grayscale). Writes nothing."""
        rgb, where = image_rgb(image)
        probs, _ = self.probabilities(rgb, where)
        classes = tuple(self.head.classes)
        if not probabilities:
            return Prediction(upsample_labels(probs, rgb.shape[:2]), classes)
        full = upsample_probabilities(probs, rgb.shape[:2])
        return Prediction(full.argmax(axis=0).astype(np.uint8), classes, full)

    def describe(self):
        """What ran: the model, its classes, the weights (and their
        sha256), the engine (engines.Engine.describe) - for --json."""
        return dict(model=self.model.name, model_folder=os.path.abspath(self.model.folder),
                    classes=list(self.head.classes), weights=os.path.abspath(self.weights),
                    weights_sha256=file_sha256(self.weights), **self.engine.describe())

    def check_memory(self, path, photo_size, size):
        """An ImageError if the photo would not fit in memory at net size `size`."""
        if self.memory_model is None:
            return
        budget = self.memory
        if budget is None:
            available = available_memory()
            if available is None:
                return
            budget = available + self.held + self.memory_model.workspace_held()
        need = self.memory_model.needed(photo_size, size)
        if need <= budget:
            return
        side = self.memory_model.largest_side(photo_size, budget)
        h, w = photo_size
        fits = f'--max-side {side} fits' if side else 'no --max-side fits'
        raise ImageError(f'{path} ({w}x{h}): the net at {size[1]}x{size[0]} needs about '
                         f'{need / GB:.1f} GB, {budget / GB:.1f} GB available; {fits}')

    def __call__(self, path, out_base, scores=False, written=None):
        """Segment one photo and write its outputs (out_base + suffixes)
        through temporary files, renamed into place together when all are
        whole (outputs.atomic_paths); returns its Result, which is also
        passed to `written` (if given) as soon as the files are in place,
        before a signal that came meanwhile interrupts: a caller counting
        the images done counts every image whose outputs were written."""
        rgb = load_photo(path)
        photo_size = rgb.shape[:2]
        probs, size = self.probabilities(rgb, path)
        paths = output_paths(out_base, scores)
        # A full disk or a read-only --out stops the run: no other photo would fare better.
        try:
            os.makedirs(os.path.dirname(out_base) or '.', exist_ok=True)
            outputs.check_space(os.path.dirname(out_base) or '.',
                                output_bytes(photo_size, len(probs), scores), f'the outputs of {path}')
            with outputs.atomic_paths(paths, f'the outputs of {path}',
                                      on_written=lambda: written and written(result)) as tmp:
                with contextlib.ExitStack() as scores_file:
                    f = scores_file.enter_context(open(tmp['scores'], 'wb')) if scores else None
                    label = upsample_labels(probs, photo_size, f)
                del probs
                datasets.save_label_png(tmp['label'], label)
                write_overlay(rgb, label, tmp['overlay'])
                result = Result(path, paths['label'], paths['overlay'],
                                tuple(class_shares(label, self.head.classes)), paths.get('scores'),
                                photo_size[::-1], size[::-1])
        except OSError as e:
            raise InferError(f'{out_base}: cannot write the outputs of {path} ({e.strerror or e})') from e
        except outputs.OutputError as e:
            raise InferError(str(e)) from e
        return result


class SegmentWorker:
    """A cluster worker's Segmenter, loaded once through the same path and
    checks (a cluster.Pool factory: functools.partial(SegmentWorker,
    scores, Segmenter's arguments)), called per (photo, output base); an
    unreadable or too large photo is its Result's error, as in one process."""

    def __init__(self, scores, *args, **kwargs):
        self.scores = scores
        self.segmenter = Segmenter(*args, **kwargs)

    def __call__(self, item):
        path, out_base = item
        try:
            return self.segmenter(path, out_base, self.scores)
        except ImageError as e:
            return Result(path, error=str(e))


def segment_on_cluster(address, todo, out, scores, segmenter, progress=True):
    """Segment `todo` ((photo, output base) pairs) on the Ray cluster
    `address` (cluster.py), each worker loading `segmenter`'s net as it was
    loaded here; the Results in `todo`'s order. An interruption propagates
    with `done` and `total` set on it."""
    results = {}

    def on_result(index, result):
        # The workers got absolute paths (their working folder is not
        # ours); the Result names files as one process would.
        path, base = todo[index]
        named = output_paths(os.path.join(out, base), scores)
        result = result._replace(path=path) if result.error else result._replace(
            path=path, label=named['label'], overlay=named['overlay'], scores=named.get('scores'))
        results[index] = result
        line = f'infer.py: skipped {result.error}' if result.error else \
            f'{result.path}: {summary_line(result.shares)}'
        tqdm.write(line, file=sys.stderr if result.error else sys.stdout)

    items = [(os.path.abspath(path), os.path.abspath(os.path.join(out, base))) for path, base in todo]
    os.makedirs(out, exist_ok=True)  # the workers check they see it
    weights = os.path.abspath(segmenter.weights)
    factory = functools.partial(SegmentWorker, scores, os.path.abspath(segmenter.model.folder), weights,
                                segmenter.engine_name, None, segmenter.max_side, segmenter.memory,
                                segmenter.allow_modules, **segmenter.engine_options)
    cluster.map_items(address, factory, items, on_result,
                      outputs_of=lambda item: output_paths(item[1], scores).values(),
                      visible=[os.path.abspath(out), weights] + [p for p, _ in items[:1]],
                      desc=segmenter.model.name, progress=progress)
    return [results[k] for k in sorted(results)]


def write_json(results, path, about):
    """The --json summary, written whole (outputs.write_atomically): what
    ran (`about`: Segmenter.describe(): model, classes, weights and their
    sha256, engine) and one entry per image, its sizes as width and height,
    its outputs and the share of its pixels per class (or its error)."""
    entries = []
    for r in results:
        entry = dict(image=r.path)
        if r.error:
            entry['error'] = r.error
        else:
            (width, height), (net_width, net_height) = r.size, r.net_size
            entry.update(width=width, height=height, net_width=net_width, net_height=net_height,
                         label=r.label, overlay=r.overlay, scores=r.scores,
                         class_shares=dict(r.shares))
        entries.append(entry)
    outputs.write_atomically(path, json.dumps(dict(about, images=entries), indent=1),
                             'the --json summary')


def run(inputs, model=DEFAULT_MODEL, weights=None, out='out/infer', gpu=None, progress=True,
        recursive=False, max_side=DEFAULT_MAX_SIDE, scores=False, memory=None, json_path=None,
        engine='caffe', allow_modules=(), ray=None, skip_done=False, **engine_options):
    """Segment every image with one net, here (segment_here) or on the
    Ray cluster `ray` (segment_on_cluster); with `skip_done` only the images
    whose outputs are not all whole (common/finished.py), the others left
    as they are. Returns a Result per image segmented (those that failed
    carry their error, which is also reported on stderr).
    Checked before any work: --out and json_path (the --json summary,
    write_json, written at the end) can be written, and no output would overwrite an input or another
    output. An interruption (KeyboardInterrupt, cli.Interrupted) propagates
    with `done` and `total` set on it: the images finished, and all."""
    try:
        outputs.writable_dir(out, '--out')
        if json_path:
            outputs.writable_file(json_path, '--json')
    except outputs.OutputError as e:
        raise InferError(str(e)) from e
    todo = image_paths(inputs, recursive)
    segmenter = Segmenter(model, weights, engine, gpu, max_side, memory, allow_modules, **engine_options)
    print(f'{segmenter.model.name}: engine {engines.summary(segmenter.engine.describe())}')
    check_outputs_apart(todo, out, scores, json_path, segmenter.inputs)
    if skip_done:
        left = finished.unfinished(todo, lambda item: output_paths(os.path.join(out, item[1]),
                                                                   scores).values())
        print(f'--skip-done: {len(todo) - len(left)} of {len(todo)} images done already')
        todo = left
    if scores:
        scores_space(todo, out, len(segmenter.head.classes))
    results = segment_on_cluster(ray, todo, out, scores, segmenter, progress) if ray and todo \
        else segment_here(segmenter, todo, out, scores, progress)
    if json_path:
        write_json(results, json_path, segmenter.describe())
    return results


def segment_here(segmenter, todo, out, scores=False, progress=True):
    """Segment `todo` ((photo, output base) pairs) in this process, counted
    by common.progress; the Results in order. An interruption propagates
    with `done` and `total` set on it."""
    results = []
    bar = Progress(len(todo), segmenter.model.name, 'image', enabled=progress and len(todo) > 1)
    try:
        for path, base in todo:
            try:
                segmenter(path, os.path.join(out, base), scores, written=results.append)
                bar.write(f'{path}: {summary_line(results[-1].shares)}')
            except ImageError as e:
                results.append(Result(path, error=str(e)))
                bar.write(f'infer.py: skipped {e}', file=sys.stderr)
            bar.update()
    except KeyboardInterrupt as e:
        e.done, e.total = sum(1 for r in results if not r.error), len(todo)
        raise
    finally:
        bar.close(finished=len(results) == len(todo))
    return results


def main(argv=None):
    parser = cli.ArgumentParser(prog='infer.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('images', nargs='+', help='image files or folders of images')
    cli.add_model_options(parser)
    cli.add_engine_options(parser, engines.ENGINES, precisions=engines.PRECISIONS)
    cli.add_cluster_options(parser, 'the photos', skip_done=True)
    parser.add_argument('--out', default=os.path.join('out', 'infer'), help='output folder')
    parser.add_argument('--recursive', action='store_true', help="also segment folders' subfolders")
    parser.add_argument('--max-side', type=cli.number(int, minimum=0), default=DEFAULT_MAX_SIDE,
                        help='run the net on photos resized to at most this many pixels on their '
                             f'longer side; outputs keep the photo size (default {DEFAULT_MAX_SIDE}, '
                             '0: full size)')
    parser.add_argument('--scores', action='store_true',
                        help='also save the class probabilities (<stem>_scores.npy)')
    parser.add_argument('--json', help='write a summary per image to this file')
    parser.add_argument('--verbose', action='store_true', help="show Caffe's own log")
    parser.add_argument('--memory', type=cli.number(float, above=0),
                        help='GB one photo may take (default: what the system has available)')
    args = parser.parse_args(argv)
    cli.check_engine_options(parser, args, engines.PRECISIONS)
    cli.check_cluster_options(parser, args)

    def work():
        results = run(args.images, args.model, args.weights, args.out, args.gpu,
                      recursive=args.recursive, max_side=args.max_side, scores=args.scores,
                      memory=None if args.memory is None else args.memory * GB,
                      json_path=args.json, engine=args.engine, allow_modules=args.allow_module,
                      precision=args.precision,
                      ray=args.ray, skip_done=args.skip_done)
        return results
    results = cli.run('infer.py', work, lambda e: interrupted_summary(e, args.out))
    failed = [r for r in results if r.error]
    done = len(results) - len(failed)
    print(f'segmented {done} of {len(results)} images into {args.out}')
    if failed:
        shown = '; '.join(r.error for r in failed[:5]) + (f'; and {len(failed) - 5} more' if len(failed) > 5 else '')
        sys.exit(f'infer.py: error: {len(failed)} of {len(results)} images failed: {shown}')


def interrupted_summary(interrupted, out):
    """What an interrupted run did: how many images it finished (their
    outputs whole in `out`), and that nothing else was left."""
    done = getattr(interrupted, 'done', None)
    if done is None:
        return 'stopped before segmenting any image; nothing was written'
    return (f'{done} of {interrupted.total} images segmented, their outputs in {out}; '
            'no partial file left')


if __name__ == '__main__':
    main()
