"""Images per second segmented on a local Ray cluster with 1 and 2
workers (and, for reference, in one process without Ray): prints figures
and the load average, asserts nothing.

    python tools/ray_throughput.py [--images 24] [--size 320x240] [--workers 1 2]
        [--model FOLDER --weights W]

Default net: a narrow FCN-8s (synthetic.tiny_model, 1/32 of VGG16's
channels, the weights Caffe's fillers give it: speed does not depend on
their values) written to a temporary folder; --model/--weights measure a
real one. The one-process figure is after a first, untimed photo; it runs
Caffe with as many BLAS threads as the environment gives (OMP_NUM_THREADS),
where Ray gives each worker one thread per CPU it holds. The photos are random RGB PNGs of --size. Each measurement starts
after the workers have loaded the net (cluster.Pool built) and ends when
the last image's outputs (label PNG, overlay) are written, so it is the
steady rate; the cluster's start and the workers' net loading are printed
apart. Everything runs on this machine: other load on it (see the load
average printed before and after) slows every figure.
"""
import argparse
import functools
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common import caffe_setup  # noqa: E402

caffe_setup.quiet_caffe_log([])  # before infer imports caffe

import caffe  # noqa: E402

import cluster  # noqa: E402
import infer  # noqa: E402
import nets  # noqa: E402
import synthetic  # noqa: E402
from common import locations  # noqa: E402


def tiny_model(folder):
    """(model folder, caffemodel) of a narrow FCN-8s with filler weights."""
    model = os.path.join(folder, 'tiny-fcn8s')
    nets.write_net_py(model, synthetic.tiny_model(stride=8), 'ray_throughput.py: a narrow FCN-8s.')
    weights = os.path.join(model, 'weights.caffemodel')
    caffe.Net(locations.deploy_prototxt(model), caffe.TEST).save(weights)
    return model, weights


def photos(folder, count, width, height):
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k in range(count):
        paths.append(os.path.join(folder, f'photo{k:03d}.png'))
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def load():
    return '{:.2f} {:.2f} {:.2f}'.format(*os.getloadavg())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=int, default=24)
    parser.add_argument('--size', default='320x240', help='WIDTHxHEIGHT of the photos')
    parser.add_argument('--workers', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--model', help='a model folder (default: a narrow FCN-8s)')
    parser.add_argument('--weights', help="the model's caffemodel (with --model)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split('x'))
    print(f'load average before: {load()} ({os.cpu_count()} CPUs)')
    with tempfile.TemporaryDirectory() as tmp:
        model, weights = (args.model, args.weights) if args.model else tiny_model(tmp)
        todo = infer.image_paths(photos(os.path.join(tmp, 'in'), args.images, width, height))
        print(f'{len(todo)} photos of {width}x{height}, model {model}')

        segment = infer.SegmentWorker(False, model, weights)  # what infer.py --ray runs on a worker
        segment((todo[0][0], os.path.join(tmp, 'warm-up')))  # Caffe allocates its blobs
        start = time.perf_counter()
        for path, base in todo:
            segment((path, os.path.join(tmp, 'one', base)))
        alone = len(todo) / (time.perf_counter() - start)
        print(f'one process, no Ray: {alone:.2f} images/s')

        start = time.perf_counter()
        with cluster.connected('local', num_cpus=max(args.workers)) as where:
            print(f'local cluster ({where.cpus} CPUs) started in {time.perf_counter() - start:.1f} s')
            for workers in args.workers:
                start = time.perf_counter()
                factory = functools.partial(infer.SegmentWorker, False, model, weights)
                with cluster.Pool(factory, workers) as pool:
                    ready = time.perf_counter()
                    out = os.path.join(tmp, f'ray{workers}')
                    pool.map([(path, os.path.join(out, base)) for path, base in todo],
                             progress=False)
                    rate = len(todo) / (time.perf_counter() - ready)
                print(f'{workers} worker(s): {rate:.2f} images/s ({rate / alone:.2f} x one process; '
                      f'workers ready in {ready - start:.1f} s)')
    print(f'load average after: {load()}')


if __name__ == '__main__':
    main()
