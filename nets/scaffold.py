"""A model folder for your own data, anywhere: `python -m nets new FOLDER
--data DATA --classes a,b,c [--stride 32|16|8] [--from COARSER_FOLDER] ...`
writes FOLDER/net.py, solve.py and the prototxts; `python solve.py` in it
trains.

The staged recipe: a stride-32 model starts from the ILSVRC trunk (full
width) or from scratch (a narrow trunk, --trunk-width < 1); a stride-16
model starts from the latest weights of a stride-32 folder (--from), a
stride-8 one from a stride-16 folder, and takes its data, classes and trunk
from it. The data path is stored relative to the model folder, so the two
may move together.
"""
import contextlib
import dataclasses
import os

import nets
from common import cli, datasets, locations, outputs
from nets.model import Model, source_code, trunk_strides
from nets.sources import DataFolder, Head
from nets.trunks import SCALABLE_TRUNKS, TRUNK_ALIASES, TRUNKS


class ScaffoldError(cli.InputError):
    """Why a folder cannot be written, in one line."""


# The stride each staged model starts from.
COARSER = {16: 32, 8: 16}
# Solver settings of a full-width trunk from ILSVRC weights: the reference
# release's (FCN-FACTS section 4): SGD, momentum 0.99, summed loss, and a
# base rate a hundred times smaller at each stage.
REFERENCE_SOLVER = dict(solver_type='SGD', momentum=0.99, normalize_loss=False, lr_decay_power=0.0)
REFERENCE_LR = {32: 1e-10, 16: 1e-12, 8: 1e-14}
# A narrow trunk (--trunk-width < 1) has no ILSVRC weights to start from: it
# trains from scratch (He initialisation), with the solver the
# mini-reproduction trains its narrow trunks with (why: minirepro.py, at
# FCN_SOLVER): Adam at 1e-3 on the averaged loss, decaying to zero over the
# run, at every stage.
SCRATCH_SOLVER = dict(solver_type='Adam', momentum=0.9, normalize_loss=True, lr_decay_power=1.0,
                      base_lr=1e-3)
SCRATCH_FILLER = 'msra'
# Model options `new` takes as --options (their help: the field's doc).
SOLVER_OPTIONS = ('max_iter', 'base_lr', 'solver_type', 'momentum', 'normalize_loss', 'iter_size',
                  'weight_decay', 'lr_decay_power', 'learned_upsampling', 'fixed_trunk', 'loss',
                  'loss_sampling')
# Scorings and snapshots: the reference's every 4,000 iterations, but at
# least four in a run.
MIN_SCORINGS = 4


def trunk_name(name):
    """A trunk's name as Model takes it ('alexnet' is 'caffenet')."""
    name = TRUNK_ALIASES.get(name, name)
    if name not in TRUNKS:
        raise ScaffoldError(f'--trunk {name}: trunks are {", ".join([*TRUNKS, *TRUNK_ALIASES])}')
    return name


