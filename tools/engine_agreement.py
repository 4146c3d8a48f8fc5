"""How far each engine's labels are from Caffe's: a model folder's
evaluation split scored with Caffe, ONNX Runtime, and OpenVINO at its
default precision and at f32, every image's labels compared with Caffe's.
Prints figures, asserts nothing (tests/test_engine_agreement.py asserts).

    python tools/engine_agreement.py --model out/minirepro/seed0/fcn8s
        [--weights W] [--split val] [--limit N] [--json out.json]

--weights defaults to the model's latest snapshot (else its published
weights). Every engine is run as `score.py --engine E [--precision P]` runs
it (score.evaluate): the same inputs, those of the evaluation net's data
layer. Per engine: its metrics (score.py's, on the split's ground truth),
the share of all pixels whose label agrees with Caffe's, and the image that
agrees least. The exported engines read the model's cached export
(onnx_engine.cached_export), made on the first run.
"""
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common import caffe_setup, cli  # noqa: E402

caffe_setup.quiet_caffe_log([])  # before score imports caffe

import openvino_engine  # noqa: E402
import score  # noqa: E402
from common import outputs, weightfiles  # noqa: E402

# (row name, engine, precision); the first row is the reference the others
# are compared with.
RUNS = (
    ('caffe', 'caffe', None),
    ('onnxruntime', 'onnx', None),
    (f'openvino {openvino_engine.default_precision()}', 'openvino', None),
    ('openvino f32', 'openvino', 'f32'),
)


def measure(folder, weights, split='val', limit=None, runs=RUNS, progress=print):
    """[{'run', 'engine', 'described' (what ran: Engine.describe), 'seconds',
    'heads': {score blob: metrics}, 'agreement': share of pixels labelled
    as Caffe labels them, 'worst': (image id, its share)}] per run of
    `runs`, the first (Caffe) the reference."""
    weights = os.path.abspath(weights)
    results, reference = [], None
    for name, engine, precision in runs:
        labels = {}  # {(head's position, image id): labels}

        def keep(_, idx, per_image):
            for k, (_, pred, _) in enumerate(per_image):
                labels[k, idx] = pred.astype('uint8')

        start = time.perf_counter()
        scored = score.evaluate(folder, weights, split, limit=limit, progress=False, on_image=keep,
                                engine=engine, precision=precision)
        reference = reference or labels
        same = {key: float((pred == reference[key]).mean()) for key, pred in labels.items()}
        pixels = {key: pred.size for key, pred in labels.items()}
        worst = min(same, key=same.get)
        results.append(dict(run=name, engine=engine, described=scored['engine'], images=scored['images'],
                            seconds=time.perf_counter() - start,
                            heads={h: {k: v for k, v in m.items() if k not in ('hist', 'excluded')}
                                   for h, m in scored['heads'].items()},
                            agreement=sum(same[k] * pixels[k] for k in same) / sum(pixels.values()),
                            worst=(worst[1], same[worst])))
        progress(format_row(results[-1]))
    return results


HEADER = f"{'engine':<16}{'images':>7}{'mean IU':>9}{'pixel acc':>11}{'agrees with caffe':>19}  worst image"


def format_row(r):
    head = next(iter(r['heads'].values()))
    return (f"{r['run']:<16}{r['images']:>7}{100 * head['mean_iu']:>9.2f}{100 * head['pixel_acc']:>11.2f}"
            f"{100 * r['agreement']:>18.3f}%  {r['worst'][0]} {100 * r['worst'][1]:.3f}%")


def main(argv=None):
    parser = cli.ArgumentParser(prog='engine_agreement.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', required=True, help='a model folder (e.g. out/minirepro/seed0/fcn8s)')
    parser.add_argument('--weights', help="caffemodel (default: the model's latest snapshot, "
                                          'else its published weights)')
    parser.add_argument('--split', default='val')
    parser.add_argument('--limit', type=cli.number(int, minimum=1), help='score the first N images only')
    parser.add_argument('--json', help='also write the figures here')
    args = parser.parse_args(argv)
    return cli.run('engine_agreement.py', lambda: work(args),
                   lambda e: 'no figures written' if args.json else 'stopped')


def work(args):
    """The command's work: check --json and the weights, measure, print, write."""
    caffe_setup.use_device(None)
    weights = args.weights or weightfiles.resolve(args.model, prefer='snapshot')
    if args.json:
        outputs.writable_file(args.json, '--json')
        outputs.guard([(args.json, '--json')], [(weights, f'the weights {weights}')])
    print(f'{args.model}, weights {weights}, split {args.split}; load average '
          f'{" ".join(f"{v:.2f}" for v in os.getloadavg())}', flush=True)
    print(HEADER, flush=True)
    results = measure(args.model, weights, args.split, args.limit,
                      progress=lambda line: print(line, flush=True))
    print(f'load average {" ".join(f"{v:.2f}" for v in os.getloadavg())}')
    if args.json:
        outputs.write_atomically(args.json, json.dumps(outputs.jsonable(
            dict(model=args.model, weights=weights, split=args.split, results=results)), indent=1,
            allow_nan=False), 'the --json figures')
    return results


if __name__ == '__main__':
    main()
