"""solve.py that cannot lose work or leave half a file: one run per model
folder, Ctrl-C and SIGTERM (repeated, at random moments, during a snapshot
write), and every mistake in its inputs refused before Caffe sees it, in
one line, with nothing written. The real solve.py of a small model folder;
checks that end before any net is built run its main() in this process."""
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import training
from common import caffe_setup, locations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tools'))
import resume_trials  # noqa: E402  (tools/ is not a package)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('trust'))
    return root, resume_trials.make_workspace(root)


@pytest.fixture
def folder(workspace, tmp_path):
    """A fresh copy of the model folder, beside the data."""
    root, template = workspace
    return resume_trials.fresh_copy(template, root, f'model-{tmp_path.name}')


def tree(folder):
    """{relative path: bytes} of every file under `folder`."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                out[os.path.relpath(path, folder)] = os.readlink(path)
                continue
            with open(path, 'rb') as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def solve_here(folder, *argv, capsys):
    """training.main (solve.py) in this process: (exit status, stderr)."""
    capsys.readouterr()
    with locations.working_dir(folder):
        try:
            training.main(folder, [str(a) for a in argv])
            code = 0
        except SystemExit as e:
            code = e.code
    err = capsys.readouterr().err
    if isinstance(code, str):  # sys.exit('message'): Python prints it, status 1
        err, code = err + code + '\n', 1
    return code, err


def refused(folder, argv, capsys, code=1):
    """Run solve.py with `argv`; it must end with status `code`, one line on
    stderr and nothing written. Returns the line."""
    before = tree(folder)
    got, err = solve_here(folder, *argv, capsys=capsys)
    lines = err.strip().splitlines()
    assert got == code and len(lines) == 1, (got, err)
    assert tree(folder) == before
    return lines[0]


def edit(path, old, new):
    with open(path) as f:
        text = f.read()
    assert old in text, (old, path)
    with open(path, 'w') as f:
        f.write(text.replace(old, new))
    return text.replace(old, new)


def line_number(text, start):
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(start))


# ----------------------------------------------------------- inputs, before Caffe

SOLVER_CASES = {
    # case: (text in solver.prototxt, its replacement, what the line says after the
    # file's path, given the new text: ":line:column: ..." or ":line: ...")
    'a misspelt field': ('base_lr:', 'base_lrr:', lambda t: (
        f':{line_number(t, "base_lrr")}:1: Message type "caffe.SolverParameter" has no field '
        'named "base_lrr".')),
    'a field set twice': ('momentum: 0.9\n', 'momentum: 0.9\nmomentum: 0.95\n', lambda t: (
        f':{line_number(t, "momentum: 0.95")}:11: Message type "caffe.SolverParameter" should '
        'not have multiple "momentum" fields.')),
    'a number that is not one': ('base_lr: 0.001', 'base_lr: 0.001x', lambda t: (
        f":{line_number(t, 'base_lr')}:10: 'base_lr: 0.001x': Couldn't parse float: 0.001x")),
    'an unknown solver type': ('momentum: 0.9\n', 'momentum: 0.9\ntype: "SDG"\n', lambda t: (
        f':{line_number(t, "type")}: type "SDG" is not a Caffe solver; the solvers are SGD, '
        'Nesterov, AdaGrad, RMSProp, AdaDelta, Adam')),
    'an unknown lr_policy': ('lr_policy: "fixed"', 'lr_policy: "linear"', lambda t: (
        f':{line_number(t, "lr_policy")}: lr_policy "linear" is not a Caffe learning rate '
        'policy; the policies are fixed, step, exp, inv, multistep, poly, sigmoid')),
    'a negative base_lr': ('base_lr: 0.001', 'base_lr: -0.001', lambda t: (
        f':{line_number(t, "base_lr")}: base_lr: -0.001 must be a positive number')),
    'step without a stepsize': ('lr_policy: "fixed"', 'lr_policy: "step"', lambda t: (
        ': lr_policy "step" needs a positive stepsize (it is 0)')),
    'a train_net that is not there': ('train_net: "train.prototxt"', 'train_net: "trian.prototxt"',
                                      lambda t: f':{line_number(t, "train_net")}: train_net '
                                                '"trian.prototxt": no such file {folder}/trian.prototxt'),
}


@pytest.mark.parametrize('case', SOLVER_CASES)
def test_solver_prototxt_mistakes_are_named_with_file_and_line(folder, capsys, case):
    """A hand-edited solver.prototxt: one line naming the file, the line
    (and column), and what Caffe takes; nothing left in the folder."""
    old, new, message = SOLVER_CASES[case]
    path = os.path.join(folder, 'solver.prototxt')
    text = edit(path, old, new)
    line = refused(folder, ['--cpu', '--max-iter', 1], capsys)
    assert line == f'solve.py: error: {path}{message(text).format(folder=folder)}'


NET_CASES = {
    # case: (text in val.prototxt, its replacement, what the line says after "<file>: ")
    'a layer type Caffe lacks': ('type: "Crop"', 'type: "Cropp"', (
        'layer "{layer}" has type "Cropp", which this Caffe does not have; its layer types are ')),
    'an input no layer writes': ('bottom: "data"', 'bottom: "dta"', (
        'layer "{layer}" reads "dta", which no layer before it writes (in the TEST net)')),
}


@pytest.mark.parametrize('case', NET_CASES)
def test_net_mistakes_caffe_aborts_on_are_named_first(folder, capsys, case):
    """A net the solver names (a copy of val.prototxt, edited) with what
    Caffe aborts on: one line naming the file and the layer."""
    old, new, message = NET_CASES[case]
    other = os.path.join(folder, 'other.prototxt')
    with open(os.path.join(folder, 'val.prototxt')) as f:
        text = f.read()
    with open(other, 'w') as f:
        f.write(text.replace(old, new, 1))
    layer = text[:text.index(old)].rsplit('name: "', 1)[1].split('"')[0]
    edit(os.path.join(folder, 'solver.prototxt'), 'test_net: "val.prototxt"',
         'test_net: "other.prototxt"')
    line = refused(folder, ['--cpu', '--max-iter', 1], capsys)
    at = line_number(text, f'  name: "{layer}"')
    assert line.startswith(f'solve.py: error: {other}:{at}: {message.format(layer=layer)}'), line


NET_PY_CASES = {
    # case: (text in net.py, its replacement, the line after "<net.py>:")
    # (the line number, and the line's text)
    'a syntax error': ("trunk='vgg16'", "trunk='vgg16' stride=16", lambda n, text: (
        f"{n}:{text.index(chr(39) + 'vgg16') + 1}: invalid syntax. Perhaps you forgot a comma?")),
    'a value Model refuses': ("trunk='vgg16'", "trunk='vgg16', loss='hinge'", lambda n, text: (
        f"{n}: ValueError: Model: loss must be 'softmax' or 'sigmoid', got 'hinge'")),
}


@pytest.mark.parametrize('case', NET_PY_CASES)
def test_net_py_mistakes_are_named_with_file_and_line(folder, capsys, case):
    old, new, message = NET_PY_CASES[case]
    path = os.path.join(folder, 'net.py')
    text = edit(path, old, new)
    n = line_number(text, 'model = ')
    assert refused(folder, ['--cpu'], capsys) == \
        f'solve.py: error: {path}:{message(n, text.splitlines()[n - 1])}'


def test_repository_models_also_name_python_m_nets(tmp_path, monkeypatch, capsys):
    """A model folder of the repository (here a copy, the models directory
    moved): `python -m nets NAME` writes its prototxts too."""
    monkeypatch.setattr(locations, 'MODELS_DIR', str(tmp_path))
    folder = str(tmp_path / 'voc-fcn8s')
    shutil.copytree(os.path.join(REPO, 'voc-fcn8s'), folder)
    edit(os.path.join(folder, 'net.py'), 'stride=8', 'stride=16')
    assert refused(folder, ['--cpu'], capsys) == (
        f'solve.py: error: {folder}/train.prototxt differs from what net.py defines (net.py edited since '
        f'it was written?): regenerate the prototxts with `python net.py` in {folder} (or '
        '`python -m nets voc-fcn8s`)')


def test_a_file_where_the_snapshot_folder_goes_is_refused(folder, capsys):
    snapshot = os.path.join(folder, 'snapshot')
    with open(snapshot, 'w') as f:
        f.write('notes\n')
    assert refused(folder, ['--cpu', '--max-iter', 1], capsys) == (
        f'solve.py: error: the snapshot folder {snapshot} is a file, not a folder: move it away '
        '(snapshots, latest.json and the training log go there)')
    os.remove(snapshot)
    os.symlink(os.path.join(folder, 'gone'), snapshot)
    assert refused(folder, ['--cpu', '--max-iter', 1], capsys) == (
        f'solve.py: error: the snapshot folder {snapshot} is a link to {folder}/gone, which does not exist')


def test_a_read_only_snapshot_folder_is_refused(folder, capsys):
    """A read-only filesystem (a real mount: root writes through permission
    bits, not through a read-only mount)."""
    snapshot = os.path.join(folder, 'snapshot')
    os.makedirs(snapshot)
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', snapshot],
                      capture_output=True).returncode != 0:
        pytest.skip('mounting a filesystem needs root')
    try:
        assert refused(folder, ['--cpu', '--max-iter', 1], capsys) == (
            f'solve.py: error: cannot write into the snapshot folder {snapshot}: Read-only file system '
            f'({snapshot})')
    finally:
        subprocess.run(['umount', snapshot])


OPTION_CASES = {
    '--gpu -1': 'argument --gpu: must be 0 or more, got -1',
    '--gpu one': "argument --gpu: an integer expected, got 'one'",
    '--gpu 0,0': 'argument --gpu: 0,0: a GPU named twice; give each id once',
    '--max-iter 0': 'argument --max-iter: must be 1 or more, got 0',
    '--test-interval -4': 'argument --test-interval: must be 1 or more, got -4',
    '--val-limit 0': 'argument --val-limit: must be 1 or more, got 0',
    '--max-iter 4294967296': 'argument --max-iter: must be 2147483647 or less, got 4294967296',
    '--max-iter 1.5': "argument --max-iter: an integer expected, got '1.5'",
    '--weights w.caffemodel --resume': "--weights and --resume: a resumed run continues with its "
                                       "snapshot's weights; give one of them",
}


@pytest.mark.parametrize('case', OPTION_CASES)
def test_options_out_of_range_are_one_line(folder, capsys, case):
    assert refused(folder, case.split(), capsys, code=2) == \
        f'solve.py: error: {OPTION_CASES[case]} (see --help)'


def test_gpu_on_a_caffe_without_cuda_is_one_line(folder, capsys):
    if caffe_setup.cuda_available():
        pytest.skip('this Caffe has CUDA')
    assert refused(folder, ['--gpu', '0'], capsys, code=2) == (
        'solve.py: error: argument --gpu: GPU 0: this Caffe is built for the CPU only (no CUDA); '
        'leave out --gpu to run on the CPU (see --help)')


# ----------------------------------------------------------- runs and signals

def wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f'{path} did not appear'
        time.sleep(0.002)


def test_one_run_per_folder_and_the_lock_outlives_no_process(folder):
    """A second solve.py in a folder being trained refuses, naming the
    first one's process id, and writes nothing; the first one, sent SIGTERM
    twice, ends with its snapshot; after a kill -9 the OS lets go of the
    lock, and training goes on."""
    snapshot = os.path.join(folder, 'snapshot')
    first = resume_trials.solve(folder, '--max-iter', 100000, '--test-interval', 4, wait=False)
    wait_for(os.path.join(snapshot, 'train_iter_4.json'), first)
    lock = os.path.join(snapshot, 'solve.lock')
    with open(lock) as f:
        assert f.read() == f'{first.pid}\n'
    second = resume_trials.solve(folder, '--max-iter', 100000, '--resume')
    assert second.returncode == 1, second.err
    assert second.err.strip().splitlines() == [
        f'solve.py: error: another solve.py (process {first.pid}) is training in {folder}: wait for it to '
        f'end, or stop it (kill {first.pid}) and --resume']
    with open(lock) as f:
        assert f.read() == f'{first.pid}\n'
    first.send_signal(signal.SIGTERM)
    first.send_signal(signal.SIGTERM)
    first.out, first.err = first.communicate(timeout=120)
    latest = resume_trials.check_interrupted(first, folder, signal.SIGTERM)
    assert latest['iteration'] >= 4 and not os.path.exists(lock)

    killed = resume_trials.solve(folder, '--max-iter', 100000, '--test-interval', 4, '--resume',
                                 wait=False)
    wait_for(lock, killed)
    killed.kill()
    killed.communicate()
    assert os.path.exists(lock)  # left behind, but no process holds it
    end = latest['iteration'] + 1
    after = resume_trials.solve(folder, '--max-iter', end, '--test-interval', 4, '--resume')
    assert after.returncode == 0, after.err
    assert training.Snapshots(snapshot).latest(full=True)['iteration'] == end
    assert not os.path.exists(lock)


def test_resuming_past_max_iter_is_refused_before_any_net(folder, capsys):
    run = resume_trials.solve(folder, '--max-iter', 2, '--test-interval', 2)
    assert run.returncode == 0, run.err
    assert refused(folder, ['--cpu', '--max-iter', 1, '--resume'], capsys) == (
        'solve.py: error: --max-iter 1: training resumes at iteration 2, past it; give a larger --max-iter')


def send(proc, signals, rng):
    """Send each signal, a random 0-0.2 s apart."""
    for i, signum in enumerate(signals):
        if i:
            time.sleep(rng.uniform(0, 0.2))
        if proc.poll() is None:
            proc.send_signal(signum)


def test_repeated_signals_at_random_moments_keep_the_work(folder):
    """SIGTERM and Ctrl-C, two or three at a time, from a random moment
    (loading, building nets, a step, scoring, a snapshot): one line naming
    latest.json's snapshot, which is whole and the newest written, or
    nothing written at all; exit 130 or 143. Three tries."""
    rng = random.Random()
    snapshot = os.path.join(folder, 'snapshot')
    for _ in range(3):
        shutil.rmtree(snapshot, ignore_errors=True)
        proc = resume_trials.solve(folder, '--max-iter', 100000, '--test-interval', 2, wait=False)
        resume_trials.wait_until_it_handles_signals(proc)
        time.sleep(rng.uniform(0, 6))
        signals = [rng.choice([signal.SIGINT, signal.SIGTERM]) for _ in range(rng.randint(2, 3))]
        send(proc, signals, rng)
        proc.out, proc.err = proc.communicate(timeout=120)
        resume_trials.check_interrupted(proc, folder, signals[0])


def test_signals_while_a_snapshot_is_written_name_it(folder):
    """Signals sent the moment Caffe starts writing a snapshot: that
    snapshot is finished and named by latest.json (never a whole pair
    left unnamed, which --resume could not use). Two tries."""
    rng = random.Random()
    snapshot = os.path.join(folder, 'snapshot')
    for _ in range(2):
        shutil.rmtree(snapshot, ignore_errors=True)
        proc = resume_trials.solve(folder, '--max-iter', 100000, '--test-interval', 2, wait=False)
        wait_for(os.path.join(snapshot, 'train_iter_2.caffemodel'), proc)
        send(proc, [signal.SIGTERM, signal.SIGTERM, signal.SIGINT], rng)
        proc.out, proc.err = proc.communicate(timeout=120)
        latest = resume_trials.check_interrupted(proc, folder, signal.SIGTERM)
        assert latest['iteration'] in (2, 3)  # that snapshot, or one step later


def test_a_snapshot_rewritten_is_never_named_half_written(folder):
    """Resumed from an older snapshot, training writes the same iteration's
    files again: latest.json names the older snapshot meanwhile, so a kill
    -9 in the middle leaves a latest.json whose files are whole."""
    snapshot = os.path.join(folder, 'snapshot')
    run = resume_trials.solve(folder, '--max-iter', 4, '--test-interval', 2)
    assert run.returncode == 0, run.err
    again = resume_trials.solve(folder, '--max-iter', 4, '--test-interval', 2, '--resume',
                                os.path.join(snapshot, 'train_iter_2.solverstate'), wait=False)
    manifest = os.path.join(snapshot, 'train_iter_4.json')
    deadline = time.time() + 120
    while os.path.exists(manifest):  # gone: the rewrite of iteration 4 has begun
        assert again.poll() is None and time.time() < deadline, again.communicate()
        time.sleep(0.001)
    again.kill()
    again.communicate()
    latest = training.Snapshots(snapshot).latest(full=True)  # whole, or this raises
    assert latest['iteration'] in (2, 4)
    after = resume_trials.solve(folder, '--max-iter', 4, '--test-interval', 2, '--resume')
    assert after.returncode == 0, after.err
    assert training.Snapshots(snapshot).latest(full=True)['iteration'] == 4


@pytest.fixture
def user_folder(workspace):
    """A copy of the model folder and its data where a user other than root
    can read them (root writes through permission bits: the checks of
    what a user cannot write need a user). Skips unless run as root."""
    if os.geteuid() != 0 or shutil.which('setpriv') is None or \
            subprocess.run(as_user([sys.executable, '-c', 'pass'])).returncode != 0:
        pytest.skip('running a command as another user needs root and setpriv')
    root = tempfile.mkdtemp(prefix='fcn-user-')
    try:
        shutil.copytree(os.path.join(workspace[0], 'data'), os.path.join(root, 'data'))
        folder = resume_trials.fresh_copy(workspace[1], root, 'model')
        for dirpath, dirs, files in os.walk(root):
            os.chmod(dirpath, 0o755)
            for name in files:
                os.chmod(os.path.join(dirpath, name), 0o644)
        home = os.path.join(root, 'home')
        os.makedirs(home)
        os.chown(home, NOBODY, NOBODY)
        yield folder, home
    finally:
        shutil.rmtree(root)


NOBODY = 65534


def as_user(argv):
    """`argv` run as the user nobody, without root's groups."""
    return ['setpriv', f'--reuid={NOBODY}', f'--regid={NOBODY}', '--clear-groups', *argv]


