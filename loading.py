"""The one way every command loads a model (infer, score, export, surgery,
solve, the benchmark): each part is checked here, in Python, before Caffe
sees it, because Caffe aborts on a mistake ("Check failed") naming no file,
or imports whatever module a prototxt names.

    model(folder)                  net.py run, a mistake named by file and line
    check_fresh(model, names)      the generated prototxts match net.py
    check_net(path, phases, allow) a net prototxt: parses (file, line and
                                   column of a typo), layer types Caffe has,
                                   inputs written before they are read, and
                                   Python layers of allowed modules only
    deploy(folder, allow)          a model folder's deploy net, all of the above
    default_weights(folder, name)  the weights a model has, announced as name's, with advice that
                                   fits the command (weightfiles.resolve)

Every failure is a LoadError: one line naming the file (and line) at fault.
The weights themselves are checked by common/weightfiles.py as Caffe reads
them (engines.py, training, score).
"""
import os

import caffe
from caffe.proto import caffe_pb2

import layers
import nets
from common import cli, locations, prototxts, weightfiles
from common.snapshots import SnapshotError

# The Python modules a prototxt may name without --allow-module: the
# project's data layers, under their own name and the release's.
ALLOWED_MODULES = ('layers',) + layers.RELEASE_MODULES


class LoadError(cli.InputError):
    """A model part that cannot be loaded; the message names the file (and
    line) and what to do."""


def model(folder):
    """The Model of a folder's net.py (nets.load: a mistake in net.py named
    by file and line), as a LoadError."""
    try:
        return nets.load(folder)
    except (nets.NetPyError, FileNotFoundError) as e:
        raise LoadError(str(e)) from None


def has_net_py(folder):
    return os.path.isfile(os.path.join(locations.model_folder(folder), 'net.py'))


def check_fresh(model, names):
    """The model folder's prototxts `names` (e.g. deploy.prototxt) are what
    its net.py defines now: not missing, not older than an edit of net.py,
    not edited by hand (a generated file is regenerated, not edited)."""
    generated = {os.path.join(model.folder, name): text for name, text in model.prototxts().items()
                 if name in names}
    for path in nets.stale(generated):
        problem = 'is missing' if not os.path.exists(path) else \
            'differs from what net.py defines (net.py edited since it was written?)'
        again = f' (or `python -m nets {model.name}`)' \
            if os.path.abspath(locations.model_dir(model.name)) == model.folder else ''
        raise LoadError(f'{path} {problem}: regenerate the prototxts with `python net.py` in '
                        f'{model.folder}{again}')


def check_modules(path, net_param, allow=()):
    """Every Python layer of `net_param` (read from `path`) names a module
    of ALLOWED_MODULES or `allow`: Caffe would import any other one (running
    its code) while building the net, before anything could refuse it."""
    allowed = set(ALLOWED_MODULES) | set(allow)
    for layer in list(net_param.layer):
        if layer.type != 'Python':
            continue
        line = prototxts.line_of_layer(path, layer.name)
        if layer.python_param.module in ALLOWED_MODULES:
            cls = getattr(layers, layer.python_param.layer, None)
            if not (isinstance(cls, type) and issubclass(cls, caffe.Layer)):
                raise LoadError(f'{path}:{f"{line}:" if line else ""} layer "{layer.name}": '
                                f'{layer.python_param.module} has no layer '
                                f'"{layer.python_param.layer}"')
            continue
        if layer.python_param.module in allowed:
            continue
        raise LoadError(f'{path}:{f"{line}:" if line else ""} layer "{layer.name}" names the Python '
                        f'module "{layer.python_param.module}", not one of the project\'s '
                        f'({", ".join(ALLOWED_MODULES)}); if you trust it, pass --allow-module '
                        f'{layer.python_param.module}')


def check_net(path, phases=(caffe_pb2.TEST,), allow=()):
    """The NetParameter of the net prototxt at `path`, checked as a whole
    (prototxts.check_net, then check_modules)."""
    if not os.path.isfile(path):
        raise LoadError(f'no such net: {path}')
    try:
        net_param = prototxts.check_net(path, phases)
    except prototxts.PrototxtError as e:
        raise LoadError(str(e)) from None
    check_modules(path, net_param, allow)
    return net_param


def folder_model(folder):
    """(absolute model folder, its Model or None where it has no net.py),
    net.py run and checked (model)."""
    folder = os.path.abspath(locations.model_folder(folder))
    if not os.path.isdir(folder):
        raise LoadError(f'no model folder {folder}; model folders are {", ".join(nets.model_names())}')
    return folder, (model(folder) if has_net_py(folder) else None)


def deploy(folder, allow=()):
    """(Model or None, deploy prototxt path) of a model folder, every part
    checked: net.py, the deploy prototxt fresh and sound."""
    folder, m = folder_model(folder)
    path = locations.deploy_prototxt(folder)
    check_net(path, allow=allow)  # first: a typo is named by its line, not as "stale"
    if m is not None:
        check_fresh(m, [locations.DEPLOY_PROTOTXT])
    return m, path


def default_weights(model_folder, name=None):
    """The weights a command runs without --weights: the published
    caffemodel if fetched, else the latest snapshot (weightfiles.resolve),
    announced on stdout as `name: weights W (its default)` where a `name`
    is given. A LoadError says how to get weights, with advice for a
    command that takes --weights (not --resume)."""
    try:  # not announced on stderr, which holds only a failure's one line
        weights = weightfiles.resolve(model_folder, prefer='published', announce=False)
    except weightfiles.WeightsError as e:
        raise LoadError(f'{e} (or pass --weights)') from None
    except SnapshotError as e:
        raise LoadError(f'{getattr(e, "problem", None) or e}; pass --weights FILE (a caffemodel)') from None
    if name:
        print(f'{name}: weights {weights} (its default)')
    return weights
