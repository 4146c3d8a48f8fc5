"""A small FCN that the caffe tool alone trains and scores: its data in LMDB,
read by Caffe's Data layers, no Python layers. tools/caffe/train-check.sh runs
it (`caffe train`, then `caffe test` on val) with the CPU build here
(tests/test_caffe_train.py) and with the GPU build on a GPU machine
(tools/caffe/bundle.sh carries it, run-gpu-checks.sh runs it).

    python tools/caffe/lmdb_recipe.py OUTDIR

Writes OUTDIR/:
    lmdb/{train,val}-{image,label}/   synthetic.py scenes as Caffe Datum LMDBs
                                      (nets.LMDB: BGR images, 1-channel labels, 255 void)
    train.prototxt, val.prototxt      a narrow VGG16 FCN-8s from nets/ (two Data layers;
    deploy.prototxt                   val.prototxt also scores pixel accuracy)
    solver.prototxt                   minirepro's solver (Adam, normalized loss)
    start.caffemodel                  the trunk's random fillers, zero score layers,
                                      bilinear upsampling
    recipe.txt                        what train-check.sh reads: `key value` lines
"""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, REPO)

try:
    import lmdb
    import numpy as np
    from PIL import Image

    from common import datasets, locations
    import minirepro
    import nets
    import surgery
    import synthetic
    from nets import blocks
    from nets.fcn import fcn
except ImportError as e:  # a package of the project's venv is missing
    sys.exit(f"lmdb_recipe.py: {e}; run it with the project's venv (make caffe), e.g. .venv/bin/python")

SEED = 0
# synthetic.py's scenes at a fixed size, box-filtered down by REDUCE: small
# enough that the CPU trains the net in seconds and the bundle stays small.
SCENE = 160
REDUCE = 2
TRAIN_SCENES = 200
VAL_SCENES = 40
ITERATIONS = 300
STRIDE = 8
# minirepro's trunk is 1/32 of VGG16 and starts from its classifier; from the
# fillers alone, in 300 iterations, twice as wide learns more (val pixel
# accuracy 0.83 against 0.72; all-background 0.71) in about 20 s on one core.
TRUNK_WIDTH = 1 / 16


def small_scene(seed, split, index):
    """(H x W x 3 uint8 BGR image, H x W uint8 label) of one scene."""
    image, label = synthetic.scene(synthetic.example_rng(seed, split, index), size=(SCENE, SCENE))
    size = (SCENE // REDUCE, SCENE // REDUCE)
    image = np.asarray(Image.fromarray(image).reduce(REDUCE))
    label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))  # no blended class ids
    return np.ascontiguousarray(image[..., ::-1]), label


def datum(array):
    """A Caffe Datum of an H x W (x C) uint8 array (stored channel-major)."""
    from caffe.proto import caffe_pb2
    chw = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    d = caffe_pb2.Datum()
    d.channels, d.height, d.width = chw.shape
    d.data = np.ascontiguousarray(chw, dtype=np.uint8).tobytes()
    return d


def write_lmdb(path, arrays):
    size = sum(a.nbytes for a in arrays)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with lmdb.open(path, map_size=2 * size + (64 << 20), subdir=True) as env:
        with env.begin(write=True) as txn:
            for i, a in enumerate(arrays):  # keys sort in insertion order: the order Caffe reads
                txn.put(f'{i:08d}'.encode(), datum(a).SerializeToString())


def background_share(label):
    """The share of non-void pixels that are background: an all-background
    prediction's pixel accuracy."""
    valid = label != datasets.VOID
    return float((label[valid] == 0).sum() / valid.sum())


def model(mean, val_size=VAL_SCENES, max_iter=ITERATIONS):
    """The recipe's Model: a narrow VGG16 trunk and minirepro's solver, from
    the trunk's fillers (no classifier stage), data in nets.LMDB."""
    source = nets.LMDB(heads=(nets.Head('', synthetic.CLASSES),), val_size=val_size,
                       test_interval=max_iter, mean=mean)
    return nets.Model(source, trunk=minirepro.TRUNK, stride=STRIDE, base_lr=minirepro.FCN_LR,
                      init=(), trunk_width=TRUNK_WIDTH, trunk_filler=minirepro.TRUNK_FILLER,
                      normalize_loss=True, solver_type=minirepro.FCN_SOLVER,
                      momentum=minirepro.FCN_MOMENTUM, max_iter=max_iter)


def write(out, seed=SEED, train=TRAIN_SCENES, val=VAL_SCENES, iterations=ITERATIONS):
    """Write the recipe into `out`; returns the figures of recipe.txt."""
    import caffe
    if os.path.isdir(out) and os.listdir(out):
        raise FileExistsError(f'{out} is not empty: the recipe goes into a new folder')
    os.makedirs(out, exist_ok=True)
    scenes = {split: [small_scene(seed, split, i) for i in range(count)]
              for split, count in (('train', train), ('val', val))}
    mean = tuple(round(float(v), 3) for v in
                 np.mean([image.reshape(-1, 3).mean(axis=0) for image, _ in scenes['train']], axis=0))
    m = model(mean, val, iterations)
    for split, examples in scenes.items():
        for kind, arrays in (('image', [e[0] for e in examples]), ('label', [e[1] for e in examples])):
            write_lmdb(os.path.join(out, m.source.lmdb_path(split, kind)), arrays)

    header = '# Generated by tools/caffe/lmdb_recipe.py (nets from nets/).\n'
    specs = {phase: fcn(m, phase) for phase in ('train', 'val', 'deploy')}
    specs['val'].accuracy = blocks.pixel_accuracy(specs['val'].score, specs['val'].label)
    files = {'train.prototxt': specs['train'], 'val.prototxt': specs['val'], locations.DEPLOY_PROTOTXT: specs['deploy']}
    for name, spec in files.items():
        with open(os.path.join(out, name), 'w') as f:
            f.write(header + str(spec.to_proto()))
    with open(os.path.join(out, 'solver.prototxt'), 'w') as f:
        # caffe train snapshots the final weights (snapshot_after_train) under snapshot/.
        f.write(header + ''.join(line + '\n' for line in m.solver_text().splitlines()
                                 if not line.startswith('#')) + f'random_seed: {seed}\n')

    caffe.set_random_seed(seed)
    net = caffe.Net(locations.deploy_prototxt(out), caffe.TEST)
    surgery.interp(net, [k for k in net.params if k.startswith('upscore')])
    net.save(os.path.join(out, 'start.caffemodel'))

    figures = dict(
        iterations=iterations, train_images=train, val_images=val,
        image_size=SCENE // REDUCE, classes=len(synthetic.CLASSES),
        # caffe test averages the Accuracy layer over the val images (one a batch): so is this.
        background_share=round(float(np.mean([background_share(lb) for _, lb in scenes['val']])), 6))
    with open(os.path.join(out, 'recipe.txt'), 'w') as f:
        f.write('# Read by train-check.sh (written by tools/caffe/lmdb_recipe.py)\n')
        f.write(''.join(f'{k} {v}\n' for k, v in figures.items()))
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out', help='folder to write the recipe into')
    parser.add_argument('--iterations', type=int, default=ITERATIONS)
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error('--iterations must be at least 1')
    try:
        figures = write(args.out, iterations=args.iterations)
    except (FileExistsError, NotADirectoryError, FileNotFoundError) as e:
        sys.exit(f'lmdb_recipe.py: {e}')
    print(f'{args.out}: ' + ', '.join(f'{k} {v}' for k, v in figures.items()))


if __name__ == '__main__':
    main()