def solve_as_user(folder, home, *argv):
    return subprocess.run(as_user([sys.executable, 'solve.py', '--cpu', *map(str, argv)]),
                          cwd=folder, env=dict(os.environ, HOME=home), capture_output=True,
                          text=True, timeout=120)


def test_folders_a_user_cannot_write_are_refused_before_training(user_folder):
    """A snapshot folder the user cannot write, and a model folder (where
    it would be made) they cannot write: one line each, nothing written."""
    folder, home = user_folder
    snapshot = os.path.join(folder, 'snapshot')
    os.makedirs(snapshot, mode=0o555)
    os.chmod(snapshot, 0o555)
    run = solve_as_user(folder, home, '--max-iter', 1)
    assert run.returncode == 1 and run.stderr.splitlines() == [
        f'solve.py: error: cannot write into the snapshot folder {snapshot}: Permission denied ({snapshot})']
    os.rmdir(snapshot)
    os.chmod(folder, 0o555)
    before = tree(folder)
    run = solve_as_user(folder, home, '--max-iter', 1)
    assert run.returncode == 1 and run.stderr.splitlines() == [
        f'solve.py: error: cannot write into the snapshot folder {snapshot}: Permission denied ({folder})']
    assert tree(folder) == before


def test_two_different_signals_at_once_end_in_one_line(folder):
    """Ctrl-C and SIGTERM together (both pending when Python looks): the
    first one's line only, no report of the second. Two tries."""
    snapshot = os.path.join(folder, 'snapshot')
    for _ in range(2):
        shutil.rmtree(snapshot, ignore_errors=True)
        proc = resume_trials.solve(folder, '--max-iter', 100000, '--test-interval', 2, wait=False)
        wait_for(os.path.join(snapshot, 'train_iter_2.json'), proc)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGTERM)
        proc.out, proc.err = proc.communicate(timeout=120)
        resume_trials.check_interrupted(proc, folder, signal.SIGINT)
