"""Net surgery: move weights between Caffe nets whose layers differ in shape.

- `transplant` copies parameters by layer name, reshaping fully connected
  weights into convolution weights (same numbers, O x I -> O x I x H x W).
- `interp` fills Deconvolution layers with bilinear interpolation kernels.
- `expand_score` grows a k-class score layer into a k'-class one.
- `init_early_fusion` builds a BGR+depth first convolution from an RGB one.

The command convolutionalizes an ILSVRC classifier into the caffemodel the
model folders start from:

    python surgery.py convert --net vgg16 \\
        --weights VGG_ILSVRC_16_layers.caffemodel \\
        --out nets/ilsvrc-nets/vgg16-fcn.caffemodel

All functions take pycaffe nets; only the command imports caffe itself.
"""
import os
from dataclasses import dataclass, field

import numpy as np

from common import caffe_setup, cli, locations, outputs, weightfiles
from common.catalog import ILSVRC_CONVERTED

if __name__ == '__main__':
    cli.quit_while_starting('surgery.py')  # until main() handles signals


@dataclass
class TransplantReport:
    """What `transplant` did, one entry per parameter blob.

    copied:  (old layer, new layer, blob index) with identical shapes
    coerced: (old layer, new layer, blob index, old shape, new shape),
             same size, copied in flat order (fc -> conv)
    dropped: (old layer, blob index) with no place in the new net
    kept:    (new layer, blob index) with no source, left as initialised
    """
    copied: list = field(default_factory=list)
    coerced: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    kept: list = field(default_factory=list)


def transplant(new_net, net, suffix='', verbose=True):
    """Copy `net`'s parameters into `new_net`, layer `name` into `name + suffix`.

    Blobs of equal size but different shape are copied in flat order, which
    turns an InnerProduct's O x (C*H*W) weights into a Convolution's
    O x C x H x W. A size mismatch raises ValueError naming the layer and both
    shapes; it is checked for every blob before anything is written, so a
    failed transplant leaves `new_net` untouched. Returns a TransplantReport
    (also printed when verbose).
    """
    report = TransplantReport()
    moves = []
    for name, blobs in net.params.items():
        new_name = name + suffix
        if new_name not in new_net.params:
            report.dropped.extend((name, i) for i in range(len(blobs)))
            continue
        new_blobs = new_net.params[new_name]
        report.dropped.extend((name, i) for i in range(len(new_blobs), len(blobs)))
        for i in range(min(len(blobs), len(new_blobs))):
            old, new = blobs[i].data, new_blobs[i].data
            if old.size != new.size:
                raise ValueError(
                    f'transplant: {name}[{i}] -> {new_name}[{i}]: cannot copy '
                    f'shape {old.shape} ({old.size} values) into shape '
                    f'{new.shape} ({new.size} values)')
            if old.shape == new.shape:
                report.copied.append((name, new_name, i))
            else:
                report.coerced.append((name, new_name, i, old.shape, new.shape))
            moves.append((old, new))
    sources = {name + suffix: len(blobs) for name, blobs in net.params.items()}
    for new_name, new_blobs in new_net.params.items():
        report.kept.extend((new_name, i) for i in
                           range(sources.get(new_name, 0), len(new_blobs)))
    for old, new in moves:
        new.flat = old.flat
    if verbose:
        for name, new_name, i in report.copied:
            print(f'copying {name}[{i}] -> {new_name}[{i}]')
        for name, new_name, i, old_shape, new_shape in report.coerced:
            print(f'coercing {name}[{i}] -> {new_name}[{i}] '
                  f'from {old_shape} to {new_shape}')
        for name, i in report.dropped:
            print(f'dropping {name}[{i}]')
        for new_name, i in report.kept:
            print(f'keeping {new_name}[{i}] as initialised')
    return report


