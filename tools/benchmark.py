"""Speed and memory of the FCN nets, with this project's Caffe, with stock
Caffe, with ONNX Runtime and with OpenVINO: prints figures, asserts nothing.

    python tools/benchmark.py [--models voc-fcn8s ...] [--sizes 500x500 1000x750 ...]
        [--train-sizes 500x500] [--iters 2] [--gpu N] [--stock DIR | --no-stock]
        [--no-onnx] [--no-openvino] [--json out.json]

For each model and input size (WIDTHxHEIGHT, or N for N x N):
- forward: the deploy net's forward pass (what infer.py runs per image): the
  first one (Caffe allocates the blobs then) and the mean and best of --iters
  later ones. The papers quote ~175 ms (CVPR) and about 0.1 s (PAMI) for
  FCN-8s on a K40c; Caffe on 2 CPU cores takes seconds.
- train (--train-sizes only, default 500x500): forward + backward of the same
  net with the model's own loss (nets.fcn.loss) on a label of the input's
  size, as one training iteration computes once its data layer has served an
  image (file reading and the solver's update are not counted).
Each measurement runs in a process of its own, so that its peak resident
memory (peak RSS: parameters, blobs, Caffe's buffers, Python) is its own.
Also reported: the im2col workspace the Caffe build holds after the run
(this project's build: one bounded workspace, CAFFE_CONV_WORKSPACE_MB), the
blobs' memory, and the parameters'. No weights are needed: speed does not
depend on their values (Caffe fills the nets with zeros).

Stock Caffe: the same measurements with the Caffe build that lacks the
project's bounded-workspace patch (STOCK_PATCH), found in the build cache
(tools/caffe/build.sh --without STOCK_PATCH --no-install builds it) or given
with --stock (a build's cache folder or its dist/). Stock Caffe holds a full
im2col buffer per convolution layer: it aborts beyond 2^31 elements ("blob
size exceeds INT_MAX"), which the table shows as the failure it is. A
measurement whose estimated memory exceeds what the system has available is
skipped, not run into the out-of-memory killer.

ONNX Runtime (build 'onnxrt', forward only, CPU): the deploy net exported by
onnx_engine (caffe_onnx.py, checked against Caffe) once per model and
optimized by ONNX Runtime for this CPU (onnx_engine.optimize), then run as
the onnx engine runs it (onnx_engine.OnnxNet), each size in a process of its
own: first and steady forward, and peak RSS (which includes creating the
session from the file). OpenVINO (builds 'ov-bf16' and 'ov-f32': its
default precision on this CPU, and f32 where that differs): the same file
compiled as the openvino engine compiles it (openvino_engine.OpenvinoNet).
The first-run costs are stated apart: the export and ONNX Runtime's
optimized model (once per weights, and CPU: cached beside them) and each
engine's 'load s', creating the session or compiling the model (in every
process that runs the net). A
size whose Caffe measurement was skipped for memory is skipped too. The
load average is printed before and after: compare figures within one run
on a quiet machine.
"""
import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common import caffe_setup, cli, locations, outputs  # noqa: E402

if __name__ == '__main__':
    cli.quit_while_starting('benchmark.py')  # until main() handles signals

caffe_setup.quiet_caffe_log([])  # before a measurement imports caffe
# Caffe, and the modules that load it (nets, infer, onnx_engine), are
# imported inside the measuring functions: each measurement runs in a worker
# process whose PYTHONPATH picks the Caffe build under test (installed or
# stock), so this process must not load one first.

DEFAULT_MODELS = ('voc-fcn8s',)
DEFAULT_SIZES = ('500x500', '1000x750', '2000x1500', '4032x3024')
DEFAULT_TRAIN_SIZES = ('500x500',)
STOCK_PATCH = 'conv-bounded-workspace.patch'
MIB = 2 ** 20
GIB = 2 ** 30
FLOAT_BYTES = 4


