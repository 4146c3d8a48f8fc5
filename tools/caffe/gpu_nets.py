"""Write the nets that the GPU bundle times with `caffe time` (run at bundle time).

    python tools/caffe/gpu_nets.py CAFFE_PB2 OUTDIR [MODEL ...]

For each model (default voc-fcn32s voc-fcn16s voc-fcn8s) it writes
OUTDIR/<model>/deploy.prototxt (a copy of <repo>/<model>/deploy.prototxt) and
OUTDIR/<model>/train-input.prototxt: <repo>/<model>/train.prototxt with its Python
data layer replaced by an Input layer giving blobs of the same names and the
shapes that layer would give for an image of the deploy net's declared size
(500x500: data 1x3x500x500, label 1x1x500x500), so the caffe tool can time
forward and backward without Python.

CAFFE_PB2 is the path of Caffe's generated caffe_pb2.py (loaded from its file,
so pycaffe's compiled module is not imported).
"""
import importlib.util
import os
import shutil
import sys

from google.protobuf import text_format

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)  # run by bundle.sh with any Python, not only the venv's
from common import locations  # noqa: E402  (needs REPO on the path)

MODELS = ['voc-fcn32s', 'voc-fcn16s', 'voc-fcn8s']


def load_caffe_pb2(path):
    spec = importlib.util.spec_from_file_location('caffe_pb2', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def input_shapes(pb2, deploy_text):
    """{top: shape} the Python data layer stands for: the deploy net's
    input (its declared size), and a label of that size."""
    net = pb2.NetParameter()
    text_format.Merge(deploy_text, net)
    layer = next(l for l in net.layer if l.type == 'Input')
    data = list(layer.input_param.shape[0].dim)
    return {'data': data, 'label': [data[0], 1] + data[2:]}


def without_python_layer(pb2, text, shapes):
    net = pb2.NetParameter()
    text_format.Merge(text, net)
    out = pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    replaced = 0
    for layer in net.layer:
        if layer.type != 'Python':
            out.layer.add().CopyFrom(layer)
            continue
        tops = list(layer.top)
        missing = [t for t in tops if t not in shapes]
        if missing:
            raise SystemExit(f'gpu_nets.py: no shape known for top(s) {missing} of Python layer {layer.name!r}')
        inp = out.layer.add()
        inp.name = layer.name
        inp.type = 'Input'
        inp.top.extend(tops)
        for t in tops:
            inp.input_param.shape.add().dim.extend(shapes[t])
        replaced += 1
    if replaced != 1:
        raise SystemExit(f'gpu_nets.py: expected one Python layer, found {replaced}')
    return out


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    pb2 = load_caffe_pb2(argv[0])
    outdir = argv[1]
    for model in argv[2:] or MODELS:
        src = locations.model_dir(model)
        dst = os.path.join(outdir, model)
        os.makedirs(dst, exist_ok=True)
        shutil.copyfile(locations.deploy_prototxt(src), locations.deploy_prototxt(dst))
        with open(locations.deploy_prototxt(src)) as f:
            shapes = input_shapes(pb2, f.read())
        with open(os.path.join(src, 'train.prototxt')) as f:
            net = without_python_layer(pb2, f.read(), shapes)
        with open(os.path.join(dst, 'train-input.prototxt'), 'w') as f:
            f.write(f'# {model}/train.prototxt with its Python data layer replaced by Input blobs\n'
                    f'# of the same shapes (written by tools/caffe/gpu_nets.py for caffe time).\n')
            f.write(text_format.MessageToString(net))
        print(f'{dst}: deploy.prototxt, train-input.prototxt')


if __name__ == '__main__':
    main(sys.argv[1:])