def upsample_filt(size):
    """A size x size bilinear interpolation kernel (reference release's)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return ((1 - abs(og[0] - center) / factor) *
            (1 - abs(og[1] - center) / factor))


def interp(net, layers):
    """Set each Deconvolution in `layers` to bilinear upsampling, per channel.

    The weights (C_in x C_out/group x k x k) must be C x C (group 1: only the
    diagonal is set, so channels do not mix) or C x 1 (group C), with C output
    channels and a square kernel; anything else raises ValueError naming the
    layer. A bias, if any, is zeroed so that interpolation is exact.
    """
    for name in layers:
        params = net.params[name]
        weights = params[0].data
        c_in, c_per_group, h, w = weights.shape
        c_out = net.blobs[net.top_names[name][0]].channels
        if c_out != c_in or c_per_group not in (c_in, 1):
            raise ValueError(
                f'interp: {name}: weights {weights.shape} with {c_out} outputs '
                f'are neither C x C nor C x 1 (group C) for C channels in and out')
        if h != w:
            raise ValueError(f'interp: {name}: kernel {h}x{w} is not square')
        weights[...] = 0
        channels = np.arange(c_in)
        weights[channels, channels if c_per_group == c_in else 0] = upsample_filt(h)
        for bias in params[1:]:
            bias.data[...] = 0


def expand_score(new_net, new_layer, net, layer):
    """Copy the k-class score `layer` into the first k classes of `new_layer`.

    Weights and bias of classes k..k'-1 keep their initial values.
    """
    old, new = net.params[layer], new_net.params[new_layer]
    k, k_new = old[0].data.shape[0], new[0].data.shape[0]
    if k > k_new or old[0].data.shape[1:] != new[0].data.shape[1:]:
        raise ValueError(
            f'expand_score: {layer} {old[0].data.shape} does not fit into '
            f'{new_layer} {new[0].data.shape}')
    for old_blob, new_blob in zip(old, new):
        new_blob.data[:k] = old_blob.data


def init_early_fusion(new_net, net, rgb_layer='conv1_1',
                      new_layer='conv1_1_bgrd', depth='zero'):
    """Initialise a BGR+depth first convolution from the colour net's.

    `new_layer`'s weights are O x (C+1) x k x k for the colour layer's
    O x C x k x k: the first C input channels get the colour filters, the
    bias is copied, and the extra (depth) channel's filters are
      'zero': zero, so the fused net starts as exactly the colour net;
      'mean': the mean of the colour filters over their C channels, so depth
              edges excite the filters that respond to intensity edges.
    """
    old, new = net.params[rgb_layer], new_net.params[new_layer]
    weights, new_weights = old[0].data, new[0].data
    c = weights.shape[1]
    expected = (weights.shape[0], c + 1) + weights.shape[2:]
    if new_weights.shape != expected:
        raise ValueError(
            f'init_early_fusion: {new_layer} has shape {new_weights.shape}, '
            f'expected {expected} for {rgb_layer} {weights.shape} plus depth')
    new_weights[:, :c] = weights
    if depth == 'zero':
        new_weights[:, c] = 0
    elif depth == 'mean':
        new_weights[:, c] = weights.mean(axis=1)
    else:
        raise ValueError(f"init_early_fusion: depth must be 'zero' or 'mean', not {depth!r}")
    for old_blob, new_blob in zip(old[1:], new[1:]):
        new_blob.data[...] = old_blob.data


def convolutionalize(weights, classifier_proto, fcn_proto, out, force=False, verbose=True,
                     allow_modules=()):
    """Transplant a classifier's weights into its fully convolutional twin.

    Writes `out` (a caffemodel, through a temporary file renamed when whole)
    and returns the TransplantReport (printed blob by blob when verbose).
    Checked first, because Caffe aborts the process on them: every input
    exists, `out` is none of them and does not exist (unless force), and
    `weights` fits the classifier (weightfiles.check_weights: every
    parameter layer, in its shapes, all values finite; Caffe would
    otherwise keep filler values silently).
    """
    inputs = (('weights', weights), ('classifier prototxt', classifier_proto),
              ('FCN prototxt', fcn_proto))
    for what, path in inputs:
        if not os.path.isfile(path):
            raise FileNotFoundError(f'{what} not found: {path}')
    outputs.guard([(out, f'--out {out}')], [(path, f'the {what} {path}') for what, path in inputs])
    if os.path.exists(out) and not force:
        raise FileExistsError(f'{out} exists (use --force to overwrite)')
    if os.path.isdir(out):
        raise outputs.OutputError(f'--out {out}: a folder, not a file')
    outputs.writable_dir(os.path.dirname(os.path.abspath(out)), f'--out {out}: its folder')

    import caffe  # deferred: the library API above runs on nets its callers made

    import loading  # deferred with caffe, which it loads
    for proto in (classifier_proto, fcn_proto):  # the one way: checked before Caffe sees them
        loading.check_net(proto, allow=allow_modules)
    caffe_setup.use_device(None)  # a one-off conversion: the CPU will do
    classifier = caffe.Net(classifier_proto, caffe.TEST)
    weightfiles.load_weights(classifier, weights, net_name=classifier_proto)
    fcn = caffe.Net(fcn_proto, caffe.TEST)
    report = transplant(fcn, classifier, verbose=verbose)
    if not report.copied and not report.coerced:
        raise ValueError(f'{classifier_proto} and {fcn_proto} share no parameter layers')
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    with outputs.atomic_path(out, 'the caffemodel') as tmp:
        fcn.save(tmp)
        outputs.check_written(tmp, out, weightfiles.read_caffemodel, 'the caffemodel')
    return report


def main(argv=None):
    caffe_setup.quiet_caffe_log(argv)  # before convolutionalize imports caffe
    parser = cli.ArgumentParser(prog='surgery.py', description=__doc__.split('\n\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    convert = commands.add_parser(
        'convert', help='convolutionalize an ILSVRC classifier caffemodel')
    convert.add_argument('--net', choices=sorted(ILSVRC_CONVERTED),
                         help='which classifier (picks the two prototxts: the classifier '
                              'and its fully convolutional twin in nets/ilsvrc-nets/)')
    convert.add_argument('--weights', required=True, help="the classifier's caffemodel")
    convert.add_argument('--out', required=True, help='caffemodel to write')
    convert.add_argument('--classifier-proto', help='override the classifier prototxt')
    convert.add_argument('--fcn-proto', help='override the fully convolutional prototxt')
    convert.add_argument('--force', action='store_true', help='overwrite --out')
    convert.add_argument('--allow-module', action='append', default=[], metavar='MODULE',
                         help="let the prototxts' Python layers import MODULE")
    convert.add_argument('--verbose', action='store_true',
                         help="show Caffe's own log and each blob transplanted")
    args = parser.parse_args(argv)

    protos = {}
    for key, override in (('classifier', args.classifier_proto), ('fcn', args.fcn_proto)):
        if override:
            protos[key] = override
        elif args.net:
            protos[key] = locations.ilsvrc_prototxt(args.net, key)
        else:
            parser.error(f'give --net or --{key}-proto')
    before = outputs.file_key(args.out)  # a new file gets a new inode: written or not
    report = cli.run('surgery.py convert', lambda: convolutionalize(
        args.weights, protos['classifier'], protos['fcn'], args.out, force=args.force,
        verbose=args.verbose, allow_modules=args.allow_module),
        lambda e: f'{args.out} ' + ('was written whole just before' if outputs.file_key(args.out) != before
                                    else 'not written; no partial file left'))
    print(f'wrote {args.out}: {len(report.copied)} copied, {len(report.coerced)} '
          f'coerced, {len(report.dropped)} dropped, {len(report.kept)} kept as initialised')


if __name__ == '__main__':
    main()