def parse_size(text):
    """'WxH' or 'N' -> (width, height)."""
    try:
        parts = [int(p) for p in text.lower().split('x')]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f'expected WIDTHxHEIGHT or N (pixels), got {text!r}')
    return tuple(parts)


def size_name(size):
    return f'{size[0]}x{size[1]}'


# ------------------------------------------------------------ the nets
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
    """Reshape the inputs to size (width, height); allocates nothing."""
    for name in net.inputs:
        blob = net.blobs[name]
        blob.reshape(1, 1 if name in labels else blob.shape[1], size[1], size[0])
    net.reshape()


def fill_inputs(net):
    for name in net.inputs:
        net.blobs[name].data[...] = 0


def blob_bytes(net):
    return FLOAT_BYTES * sum(blob.count for blob in net.blobs.values())


def column_bytes(net):
    """Bytes of the full im2col matrices of the net's Convolution and
    Deconvolution layers at its current shape (stock Caffe holds all of them;
    1x1 convolutions need none)."""
    total = 0
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type not in ('Convolution', 'Deconvolution'):
            continue
        kernel = layer.blobs[0].shape[2:]
        bottom = net.blobs[net.bottom_names[name][0]].shape
        top = net.blobs[net.top_names[name][0]].shape
        if layer.type == 'Deconvolution':
            bottom, top = top, bottom  # its im2col runs from top to bottom
        spatial = 1
        for n in top[2:]:
            spatial *= n
        if all(k == 1 for k in kernel) and tuple(bottom[2:]) == tuple(top[2:]):
            continue
        kernel_size = 1
        for k in kernel:
            kernel_size *= k
        total += FLOAT_BYTES * bottom[1] * kernel_size * spatial
    return total


def available_memory():
    import infer
    return infer.available_memory()


