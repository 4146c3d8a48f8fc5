"""Regenerate the prototxts of the papers' model folders and of ilsvrc-nets/;
make a model folder for your own data; check a data folder.

    python -m nets [MODEL ...]    write them (MODEL: a name, or any model folder)
    python -m nets --check        exit 1 if any committed file differs
    python -m nets new FOLDER --data DATA --classes a,b,c [--stride 32|16|8]
                   [--from COARSER_FOLDER] [--trunk T] [--trunk-width F] ...
    python -m nets check-data DATA --classes a,b,c

(`python -m nets new --help`, `python -m nets check-data --help`; docs/nets.md)
"""
import argparse
import os
import shlex
import sys

from common import cli

if __name__ == '__main__':
    cli.quit_while_starting('python -m nets')  # until main() handles signals

import nets  # noqa: E402
from common import outputs, prototxts  # noqa: E402
from nets import datacheck, ilsvrc, scaffold, stale  # noqa: E402
from nets.trunks import TRUNK_ALIASES, TRUNKS  # noqa: E402

PROG = 'python -m nets'
# Options whose values are a list: Caffe's solver types.
CHOICES = {'solver_type': dict(choices=sorted(prototxts.HISTORY_PER_PARAM), metavar='TYPE')}


def generated():
    """{path: text} of every generated file."""
    files = dict(ilsvrc.prototxts())
    for name in nets.model_names():
        model = nets.load(name)
        files.update({os.path.join(model.folder, k): v for k, v in model.prototxts().items()})
    return files


def class_names(text):
    """An argparse type: comma-separated class names, index order."""
    names = [c.strip() for c in text.split(',')]
    if not all(names):
        raise argparse.ArgumentTypeError(f'{text!r}: give the class names as a,b,c (no empty name)')
    return tuple(names)


def main_new(argv):
    parser = cli.ArgumentParser(prog=f'{PROG} new', description=scaffold.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('folder', help='the model folder to write (anywhere)')
    parser.add_argument('--data', help='the data folder (relative to here; docs/nets.md); '
                                       'default with --from: the coarser model\'s')
    parser.add_argument('--classes', type=class_names, help='class names in index order, a,b,c '
                                                            '(default with --from: its)')
    parser.add_argument('--stride', type=int, choices=(32, 16, 8), default=32, help='output stride')
    parser.add_argument('--from', dest='start', metavar='FOLDER',
                        help='the coarser stage this one starts from (16s: a 32s folder, 8s: a 16s)')
    parser.add_argument('--trunk', choices=[*TRUNKS, *TRUNK_ALIASES], help='default vgg16')
    parser.add_argument('--trunk-width', type=cli.number(float, above=0, maximum=1),
                        help='channel scale of the VGG16 trunk, e.g. 0.03125 (< 1: trains from '
                             'scratch; default 1, from the ILSVRC weights)')
    parser.add_argument('--test-interval', type=cli.number(int, minimum=1),
                        help='iterations between scoring and snapshots (default: a quarter of '
                             'max_iter, at most 4000)')
    for name, field in scaffold.option_fields().items():
        flag = '--' + name.replace('_', '-')
        kind = field.type if isinstance(field.type, type) else type(field.default)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=field.metadata['doc'])
        else:
            parser.add_argument(flag, type=cli.number(kind) if kind in (int, float) else kind,
                                help=field.metadata['doc'], **CHOICES.get(name, {}))
    args = vars(parser.parse_args(argv))
    folder = args.pop('folder')
    return cli.run(f'{PROG} new', lambda: new(folder, args, argv),
                   lambda e: 'every file listed as written is whole; no partial file left')


def new(folder, options, argv):
    """Write the model folder `folder` for `options` and say what it is."""
    model = scaffold.new_model(folder, **options)
    written = scaffold.write(folder, model, ' '.join([PROG, 'new', *map(shlex.quote, argv)]))
    model = nets.load(folder)
    start = ', '.join(model.init) or f'scratch ({model.trunk_filler} fillers)'
    print(f'wrote {os.path.join(folder, "")}{{{",".join(written)}}}: FCN-{model.stride}s, '
          f'{model.trunk} x{model.trunk_width:g}, {len(model.source.heads[0].classes)} classes, '
          f'data {model.source.data_dir} (relative to the folder), starts from {start}, '
          f'{model.training_length} iterations')
    print(f'train it: cd {folder} && python solve.py')
    return 0


def main_check_data(argv):
    parser = cli.ArgumentParser(prog=f'{PROG} check-data', description=datacheck.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('data', help='the data folder')
    parser.add_argument('--classes', type=class_names, required=True,
                        help='class names in index order, a,b,c')
    args = parser.parse_args(argv)
    return cli.run(f'{PROG} check-data', lambda: check_data(args.data, args.classes),
                   lambda e: 'nothing was written')


def check_data(data, classes):
    """Print the data folder's summary and problems; 1 if there are any."""
    report = datacheck.check(data, classes)
    print('\n'.join(report.lines()))
    return 1 if report.problems else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {'new': main_new, 'check-data': main_check_data}
    if argv and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    parser = cli.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='*', help="model folders (default: the papers', and "
                                                  'ilsvrc-nets)')
    parser.add_argument('--check', action='store_true', help='only compare with the committed files')
    args = parser.parse_args(argv)
    return cli.run(PROG, lambda: write(args.models, args.check),
                   lambda e: 'every file listed as written is whole; no partial file left')


def write(models, check=False):
    """Write (or with `check` compare) the generated files of `models`
    (default: every model folder and ilsvrc-nets), each through the output
    guard (never through a planted link) and written whole."""
    if models:
        files = {}
        for name in models:
            model = nets.load(name)
            files.update({os.path.join(model.folder, k): v for k, v in model.prototxts().items()})
    else:
        files = generated()
    if check:
        bad = stale(files)
        for path in bad:
            print(f'stale: {os.path.relpath(path)}')
        return 1 if bad else 0
    outputs.guard([(path, f'the generated file {path}') for path in files],
                  [(os.path.join(folder, 'net.py'), f'{folder}/net.py')
                   for folder in {os.path.dirname(path) for path in files}
                   if os.path.isfile(os.path.join(folder, 'net.py'))])
    for path, text in files.items():
        outputs.write_atomically(path, text, 'the generated prototxt')
        print(f'wrote {os.path.relpath(path)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
