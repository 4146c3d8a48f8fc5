"""Regenerate the prototxts of every model folder and of ilsvrc-nets/.

    python -m nets [MODEL ...]    write them
    python -m nets --check        exit 1 if any committed file differs
"""
import argparse
import os
import sys

from common import cli

if __name__ == '__main__':
    cli.quit_while_starting('python -m nets')  # until main() handles signals

import nets  # noqa: E402
from common import outputs  # noqa: E402
from nets import ilsvrc, stale  # noqa: E402


def generated():
    """{path: text} of every generated file."""
    files = dict(ilsvrc.prototxts())
    for name in nets.model_names():
        model = nets.load(name)
        files.update({os.path.join(model.folder, k): v for k, v in model.prototxts().items()})
    return files


def main(argv=None):
    parser = cli.ArgumentParser(prog='python -m nets', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='*', help='model folder names (default: all, and ilsvrc-nets)')
    parser.add_argument('--check', action='store_true', help='only compare with the committed files')
    args = parser.parse_args(argv)
    return cli.run('python -m nets', lambda: write(args.models, args.check),
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
