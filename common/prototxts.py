"""Caffe's text files, net and solver prototxts, read and checked in Python
before Caffe sees them: Caffe aborts on a typo, on a solver type or policy
it does not know, or on a layer that reads a blob nothing writes, and names
no file. Here each is a PrototxtError: one line naming the file, the line
(and column) and what is expected.
"""
import math
import os
import re

import caffe
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from common import locations
from common.snapshots import HISTORY_PER_PARAM


class PrototxtError(ValueError):
    """A prototxt Caffe would abort on; the message names file and line."""


# Caffe's learning rate policies (sgd_solver.cpp); its solver types are
# HISTORY_PER_PARAM's keys.
LR_POLICIES = ('fixed', 'step', 'exp', 'inv', 'multistep', 'poly', 'sigmoid')


def _line_of(text, field):
    """The line number of `field`'s last setting in a prototxt's text, for
    messages (0 if it is not set there)."""
    found = [i for i, line in enumerate(text.splitlines(), 1)
             if re.match(rf'\s*{field}\s*:', line)]
    return found[-1] if found else 0


def read(path, message):
    """Parse the prototxt at `path` into `message` the way Caffe does (a
    field set twice is an error); a typo is one PrototxtError naming the
    file, line and column. Returns the text."""
    try:
        with open(path) as f:
            text = f.read()
        text_format.Parse(text, message)
    except OSError as e:
        raise PrototxtError(f'{path}: {e.strerror}') from None
    except text_format.ParseError as e:
        where = f'{e.GetLine()}:{e.GetColumn()}:' if e.GetLine() else ''
        problem = re.sub(r'^\d+:\d+ : ', '', str(e))
        raise PrototxtError(f'{path}:{where} {problem}') from None
    return text


def read_solver(path):
    """The SolverParameter of a solver.prototxt, checked before Caffe sees it
    (Caffe aborts on what it cannot use): a known solver type and learning
    rate policy, rates that make sense, net files that exist and parse.
    Raises PrototxtError naming the file, line and what is expected."""
    param = caffe_pb2.SolverParameter()
    text = read(path, param)

    def bad(field, problem):
        line = _line_of(text, field)
        return PrototxtError(f'{path}:{f"{line}:" if line else ""} {problem}')

    if param.type not in HISTORY_PER_PARAM:
        raise bad('type', f'type "{param.type}" is not a Caffe solver; the solvers are '
                  f'{", ".join(HISTORY_PER_PARAM)}')
    if param.lr_policy not in LR_POLICIES:
        raise bad('lr_policy', f'lr_policy "{param.lr_policy}" is not a Caffe learning rate policy; '
                  f'the policies are {", ".join(LR_POLICIES)}')
    for field, ok, expected in (
            ('base_lr', lambda v: v > 0, 'a positive number'),
            ('momentum', lambda v: 0 <= v <= 1, 'between 0 and 1'),
            ('weight_decay', lambda v: v >= 0, '0 or more'),
            ('iter_size', lambda v: v >= 1, '1 or more'),
            ('power', lambda v: v >= 0, '0 or more')):
        value = getattr(param, field)
        if not (math.isfinite(value) and ok(value)):
            raise bad(field, f'{field}: {value:g} must be {expected}')
    if param.lr_policy == 'step' and param.stepsize <= 0:
        raise bad('stepsize', f'lr_policy "step" needs a positive stepsize (it is {param.stepsize})')
    if not (param.train_net or param.net):
        raise bad('train_net', 'no train_net (or net): the solver names no net to train')
    folder = os.path.dirname(path)
    named = [('train_net', param.train_net, [caffe_pb2.TRAIN]),
             ('net', param.net, [caffe_pb2.TRAIN, caffe_pb2.TEST])] + \
        [('test_net', name, [caffe_pb2.TEST]) for name in param.test_net]
    for field, net_file, phases in named:
        if not net_file:
            continue
        net_path = os.path.join(folder, net_file)  # Caffe opens them from the model folder
        if not os.path.isfile(net_path):
            raise bad(field, f'{field} "{net_file}": no such file {net_path}')
        check_net(net_path, phases)
    if not param.snapshot_prefix:  # Caffe would write "_iter_N.caffemodel" in the folder
        param.snapshot_prefix = f'{locations.SNAPSHOT_DIR}/{locations.SNAPSHOT_PREFIX}'
    return param


def check_net(path, phases=(caffe_pb2.TEST,)):
    """The NetParameter of the net prototxt at `path`, checked: it parses,
    each of its layers has a type this Caffe has, and in each phase each
    layer's inputs (bottoms) are outputs (tops) of a layer before it (Caffe
    aborts on anything else)."""
    net = read_net(path)
    known = set(caffe.layer_type_list())
    for layer in net.layer:
        if layer.type not in known:
            raise PrototxtError(f'{path}:{_at(path, layer.name)} layer "{layer.name}" has type '
                                f'"{layer.type}", which this Caffe does not have; its layer types '
                                f'are {", ".join(sorted(known))}')
    for phase in phases:
        tops = set(net.input)
        for layer in (layer for layer in net.layer if _in_phase(layer, phase)):
            for bottom in layer.bottom:
                if bottom not in tops:
                    raise PrototxtError(
                        f'{path}:{_at(path, layer.name)} layer "{layer.name}" reads "{bottom}", which '
                        f'no layer before it writes (in the {caffe_pb2.Phase.Name(phase)} net)')
            tops.update(layer.top)
    return net


def line_of_layer(path, name):
    """The line of the layer called `name` (its `name: "..."` line) in a
    prototxt, for messages (0 if not found)."""
    try:
        with open(path) as f:
            for i, line in enumerate(f, 1):
                if re.fullmatch(rf'\s*name\s*:\s*"{re.escape(name)}"\s*', line):
                    return i
    except OSError:
        pass
    return 0


def _at(path, name):
    """'N:' for the line of layer `name` (line_of_layer), '' if unknown."""
    line = line_of_layer(path, name)
    return f'{line}:' if line else ''


def _in_phase(layer, phase):
    """Whether `layer` is in the net of `phase` (Caffe's include/exclude
    rules, for the solver's default state: level 0, no stages)."""
    def meets(rule):
        return (not rule.HasField('phase') or rule.phase == phase) and \
            rule.min_level <= 0 and (not rule.HasField('max_level') or rule.max_level >= 0) and \
            not rule.stage
    if layer.include:
        return any(meets(rule) for rule in layer.include)
    return not any(meets(rule) for rule in layer.exclude)


def read_net(path):
    """The NetParameter of the net prototxt at `path` (read())."""
    net = caffe_pb2.NetParameter()
    read(path, net)
    return net


def layer_names(path):
    """The layer names of a net prototxt, current and V1 format."""
    net = read_net(path)
    return {layer.name for layer in list(net.layer) + list(net.layers)}
