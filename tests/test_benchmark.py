"""tools/benchmark.py on a narrow model folder: it runs the real nets and
reports figures that hang together (it asserts nothing itself)."""
import importlib.util
import json
import os

import pytest

from conftest import write_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
@pytest.fixture(scope='module')
def benchmark():
    spec = importlib.util.spec_from_file_location('benchmark', os.path.join(REPO, 'tools', 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_reports_speed_and_memory(benchmark, tmp_path, capsys):
    softmax = write_model(tmp_path / 'tiny-fcn8s', stride=8)
    sigmoid = write_model(tmp_path / 'tiny-fcn8s-sigmoid', stride=8, extra=", loss='sigmoid'")
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
