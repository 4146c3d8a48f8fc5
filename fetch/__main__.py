"""python -m fetch {data,weights,classes,splits,score-all,sources} ... (see --help)."""
import os
import sys

from common import caffe_setup, cli

if __name__ == '__main__':
    cli.quit_while_starting('fetch')  # until main() handles signals

from common import outputs  # noqa: E402
from common.catalog import DOWNLOADS, MODELS  # noqa: E402

from . import DATA_ROOT, MODELS_ROOT, REPO, FetchError  # noqa: E402
from .install import DATASETS, fetch_dataset, fetch_weights, weight_names  # noqa: E402
from .scoreall import score_all  # noqa: E402
from .splits import write_class_lists, write_derived_splits  # noqa: E402


def _overrides(values, sources, option):
    """Parse repeated --url/--file values, 'KEY=VALUE' or a bare VALUE (allowed
    when only one source is being fetched) into {source key: value}."""
    result = {}
    for value in values or ():
        key, sep, rest = value.partition('=')
        if sep and key in DOWNLOADS:
            result[key] = rest
        elif sep and os.sep not in key and not os.path.exists(value):
            # SOURCE=VALUE with a name that is no source (a path holding '='
            # that exists is taken as a path)
            raise FetchError(f'{option} {value}: unknown source {key}; sources are '
                             f'{", ".join(sources)}')
        elif len(sources) == 1:
            result[sources[0]] = value
        else:
            raise FetchError(f'{option} {value!r}: several sources are being fetched '
                             f'({", ".join(sources)}); write {option} SOURCE=VALUE')
    unknown = set(result) - set(sources)
    if unknown:
        raise FetchError(f'{option}: {", ".join(sorted(unknown))} is not being fetched')
    return result


def _download_args(args):
    return dict(retries=args.retries, progress=not args.quiet)


def _writable_dest(dest):
    """--dest checked before any download: a folder that exists or can be made."""
    try:
        outputs.writable_dir(str(dest), '--dest')
    except outputs.OutputError as e:
        raise FetchError(str(e)) from None


def cmd_data(args):
    _writable_dest(args.dest)
    names = list(DATASETS) if 'all' in args.names else args.names
    sources = [step.source for n in names for step in DATASETS[n].steps]
    urls = _overrides(args.url, sources, '--url')
    files = _overrides(args.file, sources, '--file')
    for name in names:
        fetch_dataset(name, args.dest, urls, files, force=args.force,
                      remove_archives=args.remove_archives, **_download_args(args))


def cmd_weights(args):
    _writable_dest(args.dest)
    names = ([m.folder for m in MODELS.values() if m.weights]
             if 'published' in args.names else args.names)
    urls = _overrides(args.url, names, '--url')
    files = _overrides(args.file, names, '--file')
    for name in names:
        fetch_weights(name, args.dest, url=urls.get(name), file=files.get(name),
                      convert=not args.no_convert, force=args.force,
                      allow_modules=args.allow_module, **_download_args(args))


def cmd_classes(args):
    _writable_dest(args.dest)
    for path in write_class_lists(args.dest):
        print(f'wrote {path}')


def cmd_splits(args):
    _writable_dest(args.dest)
    written = write_derived_splits(args.dest)
    for path in written:
        print(f'wrote {path}')
    if not written:
        print('nothing to derive: fetch the datasets first')


def cmd_score_all(args):
    return score_all(args.models_root, gpu=args.gpu, limit=args.limit, models=args.models,
                     scorer=args.scorer)


def cmd_sources(args):
    for key, source in DOWNLOADS.items():
        note = f'  [{source.note}]' if source.note else ''
        print(f'{key:24} {source.url}{note}')


def build_parser():
    parser = cli.ArgumentParser(prog='python -m fetch', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)

    def downloading(p):
        p.add_argument('--url', action='append', metavar='[SOURCE=]URL',
                       help='download from this URL (a mirror) instead')
        p.add_argument('--file', action='append', metavar='[SOURCE=]PATH',
                       help='use this local file instead of downloading it (it is verified)')
        p.add_argument('--force', action='store_true',
                       help='redo unpacking/conversion even if the result is present')
        p.add_argument('--retries', type=cli.number(int, minimum=0), default=3,
                       help='resume attempts after a network failure (default 3)')
        p.add_argument('--quiet', action='store_true', help='no progress bars')
        p.add_argument('--verbose', action='store_true', help="show Caffe's own log (surgery)")

    p = sub.add_parser('data', help='download and unpack datasets into data/')
    p.add_argument('names', nargs='+', choices=list(DATASETS) + ['all'], metavar='DATASET',
                   help=f'{", ".join(DATASETS)} or all')
    p.add_argument('--dest', default=DATA_ROOT, help=f'data root (default {DATA_ROOT})')
    p.add_argument('--remove-archives', action='store_true',
                   help='delete downloaded archives once unpacked')
    downloading(p)
    p.set_defaults(run=cmd_data)

    p = sub.add_parser('weights', help='download ILSVRC nets (and convert them) or '
                                       'published FCN models into their model folders')
    p.add_argument('names', nargs='+', choices=weight_names() + ['published'],
                   metavar='NAME', help='vgg16, caffenet, a model folder (e.g. voc-fcn8s) '
                                        'or published (every published FCN model)')
    p.add_argument('--dest', default=MODELS_ROOT,
                   help=f'models root, holding <model>/ and nets/ilsvrc-nets/ (default {MODELS_ROOT})')
    p.add_argument('--no-convert', action='store_true',
                   help='do not run surgery.py convert on ILSVRC nets')
    p.add_argument('--allow-module', action='append', default=[], metavar='MODULE',
                   help="let the model folder's deploy prototxt name this Python module")
    downloading(p)
    p.set_defaults(run=cmd_weights)

    p = sub.add_parser('classes', help='write data/<dataset>/classes.txt from datasets.py')
    p.add_argument('--dest', default=DATA_ROOT, help=f'data root (default {DATA_ROOT})')
    p.set_defaults(run=cmd_classes)

    p = sub.add_parser('splits', help='(re)write derived splits: seg11valid, NYUD '
                                      'trainval, SIFT Flow trainval/test')
    p.add_argument('--dest', default=DATA_ROOT, help=f'data root (default {DATA_ROOT})')
    p.set_defaults(run=cmd_splits)

    p = sub.add_parser('score-all', help='score every downloaded published model and '
                                         'print the results next to the published figures')
    p.add_argument('--gpu', type=cli.gpu_id, help='GPU id (default: CPU)')
    p.add_argument('--limit', type=cli.number(int, minimum=1),
                   help='score only the first N images of each split')
    p.add_argument('--verbose', action='store_true', help="show Caffe's own log (score.py)")
    p.add_argument('--models', nargs='+', choices=list(MODELS), metavar='MODEL',
                   help='only these model folders')
    p.add_argument('--models-root', default=MODELS_ROOT,
                   help=f'folder holding the model folders (default {MODELS_ROOT})')
    p.add_argument('--scorer', default=REPO / 'score.py', help='the score.py to run')
    p.set_defaults(run=cmd_score_all)

    p = sub.add_parser('sources', help='list every download URL')
    p.set_defaults(run=cmd_sources)
    return parser


def main(argv=None):
    caffe_setup.quiet_caffe_log(argv)
    args = build_parser().parse_args(argv)
    return cli.run('fetch', lambda: args.run(args) or 0,
                   lambda e: 'run the same command again to resume (downloads go on from where '
                             'they stopped)') or 0


if __name__ == '__main__':
    sys.exit(main())
