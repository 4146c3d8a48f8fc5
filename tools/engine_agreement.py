"""How far each engine's labels are from Caffe's: a model folder's
evaluation split scored with Caffe, ONNX Runtime, and OpenVINO at its
default precision and at f32, every image's labels compared with Caffe's.
Prints figures, asserts nothing (tests/test_engine_agreement.py asserts).

    python tools/engine_agreement.py --model out/minirepro/seed0/fcn8s
        [--weights W] [--split val] [--limit N] [--json out.json]

--weights defaults to the model's latest snapshot (else its published
weights). Every engine sees the same inputs: those of the evaluation net's
data layer (score.py's), the ONNX engines fed by it as `score.py --engine
onnx` feeds them (onnx_engine.FedNet). Per engine: its metrics (score.py's,
on the split's ground truth), the share of all pixels whose label agrees
with Caffe's, and the image that agrees least. The ONNX engines read the
model's cached export (onnx_engine.cached_export), made on the first run.
"""
import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common import caffe_setup  # noqa: E402

caffe_setup.quiet_caffe_log([])  # before score imports caffe

import caffe  # noqa: E402

import layers  # noqa: E402
import onnx_engine  # noqa: E402
import openvino_engine  # noqa: E402
import score  # noqa: E402
from common import metrics, outputs, weightfiles  # noqa: E402

# (row name, engine, loader of the engine's net: (model folder, weights) ->
# net); the first row is the reference the others are compared with.
RUNS = (
    ('caffe', 'caffe', None),
    ('onnxruntime', 'onnx', onnx_engine.load),
    (f'openvino {openvino_engine.default_precision()}', 'openvino', openvino_engine.load),
    ('openvino f32', 'openvino', lambda folder, weights: openvino_engine.load(folder, weights, precision='f32')),
)


def predictions(net, ids, heads):
    """{(head score blob, image id): labels} and [hist per head] of `net`
    (a Caffe net or a FedNet) over `ids` (score.compute_hists)."""
    labels = {}

    def keep(_, idx, per_image):
        for head, (_, pred, _) in zip(heads, per_image):
            labels[head.score, idx] = pred.astype('uint8')

    hists = score.compute_hists(net, ids, [(h.score, h.label, h.loss, None) for h in heads], keep, finite=True)
    return labels, [hist for hist, _ in hists]


def measure(folder, weights, split='val', limit=None, runs=RUNS, progress=print):
    """[{'run', 'engine', 'seconds', 'heads': {score blob: metrics}, 'agreement':
    share of pixels labelled as Caffe labels them, 'worst': (image id, its
    share)}] per run of `runs`, the first (Caffe) the reference."""
    model_dir, proto, net_param, layer, _ = score.eval_net_param(folder, split)
    weights = os.path.abspath(weights)
    all_heads = score.model_heads(model_dir, layer)
    results, reference = [], None
    for name, engine, loader in runs:
        start = time.perf_counter()
        if engine == 'caffe':
            context = score.eval_net(net_param, model_dir, weights, proto)
        else:
            runner = loader(model_dir, weights)
            feeder = onnx_engine.feeder_param(net_param, set(layer.top) | set(runner.inputs))
            context = score.eval_net(feeder, model_dir)
        with context as net:
            if engine != 'caffe':
                net = onnx_engine.FedNet(net, runner)
            ids = [layers.example_id(e) for e in net.layer_dict[layer.name].examples[:limit]]
            heads = [h for h in all_heads if h.score in net.blobs and h.label in net.blobs]
            labels, hists = predictions(net, ids, heads)
        reference = reference or labels
        same = {key: float((pred == reference[key]).mean()) for key, pred in labels.items()}
        pixels = {key: pred.size for key, pred in labels.items()}
        worst = min(same, key=same.get)
        results.append(dict(run=name, engine=engine, images=len(ids), seconds=time.perf_counter() - start,
                            heads={h.score: metrics.metrics(hist, h.classes or None) for h, hist in zip(heads, hists)},
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
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', required=True, help='a model folder (e.g. out/minirepro/seed0/fcn8s)')
    parser.add_argument('--weights', help="caffemodel (default: the model's latest snapshot, "
                                          'else its published weights)')
    parser.add_argument('--split', default='val')
    parser.add_argument('--limit', type=int, help='score the first N images only')
    parser.add_argument('--json', help='also write the figures here')
    args = parser.parse_args(argv)
    caffe.set_mode_cpu()
    try:
        if args.json:
            outputs.writable_file(args.json, '--json')
        weights = args.weights or weightfiles.resolve(args.model, prefer='snapshot')
        print(f'{args.model}, weights {weights}, split {args.split}; load average '
              f'{" ".join(f"{v:.2f}" for v in os.getloadavg())}', flush=True)
        print(HEADER, flush=True)
        results = measure(args.model, weights, args.split, args.limit,
                          progress=lambda line: print(line, flush=True))
    except (FileNotFoundError, ValueError, outputs.OutputError, weightfiles.WeightsError) as e:
        sys.exit(f'engine_agreement.py: error: {e}')
    print(f'load average {" ".join(f"{v:.2f}" for v in os.getloadavg())}')
    if args.json:
        outputs.write_atomically(args.json, json.dumps(outputs.jsonable(
            dict(model=args.model, weights=weights, split=args.split, results=results)), indent=1, allow_nan=False))
    return results


if __name__ == '__main__':
    main()