# ------------------------------------------------------------ one measurement
def measure(model_name, size, mode, iters):
    """Runs in its own process (--worker): the figures of one model, size and
    mode ('forward' or 'train') with the Caffe found on sys.path."""
    import caffe
    import nets
    model = nets.load(model_name)
    if mode == 'forward':
        net = caffe.Net(locations.deploy_prototxt(model.folder), caffe.TEST)
        labels = ()
        run = net.forward
    else:
        net = load_net(training_spec(model), caffe.TRAIN)
        labels = {h.label for h in model.source.heads}

        def run():
            net.forward()
            net.backward()
    reshape(net, size, labels)
    patched = hasattr(caffe, 'conv_workspace_bytes')
    blobs = blob_bytes(net) * (2 if mode == 'train' else 1)  # training: data and diffs
    params = FLOAT_BYTES * sum(b.count for blobs_ in net.params.values() for b in blobs_)
    # what this run will hold, beyond what the process holds now
    need = blobs + params * (2 if mode == 'train' else 1) + \
        (caffe.conv_workspace_limit() if patched else column_bytes(net))
    available = available_memory()
    result = dict(caffe=os.path.dirname(caffe.__file__), patched=patched,
                  blobs_mib=blobs / MIB, params_mib=params / MIB, estimate_gib=need / GIB)
    if available is not None and need > 0.9 * available:
        result['skipped'] = (f'needs about {need / GIB:.1f} GiB, '
                             f'{available / GIB:.1f} GiB available')
        return result
    fill_inputs(net)
    t = time.perf_counter()
    run()
    result['first_ms'] = 1000 * (time.perf_counter() - t)
    seconds = []
    for _ in range(iters):
        t = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - t)
    result['mean_ms'] = 1000 * sum(seconds) / iters
    result['best_ms'] = 1000 * min(seconds)
    result['peak_rss_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    result['workspace_mib'] = caffe.conv_workspace_bytes() / MIB if patched else column_bytes(net) / MIB
    return result


def export_onnx(model_name, out):
    """Runs in its own process (--worker --mode export): the model's deploy
    net, with the weights Caffe's fillers give it (speed does not depend on
    their values), exported to `out` and checked, then ONNX Runtime's
    optimized model of it made (onnx_engine.optimize, at optimized_path),
    as the engines' caches are made: their times are first-run costs."""
    import caffe
    import nets
    import onnx_engine
    t = time.perf_counter()
    deploy = locations.deploy_prototxt(nets.load(model_name).folder)
    onnx_engine.export_net(onnx_engine.read_deploy(deploy), caffe.Net(deploy, caffe.TEST), out, where=deploy)
    export_ms = 1000 * (time.perf_counter() - t)
    t = time.perf_counter()
    onnx_engine.optimize(out, onnx_engine.optimized_path(out))
    return dict(onnx_mib=(os.path.getsize(out) + os.path.getsize(onnx_engine.data_path(out))) / MIB,
                export_ms=export_ms, optimize_ms=1000 * (time.perf_counter() - t),
                optimized=onnx_engine.optimized_path(out))


def measure_exported(path, size, iters, engine, precision=None):
    """Runs in its own process (--worker --mode onnx or openvino): the
    figures of the exported model `path` in ONNX Runtime (`path` its
    optimized model, as the onnx engine runs it) or OpenVINO (at
    `precision`) at size (width, height). Each imports its engine's module
    only, as a command that runs it does."""
    import numpy as np

    t = time.perf_counter()
    if engine == 'onnx':
        import onnx_engine  # deferred: a measuring process loads its engine's module only
        net = onnx_engine.OnnxNet(path, optimized=True)
        result = dict(onnxruntime=onnx_engine.onnxruntime().__version__)
        channels = {i.name: i.shape[1] for i in net.session.get_inputs()}
    else:
        import openvino_engine  # deferred: a measuring process loads its engine's module only
        net = openvino_engine.OpenvinoNet(path, precision)
        result = dict(openvino=openvino_engine.ov.__version__, precision=net.precision)
        channels = {i.get_any_name(): i.get_partial_shape()[1].get_length() for i in net.compiled.inputs}
    result['load_ms'] = 1000 * (time.perf_counter() - t)
    inputs = {name: np.zeros((1, c, size[1], size[0]), np.float32) for name, c in channels.items()}
    t = time.perf_counter()
    net.run(inputs)
    result['first_ms'] = 1000 * (time.perf_counter() - t)
    seconds = []
    for _ in range(iters):
        t = time.perf_counter()
        net.run(inputs)
        seconds.append(time.perf_counter() - t)
    result['mean_ms'] = 1000 * sum(seconds) / iters
    result['best_ms'] = 1000 * min(seconds)
    result['peak_rss_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return result


def check_model(model_name, allow=()):
    """Runs in its own process (--worker --mode check): the model folder
    loaded the one way (loading.deploy: net.py, deploy prototxt, Python
    modules but those `allow` names), before any measurement."""
    import loading  # deferred, as every import of Caffe here
    loading.deploy(model_name, allow)
    return {}


def worker(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument('--model')
    parser.add_argument('--size', type=parse_size)
    parser.add_argument('--mode')
    parser.add_argument('--iters', type=int)
    parser.add_argument('--gpu', type=int)
    parser.add_argument('--onnx', help='the exported model (modes export, onnx and openvino)')
    parser.add_argument('--precision', help='OpenVINO\'s precision (mode openvino)')
    parser.add_argument('--allow-module', action='append', default=[])
    args = parser.parse_args(argv)
    if args.mode == 'check':
        try:
            result = check_model(args.model, args.allow_module)
        except ValueError as e:
            print('ERROR ' + cli.one_line(e), flush=True)
            return 1
    elif args.mode == 'export':
        result = export_onnx(args.model, args.onnx)
    elif args.mode in ('onnx', 'openvino'):
        result = measure_exported(args.onnx, args.size, args.iters, args.mode, args.precision)
    else:
        caffe_setup.use_device(args.gpu)
        result = measure(args.model, args.size, args.mode, args.iters)
    print('RESULT ' + json.dumps(result), flush=True)


# ------------------------------------------------------------ builds
def installed_build():
    """(cache folder, build-info) of the pycaffe in this environment."""
    import importlib.util
    spec = importlib.util.find_spec('caffe')
    pkg = os.path.dirname(spec.origin)
    with open(os.path.join(pkg, 'build-info.json')) as f:
        info = json.load(f)
    cache = None
    if os.path.exists(os.path.join(pkg, '.build-cache')):
        with open(os.path.join(pkg, '.build-cache')) as f:
            cache = f.read().strip()
    return cache, info


def dist_of(folder):
    """A build's dist/ folder from the folder itself or its cache folder."""
    for candidate in (folder, os.path.join(folder, 'dist')):
        if os.path.isfile(os.path.join(candidate, 'build-info.json')):
            return candidate
    raise SystemExit(f'benchmark.py: error: {folder} is not a Caffe build (no build-info.json '
                     'in it or in its dist/)')


def options(info):
    """A build's CMake options but the Python executable's path (builds of
    any checkout's environment with the same Python and numpy are alike)."""
    return [o for o in info['cmake_options'] if not o.startswith('-DPYTHON_EXECUTABLE=')]


def find_stock_build():
    """The cached dist/ of the build equal to the installed one but without
    STOCK_PATCH (same source, options, Python and numpy), or None."""
    cache, info = installed_build()
    wanted = [p for p in info['patches'] if not p.endswith('/' + STOCK_PATCH)]
    if cache is None or len(wanted) == len(info['patches']):
        return None
    for path in sorted(glob.glob(os.path.join(os.path.dirname(cache), '*', 'dist', 'build-info.json'))):
        with open(path) as f:
            other = json.load(f)
        same = all(other.get(k) == info.get(k) for k in ('source', 'variant', 'python', 'numpy')) and \
            options(other) == options(info)
        if same and other['patches'] == wanted and os.path.exists(os.path.join(os.path.dirname(path), '.complete')):
            return os.path.dirname(path)
    return None


def build_env(dist):
    """The environment of a worker process that imports the Caffe of `dist`
    (None: the installed one)."""
    env = dict(os.environ)
    if dist is not None:
        env['PYTHONPATH'] = os.pathsep.join(filter(None, [os.path.join(dist, 'python'), REPO,
                                                          env.get('PYTHONPATH')]))
        # a dist's _caffe.so finds libcaffe in dist/lib only through the library path
        env['LD_LIBRARY_PATH'] = os.pathsep.join(filter(None, [os.path.join(dist, 'lib'),
                                                               env.get('LD_LIBRARY_PATH')]))
    return env


def run_worker(build, dist, model, size, mode, iters, gpu, onnx=None, precision=None, allow=()):
    """One measurement in a new process; the result dict, or its failure.
    With `onnx` (a path), mode 'export' writes the model's export there and
    modes 'onnx' and 'openvino' (at `precision`) measure it."""
    command = [sys.executable, os.path.abspath(__file__), '--worker', '--model', model,
               '--size', size_name(size), '--mode', mode, '--iters', str(iters)]
    if gpu is not None:
        command += ['--gpu', str(gpu)]
    if onnx:
        command += ['--onnx', onnx]
    if precision:
        command += ['--precision', precision]
    for module in allow:
        command += ['--allow-module', module]
    proc = subprocess.run(command, capture_output=True, text=True, env=build_env(dist))
    for line in proc.stdout.splitlines():
        if line.startswith('ERROR '):
            raise cli.InputError(line[len('ERROR '):])
    base = dict(model=os.path.basename(os.path.normpath(model)), size=size_name(size), mode=mode, build=build)
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            return dict(base, **json.loads(line[len('RESULT '):]))
    lines = [l for l in (proc.stderr + proc.stdout).splitlines() if l.strip()]
    reason = next((l for l in lines if 'Check failed' in l or 'Error' in l), lines[-1] if lines else '')
    return dict(base, failed=f'exit status {proc.returncode}: {reason.strip()[:200]}')


HEADER = (f"{'model':<14}{'size':>11}{'mode':>9}{'build':>9}{'load s':>8}{'first s':>9}{'steady s':>10}"
          f"{'best s':>8}{'peak RSS GiB':>14}{'workspace MiB':>15}{'blobs MiB':>11}")


def format_row(r):
    head = f"{r['model']:<14}{r['size']:>11}{r['mode']:>9}{r['build']:>9}"
    if 'failed' in r or 'skipped' in r:
        return head + '   ' + ('failed: ' + r['failed'] if 'failed' in r else 'skipped: ' + r['skipped'])
    caffe_only = ''.join(f'{r[key]:>{width}.0f}' if key in r else f'{"-":>{width}}'
                         for key, width in (('workspace_mib', 15), ('blobs_mib', 11)))
    load = f"{r['load_ms'] / 1000:>8.2f}" if 'load_ms' in r else f'{"-":>8}'
    return head + load + (f"{r['first_ms'] / 1000:>9.2f}{r['mean_ms'] / 1000:>10.2f}{r['best_ms'] / 1000:>8.2f}"
                   f"{r['peak_rss_mib'] / 1024:>14.2f}") + caffe_only


def exported_rows(model, size, iters, caffe_result, exported, tmp, engines):
    """The measurements of a model at a size with the exported model in
    `engines` ((build, mode, precision) rows), one by one: exported once per
    model (into `exported`, {model: the export worker's result, with
    'path'}), skipped where Caffe's measurement was (memory)."""
    done = []
    for build, mode, precision in engines:
        base = dict(model=os.path.basename(os.path.normpath(model)), size=size_name(size), mode='forward',
                    build=build)
        if 'skipped' in caffe_result:
            yield dict(base, skipped=caffe_result['skipped'])
            continue
        if model not in exported:
            path = os.path.join(tmp, f'{len(exported)}.onnx')
            exported[model] = dict(run_worker('export', None, model, size, 'export', iters, None, onnx=path),
                                   path=path)
            if 'export_ms' in exported[model]:
                print(f"{base['model']}: exported and checked in {exported[model]['export_ms'] / 1000:.2f} s "
                      f"({exported[model]['onnx_mib']:.0f} MiB; once per weights, cached beside them); "
                      f"optimized by ONNX Runtime and checked in {exported[model]['optimize_ms'] / 1000:.2f} s "
                      '(once per weights and CPU)', flush=True)
        if 'failed' in exported[model]:
            yield dict(base, failed=f"export: {exported[model]['failed']}")
            continue
        if precision and any(r.get('precision') == precision for r in done):
            continue  # the default precision was this one
        path = exported[model]['optimized' if mode == 'onnx' else 'path']
        row = dict(run_worker(build, None, model, size, mode, iters, None, onnx=path, precision=precision),
                   mode='forward')
        if mode == 'openvino' and 'precision' in row:
            row['build'] = f"ov-{row['precision']}"
        done.append(row)
        yield row


def exported_engines(onnx, openvino):
    """(build, worker mode, precision) of the exported model's rows: ONNX
    Runtime, OpenVINO at its default precision on this CPU (None: the
    worker's openvino_engine picks it, and the row is named after it) and
    at f32 (where the default is not f32)."""
    return ([('onnxrt', 'onnx', None)] if onnx else []) + \
        ([('ov', 'openvino', None), ('ov-f32', 'openvino', 'f32')] if openvino else [])


def load_average():
    return ' '.join(f'{v:.2f}' for v in os.getloadavg())


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['--worker']:
        return worker(argv[1:])
    parser = cli.ArgumentParser(prog='benchmark.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS),
                        help='models (e.g. voc-fcn8s) or paths to model folders')
    parser.add_argument('--sizes', nargs='*', type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES],
                        help=f'forward input sizes, WIDTHxHEIGHT or N (default {" ".join(DEFAULT_SIZES)})')
    parser.add_argument('--train-sizes', nargs='*', type=parse_size,
                        default=[parse_size(s) for s in DEFAULT_TRAIN_SIZES],
                        help=f'sizes of the forward+backward step (default {" ".join(DEFAULT_TRAIN_SIZES)})')
    parser.add_argument('--iters', type=cli.number(int, minimum=1), default=2,
                        help='timed runs after the first')
    parser.add_argument('--gpu', type=cli.number(int, minimum=0), help='GPU id (default: CPU)')
    stock = parser.add_mutually_exclusive_group()
    stock.add_argument('--stock', help='stock Caffe build to compare with (cache folder or its dist/; '
                                       'default: found in the build cache)')
    stock.add_argument('--no-stock', action='store_true', help='measure the installed Caffe only')
    parser.add_argument('--no-onnx', action='store_true',
                        help='measure no ONNX Runtime rows (forward, beside each Caffe forward)')
    parser.add_argument('--no-openvino', action='store_true',
                        help='measure no OpenVINO rows (forward, beside each Caffe forward)')
    parser.add_argument('--json', help='also write the figures here')
    parser.add_argument('--allow-module', action='append', default=[], metavar='MODULE',
                        help="let a deploy prototxt's Python layers import MODULE")
    args = parser.parse_args(argv)
    return cli.run('benchmark.py', lambda: measure_all(args),
                   lambda e: 'no figures written' if args.json else 'stopped')


def measure_all(args):
    """The command's work: check the models and --json, then measure."""
    if args.json:
        outputs.writable_file(args.json, '--json')
        folders = [locations.model_folder(m) for m in args.models]
        outputs.guard([(args.json, '--json')],
                      [(os.path.join(f, name), f'{os.path.join(f, name)}') for f in folders
                       for name in ('net.py', locations.DEPLOY_PROTOTXT)])
    for model in args.models:  # each loaded the one way before any figure
        run_worker('project', None, model, (1, 1), 'check', 1, None, allow=args.allow_module)
    builds = [('project', None)]
    if not args.no_stock:
        dist = dist_of(args.stock) if args.stock else find_stock_build()
        if dist is None:
            print(f'(no stock Caffe build in the cache: `bash tools/caffe/build.sh --without {STOCK_PATCH} '
                  '--no-install` builds it; comparing nothing)', flush=True)
        else:
            builds.append(('stock', dist))
    device = (f'CPU, {os.cpu_count()} cores, OPENBLAS_NUM_THREADS='
              f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}") if args.gpu is None else f'GPU {args.gpu}'
    jobs = [(m, s, 'forward') for m in args.models for s in args.sizes] + \
           [(m, s, 'train') for m in args.models for s in args.train_sizes]
    engines = exported_engines(not args.no_onnx, not args.no_openvino) if args.gpu is None else []
    results = []
    before = load_average()
    print(f'load average before: {before}', flush=True)
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        exported = {}
        for model, size, mode in jobs:
            for build, dist in builds:
                results.append(run_worker(build, dist, model, size, mode, args.iters, args.gpu))
                print(format_row(results[-1]), flush=True)
            if mode == 'forward' and engines:
                for row in exported_rows(model, size, args.iters, results[-len(builds)], exported, tmp, engines):
                    results.append(row)
                    print(format_row(row), flush=True)
    after = load_average()
    print(f'\n{device}; steady: mean (best) of {args.iters} runs after the first; '
          f'each row in a process of its own; load s: creating the net, session or compiled model')
    print(f'load average before: {before}, after: {after}')
    for build, dist in builds[1:]:
        print(f'stock Caffe: {dist}')
    if args.json:
        exports = {os.path.basename(os.path.normpath(m)): {k: v for k, v in e.items()
                                                           if k not in ('path', 'optimized')}
                   for m, e in exported.items()}
        outputs.write_atomically(args.json, json.dumps(dict(device=device, iters=args.iters, builds=dict(builds),
                                                            load_average=[before, after], exports=exports,
                                                            results=results),
                                                       indent=1), 'the --json figures')
    return results


if __name__ == '__main__':
    main()
