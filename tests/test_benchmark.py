"""tools/benchmark.py on a narrow model folder: it runs the real nets and
reports figures that hang together (it asserts nothing itself)."""
import importlib.util
import json
import os

import pytest

import nets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET_PY = '''\
from nets import VOC, Model

model = Model(VOC(), trunk='vgg16', stride=8, base_lr=1e-3, init=(), trunk_width=1 / 32,
              trunk_filler='msra', {extra})
'''


@pytest.fixture(scope='module')
def benchmark():
    spec = importlib.util.spec_from_file_location('benchmark', os.path.join(REPO, 'tools', 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_model(root, name, extra=''):
    folder = os.path.join(root, name)
    os.makedirs(folder)
    with open(os.path.join(folder, 'net.py'), 'w') as f:
        f.write(NET_PY.format(extra=extra))
    nets.load(folder).write(folder)
    return folder


def test_benchmark_reports_speed_and_memory(benchmark, tmp_path, capsys):
    softmax = tiny_model(tmp_path, 'tiny-fcn8s')
    sigmoid = tiny_model(tmp_path, 'tiny-fcn8s-sigmoid', extra="loss='sigmoid'")
    out = tmp_path / 'bench.json'
    benchmark.main(['--models', softmax, sigmoid, '--sizes', '37', '90', '--iters', '1',
                    '--json', str(out)])
    report = json.loads(out.read_text())
    results = report['results']
    assert [(r['model'], r['size']) for r in results] == [
        ('tiny-fcn8s', 37), ('tiny-fcn8s', 90), ('tiny-fcn8s-sigmoid', 37), ('tiny-fcn8s-sigmoid', 90)]
    for r in results:
        for timing in (r['forward'], r['train']):
            assert 0 < timing['best_ms'] <= timing['mean_ms']
        assert r['train_memory_mib'] > 2 * r['activations_mib']
    small, large = results[:2]
    assert small['params_mib'] == large['params_mib'] > 0
    assert large['activations_mib'] > small['activations_mib']
    printed = capsys.readouterr().out
    assert 'forward ms' in printed and printed.count('tiny-fcn8s') >= 4
    assert report['device'].startswith('CPU')
    # inference only
    only = benchmark.main(['--models', softmax, '--sizes', '33', '--iters', '1', '--no-backward'])
    assert 'train' not in only[0] and only[0]['forward']['mean_ms'] > 0