def new_model(folder, data=None, classes=None, stride=32, trunk=None, trunk_width=None, start=None,
              test_interval=None, **solver):
    """The Model of a new folder at `folder` (not written). `data` is a path
    as the user typed it (relative to the current directory), `classes` a
    sequence of names, `start` the coarser folder (--from); `solver` holds
    Model fields (None: the recipe's default)."""
    folder = os.path.abspath(folder)
    solver = {k: v for k, v in solver.items() if v is not None}
    if stride in COARSER and not start:
        raise ScaffoldError(f'--stride {stride} starts from a trained stride-{COARSER[stride]} '
                            f'model: give --from FOLDER (the staged recipe: 32s, then 16s, then 8s)')
    if stride not in COARSER and start:
        raise ScaffoldError('--from is for --stride 16 (from a 32s folder) or 8 (from a 16s folder); '
                            'a stride-32 model starts from the ILSVRC trunk or from scratch')
    coarser = load_coarser(start, stride) if start else None
    if coarser is not None:
        trunk = trunk_name(trunk) if trunk else coarser.trunk
        trunk_width = coarser.trunk_width if trunk_width is None else trunk_width
        if (trunk, trunk_width) != (coarser.trunk, coarser.trunk_width):
            raise ScaffoldError(f'--from {start}: its trunk is {coarser.trunk} at width '
                                f'{coarser.trunk_width:g}; a finer stage keeps its trunk')
        old = coarser.source.heads[0].classes
        if classes and tuple(classes) != old:
            raise ScaffoldError(f'--classes: --from {start} has the classes {",".join(old)}; '
                                'a finer stage keeps them')
        classes = old
        data_dir = os.path.normpath(os.path.join(coarser.folder, coarser.source.data_dir)) if data is None \
            else os.path.abspath(data)
        mean = coarser.source.mean
        init = (os.path.relpath(coarser.folder, os.path.dirname(folder)),)
        filler = coarser.trunk_filler
    else:
        if not data or not classes:
            raise ScaffoldError('give --data DATA and --classes a,b,c (docs/nets.md: the data format)')
        trunk = trunk_name(trunk or 'vgg16')
        trunk_width = 1.0 if trunk_width is None else trunk_width
        data_dir = os.path.abspath(data)
        mean = datasets.VOC_MEAN  # what the ILSVRC trunks were trained with
        scratch = trunk_width != 1.0
        if scratch and trunk not in SCALABLE_TRUNKS:
            raise ScaffoldError(f'--trunk-width: only {", ".join(SCALABLE_TRUNKS)} scales')
        init, filler = ((), SCRATCH_FILLER) if scratch else ((trunk,), '')
    if stride not in trunk_strides(trunk):
        raise ScaffoldError(f'--stride {stride}: the {trunk} trunk has strides '
                            f'{"/".join(map(str, trunk_strides(trunk)))}')
    if len(set(classes)) != len(classes) or not 1 <= len(classes) <= datasets.VOID:
        raise ScaffoldError(f'--classes: 1 to {datasets.VOID} distinct names, got {",".join(classes)}')
    recipe = dict(SCRATCH_SOLVER if trunk_width != 1.0 else
                  dict(REFERENCE_SOLVER, base_lr=REFERENCE_LR[stride]))
    recipe.update(solver)
    max_iter = recipe.get('max_iter') or DataFolder.max_iter
    val = datasets.layout_of(data_dir).split_file(data_dir, datasets.OWN_SPLITS[1])
    try:
        val_size = len(datasets.split_ids(val))
    except OSError as e:
        raise ScaffoldError(f'--data {data_dir}: cannot read its val split {val} ({e.strerror or e}); '
                            'check it first: python -m nets check-data') from None
    source = DataFolder(data_dir=os.path.relpath(data_dir, folder), heads=(Head('', tuple(classes)),),
                        val_size=max(1, val_size), mean=tuple(mean),
                        test_interval=test_interval or max(1, min(DataFolder.test_interval,
                                                                  max_iter // MIN_SCORINGS)))
    try:
        return Model(source, trunk=trunk, stride=stride, init=init, trunk_width=trunk_width,
                     trunk_filler=filler, **recipe)
    except (TypeError, ValueError) as e:
        raise ScaffoldError(str(e)) from None


def load_coarser(start, stride):
    """The Model of the --from folder, checked to be the previous stage."""
    try:
        coarser = nets.load(start)
    except (OSError, TypeError, SyntaxError, ValueError) as e:
        raise ScaffoldError(f'--from {start}: {e}') from None
    if coarser.stride != COARSER[stride] or not isinstance(coarser.source, DataFolder):
        raise ScaffoldError(f'--from {start}: a stride-{coarser.stride} model on '
                            f'{coarser.source.name}; a stride-{stride} model starts from a '
                            f'stride-{COARSER[stride]} model of your own data')
    return coarser


def write(folder, model, command):
    """Write the model folder: net.py (saying how it was made), solve.py
    (every model folder's), the prototxts. Returns the files written."""
    folder = os.path.abspath(folder)
    if os.path.exists(os.path.join(folder, 'net.py')):
        raise ScaffoldError(f'{folder} already holds a model (net.py): choose a new folder, or '
                            'edit its net.py and run `python net.py`')
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ScaffoldError(f'{folder} is a file, not a folder')
    solve_py = os.path.join(locations.model_dir(SOLVE_PY_FROM), 'solve.py')
    with open(solve_py) as f:
        solve_text = f.read()
    files = {os.path.join(folder, 'net.py'): net_py(model, (
                 f'{os.path.basename(folder)}: FCN-{model.stride}s on your own data, written by\n'
                 f'    {command}\nEdit it, then `python net.py` rewrites the prototxts; '
                 '`python solve.py` trains (docs/nets.md).')),
             os.path.join(folder, 'solve.py'): solve_text,
             **{os.path.join(folder, name): text for name, text in model.prototxts().items()}}
    # Through the output guard, every file before any is written: never
    # into a planted link, never onto what it reads.
    outputs.guard([(path, os.path.basename(path)) for path in files],
                  [(solve_py, 'the solve.py it copies')])
    made_folder = not os.path.isdir(folder)
    written = []
    try:
        os.makedirs(folder, exist_ok=True)
        for path, text in files.items():
            outputs.write_atomically(path, text, os.path.basename(path))
            written.append(path)
    except BaseException:
        # A folder is written whole or not at all (a full disk, a signal):
        # the files of this run go again, and the folder if it made it.
        for path in written:
            with contextlib.suppress(OSError):
                os.remove(path)
        if made_folder:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise
    return [os.path.basename(path) for path in files]


# Every model folder's solve.py is the same file: a new folder gets this one's.
SOLVE_PY_FROM = 'voc-fcn32s'


def net_py(model, doc):
    """A net.py defining `model`, one option a line (the fields that
    differ from their defaults, as nets.model.source_code gives them)."""
    source = _keywords(model.source)
    rest = _keywords(model)[1:]  # source first, as `data`
    lines = [f'"""{doc}"""', 'from nets import DataFolder, Head, Model', '',
             'data = DataFolder(' + (',\n' + ' ' * 18).join(source) + ')', '',
             'model = Model(data,\n' + ''.join(f'              {arg},\n' for arg in rest)
             + '              )', '', "if __name__ == '__main__':", '    model.write(__file__)', '']
    return '\n'.join(lines)


def _keywords(value):
    """['field=code', ...] of a dataclass's fields that differ from their defaults."""
    out = []
    for f in dataclasses.fields(value):
        v = getattr(value, f.name)
        if not f.compare or (f.default is not dataclasses.MISSING and v == f.default):
            continue
        out.append(f'{f.name}={source_code(v)}')
    return out


def option_fields():
    """{option: the Model field} of SOLVER_OPTIONS."""
    fields = {f.name: f for f in dataclasses.fields(Model)}
    return {name: fields[name] for name in SOLVER_OPTIONS}
