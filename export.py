"""Export a model's deploy net with its weights to ONNX, checked against Caffe.

    python export.py --model voc-fcn8s [--weights W] --out fcn8s.onnx
        [--no-check] [--opset N]

--model is a model (e.g. voc-fcn8s) or a path to a model folder, and
--weights defaults as infer.py's does (the published caffemodel, else the
latest snapshot). The weights go to a file beside the graph, --out plus
'.data' (the engines memory-map it). Every layer of the deploy net is
mapped to ONNX operators (caffe_onnx.py); inputs and outputs keep the deploy net's blob names, and
height and width are free, so one file runs any image size. The file's
metadata (onnx metadata_props) names the model, the class names of each
output, what each input holds (channel order and mean) and the caffemodel's
and the weights file's sha256.

Unless --no-check, the written model runs in ONNX Runtime beside the deploy
net in Caffe on the same random input, and the file is refused (removed) if
any output differs by more than 1e-4 of that output's range.
"""
import argparse
import sys

from common import caffe_setup

caffe_setup.quiet_caffe_log()  # before infer imports caffe

import caffe_onnx  # noqa: E402
import infer  # noqa: E402
import nets  # noqa: E402
import onnx_engine  # noqa: E402
from common import locations, outputs, weightfiles  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default=infer.DEFAULT_MODEL,
                        help='a model (e.g. voc-fcn8s) or a path to a model folder '
                             f'(default {infer.DEFAULT_MODEL})')
    parser.add_argument('--weights', help="caffemodel (default: the model's published weights, "
                                          'else its latest snapshot)')
    parser.add_argument('--out', required=True, help='the ONNX file to write')
    parser.add_argument('--no-check', action='store_true',
                        help='do not compare the exported model with Caffe')
    parser.add_argument('--opset', type=int, default=caffe_onnx.DEFAULT_OPSET,
                        help=f'ONNX opset (default {caffe_onnx.DEFAULT_OPSET}, '
                             f'{caffe_onnx.MIN_OPSET} to {caffe_onnx.MAX_OPSET})')
    parser.add_argument('--verbose', action='store_true', help="show Caffe's own log")
    args = parser.parse_args(argv)
    if not caffe_onnx.MIN_OPSET <= args.opset <= caffe_onnx.MAX_OPSET:
        parser.error(f'--opset must be {caffe_onnx.MIN_OPSET} to {caffe_onnx.MAX_OPSET}, got {args.opset}')
    caffe_setup.use_device(None)
    try:
        outputs.writable_file(args.out, '--out')
        outputs.writable_file(onnx_engine.data_path(args.out), '--out\'s weights file')
        try:
            model = nets.load(args.model)
        except (FileNotFoundError, TypeError) as e:
            raise infer.InferError(str(e)) from e
        weights = args.weights or infer.default_weights(model)
        deploy = locations.deploy_prototxt(model.folder)
        worst, _ = onnx_engine.export(deploy, weights, args.out, onnx_engine.model_metadata(model),
                                   check=not args.no_check, opset=args.opset)
    except (weightfiles.CheckError, outputs.OutputError, infer.InferError, onnx_engine.ExportError) as e:
        sys.exit(f'export.py: error: {e}')
    checked = ', '.join(f'{name} within {ratio:.1e} of its range' for name, ratio in worst.items())
    print(f'wrote {args.out} ({model.name}, weights {weights}, opset {args.opset}'
          + (f'; matches Caffe at {onnx_engine.CHECK_SIZE[1]}x{onnx_engine.CHECK_SIZE[0]}: {checked})'
             if worst else '; not checked)'))


if __name__ == '__main__':
    main()
