"""Speed and memory of the FCN nets: prints figures, asserts nothing.

    python tools/benchmark.py [--models voc-fcn32s voc-fcn16s voc-fcn8s]
        [--sizes 500] [--iters 3] [--gpu N] [--no-backward] [--json out.json]

For each model folder and square input size:
- inference: the deploy net's forward (what infer.py runs per image). The
  papers quote ~175 ms (CVPR) and about 0.1 s (PAMI) for FCN-8s on a K40c;
  Caffe on 2 CPU cores takes seconds.
- training: forward + backward of the same net with the model's own loss
  (nets.fcn.loss) on a label of the input's size, as one training iteration
  computes once its data layer has served an image (file reading and the
  solver's update are not counted).
Times are milliseconds, mean and best of --iters runs after one warm-up run.
Memory: the parameters, and the activations Caffe allocates for that size
(blob data; training doubles them with the diffs). No weights are needed:
speed does not depend on their values (Caffe fills the nets with zeros).
"""
import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault('GLOG_minloglevel', '2')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DEFAULT_MODELS = ('voc-fcn32s', 'voc-fcn16s', 'voc-fcn8s')
MIB = 2 ** 20


def training_spec(model):
    """The model's deploy net with label inputs and its loss per head."""
    from caffe import layers as L

    from nets.fcn import fcn, loss
    from nets.sources import DEPLOY_SIZE
    n = fcn(model, 'deploy')
    for head in model.source.heads:  # labels of the deploy input's size; both reshape
        n[head.label] = L.Input(shape=dict(dim=[1, 1, DEPLOY_SIZE, DEPLOY_SIZE]))
        n[head.loss] = loss(n, model, head, n[head.score], sample=False)
    proto = n.to_proto()
    proto.force_backward = True
    return proto


def load_net(proto, phase):
    import caffe
    with tempfile.NamedTemporaryFile('w', suffix='.prototxt') as f:
        f.write(str(proto))
        f.flush()
        return caffe.Net(f.name, phase)


def reshape(net, size, labels=()):
    for name in net.inputs:
        blob = net.blobs[name]
        blob.reshape(1, 1 if name in labels else blob.shape[1], size, size)
        blob.data[...] = 0
    net.reshape()


def timed(run, iters):
    run()  # warm-up: first-touch allocations
    seconds = []
    for _ in range(iters):
        t = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - t)
    return {'mean_ms': 1000 * sum(seconds) / iters, 'best_ms': 1000 * min(seconds)}


def activation_bytes(net):
    return sum(blob.data.nbytes for blob in net.blobs.values())


def benchmark(model_name, size, iters, backward=True):
    """{'model', 'size', 'params_mib', 'forward', 'activations_mib',
    ['train', 'train_memory_mib']} for one model folder and input size."""
    import caffe
    import nets
    model = nets.load(model_name)
    folder = model.folder
    deploy = caffe.Net(os.path.join(folder, 'deploy.prototxt'), caffe.TEST)
    reshape(deploy, size)
    params = sum(b.data.nbytes for blobs in deploy.params.values() for b in blobs)
    result = {'model': model.name, 'size': size, 'params_mib': params / MIB,
              'forward': timed(deploy.forward, iters),
              'activations_mib': activation_bytes(deploy) / MIB}
    del deploy
    if backward:
        train = load_net(training_spec(model), caffe.TRAIN)
        reshape(train, size, labels={h.label for h in model.source.heads})

        def step():
            train.forward()
            train.backward()
        result['train'] = timed(step, iters)
        # data and diff of every blob, and the parameters' diffs
        result['train_memory_mib'] = (2 * activation_bytes(train) + 2 * params) / MIB
    return result


HEADER = (f"{'model':<22}{'size':>6}{'forward ms':>12}{'(best)':>9}{'train ms':>11}"
          f"{'(best)':>9}{'params MiB':>12}{'activ. MiB':>12}")


def format_row(r):
    train = r.get('train')
    return (f"{r['model']:<22}{r['size']:>6}{r['forward']['mean_ms']:>12.0f}"
            f"{r['forward']['best_ms']:>9.0f}"
            + (f"{train['mean_ms']:>11.0f}{train['best_ms']:>9.0f}" if train else f"{'-':>11}{'-':>9}")
            + f"{r['params_mib']:>12.1f}{r['activations_mib']:>12.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS),
                        help='models (e.g. voc-fcn8s) or paths to model folders')
    parser.add_argument('--sizes', nargs='+', type=int, default=[500],
                        help='square input sizes (pixels)')
    parser.add_argument('--iters', type=int, default=3, help='timed runs after one warm-up')
    parser.add_argument('--gpu', type=int, help='GPU id (default: CPU)')
    parser.add_argument('--no-backward', action='store_true', help='time inference only')
    parser.add_argument('--json', help='also write the figures here')
    args = parser.parse_args(argv)
    if args.iters < 1 or any(s < 1 for s in args.sizes):
        parser.error('--iters and --sizes must be positive')

    import caffe
    if args.gpu is None:
        caffe.set_mode_cpu()
        device = f'CPU, {os.cpu_count()} cores, OPENBLAS_NUM_THREADS=' \
                 f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}"
    else:
        caffe.set_device(args.gpu)
        caffe.set_mode_gpu()
        device = f'GPU {args.gpu}'
    results = []
    print(HEADER, flush=True)
    for name in args.models:
        for size in args.sizes:
            results.append(benchmark(name, size, args.iters, backward=not args.no_backward))
            print(format_row(results[-1]), flush=True)
    print(f'\n{device}; mean (best) of {args.iters} runs after a warm-up')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(device=device, iters=args.iters, results=results), f, indent=1)
    return results


if __name__ == '__main__':
    main()
