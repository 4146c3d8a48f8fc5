"""The memory a forward pass takes in ONNX Runtime or OpenVINO, against the
bytes of all of Caffe's blobs at the same size: the measurement behind
infer.OnnxMemoryModel.BLOB_FRACTION. Prints figures, asserts nothing.

    python tools/onnx_memory.py [--models voc-fcn8s voc-fcn-alexnet]
        [--sizes 500x500 1000x750 2000x1500] [--engine onnx|openvino]
        [--precision bf16|f32]

Each model's deploy net (the weights Caffe's fillers give it: memory does not
depend on their values) is exported once by onnx_engine (and optimized for
this CPU, for ONNX Runtime); each size runs in a process of its own that
loads the engine's net as the engine does (onnx_engine.OnnxNet of the
optimized model, openvino_engine.OpenvinoNet of the export at --precision,
default the CPU's), resets the kernel's peak-RSS mark (Linux /proc/self/clear_refs),
runs a small forward (WARM_UP: the memory-mapped weights paged in, OpenVINO's
bf16 copy made; its RSS increase is printed as 'first'), then one forward at
the size, and reports the peak RSS above the RSS before that forward (and
what stays held after it: OpenVINO keeps the last size's buffers).
Caffe's blob bytes come from infer.MemoryModel.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common import caffe_setup, locations  # noqa: E402

caffe_setup.quiet_caffe_log([])  # before the measurements import caffe

MIB = 2 ** 20
WARM_UP = (67, 83)  # (height, width) of the forward before the measured one


def status_kib(field):
    """A field of /proc/self/status in KiB (VmRSS, VmHWM)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'no {field} in /proc/self/status')


def forward_bytes(path, width, height, engine='onnx', precision=None):
    """Runs in its own process (--worker): (the peak RSS increase of one
    forward of the exported model at width x height, the RSS increase that
    stays after it, the RSS increase of a first small forward before it:
    the engines memory-map the weights, paged in by the first forward, and
    OpenVINO packs them into bf16 then)."""
    import numpy as np

    if engine == 'onnx':
        import onnx_engine  # deferred: a measuring process loads its engine's module only
        net = onnx_engine.OnnxNet(onnx_engine.optimized_path(path), optimized=True)
        channels = {i.name: i.shape[1] for i in net.session.get_inputs()}
    else:
        import openvino_engine  # deferred: a measuring process loads its engine's module only
        net = openvino_engine.OpenvinoNet(path, precision)
        channels = {i.get_any_name(): i.get_partial_shape()[1].get_length() for i in net.compiled.inputs}
    start = status_kib('VmRSS')
    net.run({name: np.zeros((1, c) + WARM_UP, np.float32) for name, c in channels.items()})
    first = status_kib('VmRSS') - start
    inputs = {name: np.zeros((1, c, height, width), np.float32) for name, c in channels.items()}
    before = status_kib('VmRSS')
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the peak-RSS mark to the current RSS
    outputs = net.run(inputs)
    del outputs
    return 1024 * (status_kib('VmHWM') - before), 1024 * (status_kib('VmRSS') - before), 1024 * first


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['--worker']:
        path, width, height, engine, precision = argv[1], int(argv[2]), int(argv[3]), argv[4], argv[5]
        print('RESULT', *forward_bytes(path, width, height, engine, None if precision == '-' else precision),
              flush=True)
        return None
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', default=['voc-fcn8s', 'voc-fcn-alexnet'])
    parser.add_argument('--sizes', nargs='+', default=['500x500', '1000x750', '2000x1500'])
    parser.add_argument('--engine', choices=('onnx', 'openvino'), default='onnx')
    parser.add_argument('--precision', choices=('bf16', 'f32'), help="OpenVINO's (default: the CPU's)")
    args = parser.parse_args(argv)
    # here, not at the top: the --worker processes measure ONNX Runtime alone
    import caffe

    import infer
    import nets
    import onnx_engine
    caffe.set_mode_cpu()
    rows = []
    print(f"{'model':<18}{'size':>11}{'caffe blobs MiB':>17}{args.engine + ' forward MiB':>22}{'fraction':>10}"
          f"{'held MiB':>10}{'first MiB':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = nets.load(name)
            deploy = locations.deploy_prototxt(model.folder)
            net = caffe.Net(deploy, caffe.TEST)
            path = os.path.join(tmp, f'{model.name}.onnx')
            onnx_engine.export_net(onnx_engine.read_deploy(deploy), net, path, check=False, where=deploy)
            if args.engine == 'onnx':
                onnx_engine.optimize(path, onnx_engine.optimized_path(path))
            memory = infer.MemoryModel(net, len(model.source.heads[0].classes))
            del net
            for size in args.sizes:
                width, height = (int(v) for v in size.split('x'))
                proc = subprocess.run([sys.executable, os.path.abspath(__file__), '--worker', path,
                                       str(width), str(height), args.engine, args.precision or '-'],
                                      capture_output=True, text=True)
                line = next((l for l in proc.stdout.splitlines() if l.startswith('RESULT ')), None)
                if line is None:
                    print(f'{model.name:<18}{size:>11}   failed: {proc.stderr.strip()[-200:]}')
                    continue
                used, held, first = (int(v) for v in line.split()[1:4])
                blobs = memory.blob_bytes(height, width)
                rows.append(dict(model=model.name, size=size, blob_bytes=blobs, forward_bytes=used,
                                 held_bytes=held, first_bytes=first))
                print(f'{model.name:<18}{size:>11}{blobs / MIB:>17.0f}{used / MIB:>22.0f}'
                      f'{used / blobs:>10.3f}{held / MIB:>10.0f}{first / MIB:>11.0f}', flush=True)
    print(json.dumps(dict(max_fraction=max((r['forward_bytes'] / r['blob_bytes'] for r in rows), default=None))))
    return rows


if __name__ == '__main__':
    main()
