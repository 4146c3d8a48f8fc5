"""Regenerate the prototxts of every model folder and of ilsvrc-nets/.

    python -m nets [MODEL ...]    write them
    python -m nets --check        exit 1 if any committed file differs
"""
import argparse
import os
import sys

import nets
from nets import ilsvrc, stale


def generated():
    """{path: text} of every generated file."""
    files = dict(ilsvrc.prototxts())
    for name in nets.model_names():
        model = nets.load(name)
        files.update({os.path.join(model.folder, k): v for k, v in model.prototxts().items()})
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='*', help='model folder names (default: all, and ilsvrc-nets)')
    parser.add_argument('--check', action='store_true', help='only compare with the committed files')
    args = parser.parse_args(argv)
    if args.models:
        files = {}
        for name in args.models:
            model = nets.load(name)
            files.update({os.path.join(model.folder, k): v for k, v in model.prototxts().items()})
    else:
        files = generated()
    if args.check:
        bad = stale(files)
        for path in bad:
            print(f'stale: {os.path.relpath(path)}')
        return 1 if bad else 0
    for path, text in files.items():
        with open(path, 'w') as f:
            f.write(text)
        print(f'wrote {os.path.relpath(path)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
