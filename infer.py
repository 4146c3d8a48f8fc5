"""Segment images with a trained FCN: a label PNG, an overlay and the share
of pixels per class for each image.

    python infer.py image.jpg [more images or folders] [--model voc-fcn8s]
        [--weights W] [--gpu N] [--out DIR]

The model's deploy net is reshaped to each image (any size). Images are
prepared by the data layers' own code (layers.load_image, layers.preprocess
with the model's mean). For each image <stem>:
    <out>/<stem>.png           class indices, PASCAL VOC palette (as score.py saves)
    <out>/<stem>_overlay.png   the image with the classes' colours blended in
Default weights: the model's published caffemodel where `python -m fetch
weights <model>` puts it (<model>/<file>), else its latest training
snapshot.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

import runtime

runtime.quiet_caffe_log()  # before layers imports caffe

import checks  # noqa: E402
import datasets  # noqa: E402
import layers  # noqa: E402
import locations  # noqa: E402
import nets  # noqa: E402
import score  # noqa: E402

DEFAULT_MODEL = 'voc-fcn8s'
OVERLAY_ALPHA = 0.5  # weight of the class colour over object pixels


class InferError(Exception):
    """A problem the user must act on; the message says what."""


# ------------------------------------------------------------------ the net
def segment(net, rgb, mean, score_blob='score'):
    """H x W uint8 class indices for an H x W x 3 RGB image (any size)."""
    data = layers.preprocess(rgb, mean)
    net.blobs['data'].reshape(1, *data.shape)
    net.blobs['data'].data[...] = data
    net.forward()
    return net.blobs[score_blob].data[0].argmax(axis=0).astype(np.uint8)


def check_rgb_model(model):
    source = model.source
    if tuple(source.inputs) != ('data',) or source.fusion or \
            getattr(source, 'modalities', ('color',)) != ('color',):
        raise InferError(f'{model.name}: infer.py segments colour images; this model reads '
                         f'{"/".join(getattr(source, "modalities", source.inputs))}')


def default_weights(model):
    """The published caffemodel if fetched, else the latest snapshot; an
    InferError saying how to get weights otherwise."""
    import training
    published = locations.published_weights(model.name, os.path.dirname(model.folder))
    if published and os.path.isfile(published):
        return published
    try:
        latest = training.Snapshots(os.path.join(model.folder, locations.SNAPSHOT_DIR)).latest()
    except training.TrainingError as e:
        raise InferError(str(e)) from e
    if latest:
        return latest['caffemodel']
    if published:
        raise InferError(
            f'weights not found: {published}. Get the published model with '
            f'`python -m fetch weights {model.name}`, or train it: '
            f'`cd {os.path.relpath(model.folder)} && python solve.py` (or pass --weights)')
    raise InferError(f'no weights for {model.folder}: no snapshot in '
                     f'{os.path.join(model.folder, locations.SNAPSHOT_DIR)}; train it '
                     '(python solve.py in the folder) or pass --weights')


def load_net(model, weights):
    """The model's deploy net with `weights`, checked before Caffe reads them."""
    import caffe
    if not os.path.isfile(weights):
        raise InferError(f'weights not found: {weights}')
    deploy = os.path.join(model.folder, 'deploy.prototxt')
    net = caffe.Net(deploy, caffe.TEST)
    try:
        checks.load_weights(net, weights, net_name=deploy)
    except checks.CheckError as e:
        raise InferError(str(e)) from e
    return net


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


def write_outputs(out_dir, stem, rgb, label):
    """Write <stem>.png (palette labels) and <stem>_overlay.png; returns both paths."""
    label_path = os.path.join(out_dir, stem + '.png')
    overlay_path = os.path.join(out_dir, stem + '_overlay.png')
    score.save_prediction(label, label_path)
    Image.fromarray(overlay(rgb, label)).save(overlay_path)
    return label_path, overlay_path


# ------------------------------------------------------------------ command
def image_paths(inputs):
    """Files as given, folders expanded to their images (sorted); a missing
    input is an InferError naming it."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item)
                           if f.lower().endswith(layers.IMAGE_EXTENSIONS))
            if not found:
                raise InferError(f'no images in folder {item}')
            paths += found
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise InferError(f'image not found: {item}')
    return paths


def output_stems(paths):
    """A distinct output name per image: its file stem, numbered on clashes."""
    stems, seen = [], {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f'{stem}-{seen[stem]}')
    return stems


def run(inputs, model=DEFAULT_MODEL, weights=None, out='out/infer', gpu=None, progress=True):
    """Segment every image; returns [(path, label path, overlay path, shares)]."""
    from tqdm import tqdm
    try:
        checks.writable_dir(out, '--out')
    except checks.CheckError as e:
        raise InferError(str(e)) from e
    paths = image_paths(inputs)
    try:
        model = nets.load(model)
    except (FileNotFoundError, TypeError) as e:
        raise InferError(str(e)) from e
    check_rgb_model(model)
    weights = weights or default_weights(model)
    runtime.use_device(gpu)
    net = load_net(model, weights)
    head = model.source.heads[0]
    mean = model.source.mean
    os.makedirs(out, exist_ok=True)
    results = []
    bar = tqdm(list(zip(paths, output_stems(paths))), desc=model.name, unit='image',
               disable=not progress or len(paths) < 2)
    for path, stem in bar:
        try:
            rgb = layers.load_image(path)
        except (OSError, ValueError) as e:
            raise InferError(str(e)) from e
        label = segment(net, rgb, mean, head.score)
        shares = class_shares(label, head.classes)
        try:
            written = write_outputs(out, stem, rgb, label)
        except OSError as e:
            raise InferError(f'--out {out}: cannot write {stem}.png ({e.strerror or e})') from e
        results.append((path, *written, shares))
        bar.write(f'{path}: ' + ', '.join(f'{name} {100 * share:.1f}%' for name, share in shares))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('images', nargs='+', help='image files or folders of images')
    parser.add_argument('--model', default=DEFAULT_MODEL,
                        help=f'a model (e.g. voc-fcn8s) or a path to a model folder '
                             f'(default {DEFAULT_MODEL})')
    parser.add_argument('--weights', help="caffemodel (default: the model's published weights, "
                                          'else its latest snapshot)')
    parser.add_argument('--gpu', type=int, help='GPU id (default: CPU)')
    parser.add_argument('--out', default=os.path.join('out', 'infer'), help='output folder')
    parser.add_argument('--verbose', action='store_true', help="show Caffe's own log")
    args = parser.parse_args(argv)
    try:
        results = run(args.images, args.model, args.weights, args.out, args.gpu)
    except InferError as e:
        sys.exit(f'infer.py: error: {e}')
    print(f'wrote {2 * len(results)} files to {args.out}')


if __name__ == '__main__':
    main()
