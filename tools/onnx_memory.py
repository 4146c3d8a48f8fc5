"""The memory a forward pass takes in ONNX Runtime, against the bytes of all
of Caffe's blobs at the same size: the measurement behind
infer.OnnxMemoryModel.BLOB_FRACTION. Prints figures, asserts nothing.

    python tools/onnx_memory.py [--models voc-fcn8s voc-fcn-alexnet]
        [--sizes 500x500 1000x750 2000x1500]

Each model's deploy net (the weights Caffe's fillers give it: memory does not
depend on their values) is exported once by onnx_engine; each size runs in
a process of its own that creates the session as infer.py does
(onnx_engine.OnnxNet), resets the kernel's peak-RSS mark (Linux
/proc/self/clear_refs), runs one forward, and reports the peak RSS above the
RSS before the forward. Caffe's blob bytes come from infer.MemoryModel.
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


def status_kib(field):
    """A field of /proc/self/status in KiB (VmRSS, VmHWM)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'no {field} in /proc/self/status')


def forward_bytes(path, width, height):
    """Runs in its own process (--worker): the peak RSS increase of one
    forward of the exported model at width x height."""
    import numpy as np

    import onnx_engine
    net = onnx_engine.OnnxNet(path)
    inputs = {i.name: np.zeros((1, i.shape[1], height, width), np.float32)
              for i in net.session.get_inputs()}
    before = status_kib('VmRSS')
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the peak-RSS mark to the current RSS
    net.run(inputs)
    return 1024 * (status_kib('VmHWM') - before)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['--worker']:
        path, width, height = argv[1], int(argv[2]), int(argv[3])
        print('RESULT', forward_bytes(path, width, height), flush=True)
        return None
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', default=['voc-fcn8s', 'voc-fcn-alexnet'])
    parser.add_argument('--sizes', nargs='+', default=['500x500', '1000x750', '2000x1500'])
    args = parser.parse_args(argv)
    # here, not at the top: the --worker processes measure ONNX Runtime alone
    import caffe

    import infer
    import nets
    import onnx_engine
    caffe.set_mode_cpu()
    rows = []
    print(f"{'model':<18}{'size':>11}{'caffe blobs MiB':>17}{'onnxrt forward MiB':>20}{'fraction':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = nets.load(name)
            deploy = locations.deploy_prototxt(model.folder)
            net = caffe.Net(deploy, caffe.TEST)
            path = os.path.join(tmp, f'{model.name}.onnx')
            onnx_engine.export_net(onnx_engine.read_deploy(deploy), net, path, check=False, where=deploy)
            memory = infer.MemoryModel(net, len(model.source.heads[0].classes))
            del net
            for size in args.sizes:
                width, height = (int(v) for v in size.split('x'))
                proc = subprocess.run([sys.executable, os.path.abspath(__file__), '--worker', path,
                                       str(width), str(height)], capture_output=True, text=True)
                line = next((l for l in proc.stdout.splitlines() if l.startswith('RESULT ')), None)
                if line is None:
                    print(f'{model.name:<18}{size:>11}   failed: {proc.stderr.strip()[-200:]}')
                    continue
                used = int(line.split()[1])
                blobs = memory.blob_bytes(height, width)
                rows.append(dict(model=model.name, size=size, blob_bytes=blobs, forward_bytes=used))
                print(f'{model.name:<18}{size:>11}{blobs / MIB:>17.0f}{used / MIB:>20.0f}'
                      f'{used / blobs:>10.3f}', flush=True)
    print(json.dumps(dict(max_fraction=max((r['forward_bytes'] / r['blob_bytes'] for r in rows), default=None))))
    return rows


if __name__ == '__main__':
    main()
