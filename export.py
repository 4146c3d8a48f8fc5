"""Export a model's deploy net with its weights to ONNX, checked against Caffe.

    python export.py --model voc-fcn8s [--weights W] --out fcn8s.onnx
        [--no-check] [--opset N]

--model is a model (e.g. voc-fcn8s) or a path to a model folder, and
--weights defaults as infer.py's does (the published caffemodel, else the
latest snapshot). The weights go to a file beside the graph, --out plus
'.data' (the engines memory-map it). Every layer of the deploy net is
mapped to ONNX operators (caffe_onnx.py); inputs and outputs keep the
deploy net's blob names, and height and width are free, so one file runs
any image size. The file's metadata (onnx metadata_props) names the model,
the class names of each output, what each input holds (channel order and
mean) and the caffemodel's and the weights file's sha256.

Unless --no-check, the written model runs in ONNX Runtime beside the deploy
net in Caffe on the same random input, and the file is refused (removed) if
any output differs by more than 1e-4 of that output's range.
"""
import os

from common import caffe_setup, cli

if __name__ == '__main__':
    cli.quit_while_starting('export.py')  # until main() handles signals
caffe_setup.quiet_caffe_log()  # before loading imports caffe

import caffe_onnx  # noqa: E402
import loading  # noqa: E402
import onnx_engine  # noqa: E402
from common import outputs  # noqa: E402


def export(model, weights, out, check=True, opset=None, allow_modules=()):
    """Export a model folder's deploy net with `weights` (default: the
    model's, loading.default_weights) to `out`, every input loaded the one
    way (loading.deploy) and `out` guarded (never an input, never through a
    link). Returns (the check's {output: difference / range}, weights)."""
    m, deploy = loading.deploy(model, allow_modules)
    folder = os.path.dirname(deploy)
    weights = weights or loading.default_weights(folder)
    data = onnx_engine.data_path(out)
    outputs.writable_file(out, '--out')
    outputs.writable_file(data, "--out's weights file")
    outputs.guard([(out, f'--out {out}'), (data, f"--out's weights file {data}")],
                  [(weights, f'the weights {weights}'), (deploy, f'the deploy net {deploy}')]
                  + ([(os.path.join(folder, 'net.py'), 'the model\'s net.py')] if m else []))
    worst, _ = onnx_engine.export(deploy, weights, out, onnx_engine.model_metadata(m or folder),
                                  check=check, opset=opset)
    return worst, weights, (m.name if m else os.path.basename(folder))


def main(argv=None):
    caffe_setup.quiet_caffe_log(argv)
    parser = cli.ArgumentParser(prog='export.py', description=__doc__.split('\n\n')[0])
    cli.add_model_options(parser)
    parser.add_argument('--out', required=True, help='the ONNX file to write')
    parser.add_argument('--no-check', action='store_true',
                        help='do not compare the exported model with Caffe')
    parser.add_argument('--opset', type=cli.number(int, minimum=caffe_onnx.MIN_OPSET,
                                                   maximum=caffe_onnx.MAX_OPSET),
                        default=caffe_onnx.DEFAULT_OPSET,
                        help=f'ONNX opset (default {caffe_onnx.DEFAULT_OPSET}, '
                             f'{caffe_onnx.MIN_OPSET} to {caffe_onnx.MAX_OPSET})')
    parser.add_argument('--verbose', action='store_true', help="show Caffe's own log")
    args = parser.parse_args(argv)

    def work():
        caffe_setup.use_device(None)
        return export(args.model, args.weights, args.out, not args.no_check, args.opset,
                      args.allow_module)
    before = outputs.file_key(args.out)  # a new file gets a new inode: written or not (its .data first)
    worst, weights, name = cli.run('export.py', work, lambda e: f'{args.out} ' + (
        'was written whole just before' if outputs.file_key(args.out) != before
        else 'not written; no partial file left'))
    checked = ', '.join(f'{name} within {ratio:.1e} of its range' for name, ratio in worst.items())
    print(f'wrote {args.out} ({name}, weights {weights}, opset {args.opset}'
          + (f'; matches Caffe at {onnx_engine.CHECK_SIZE[1]}x{onnx_engine.CHECK_SIZE[0]}: {checked})'
             if worst else '; not checked)'))


if __name__ == '__main__':
    main()
