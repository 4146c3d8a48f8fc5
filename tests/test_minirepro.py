"""The offline mini-reproduction, shortened (--quick), runs end to end with
the project's own nets, layers, surgery, training, score and infer."""
import json
import os

import minirepro


def test_quick_minirepro_writes_every_artefact(tmp_path):
    out = tmp_path / 'mini'
    minirepro.main(['--quick', '--seeds', '1', '--out', str(out)])
    for name in ('table.md', 'results.json', 'curves.png', 'figure4.png'):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    with open(out / 'results.json') as f:
        results = json.load(f)
    text = json.dumps(results)
    for net in ('"fcn32s-fixed"', '"fcn32s"', '"fcn16s"', '"fcn8s"', '"fcn8s-atonce"'):
        assert net in text
    table = (out / 'table.md').read_text()
    for net in ('FCN-32s-fixed', 'FCN-32s', 'FCN-16s', 'FCN-8s'):
        assert net in table
    for column in ('pixel acc.', 'mean acc.', 'mean IU', 'f.w. IU'):
        assert column in table
    assert any(f.endswith('.png') for f in os.listdir(out / 'infer'))
