"""The README is a newcomer's page: short, its model table true to the
catalog of published figures, and every page of docs/ linked from it."""
import os
import re

import nets
from common import locations
from common.catalog import MODELS

README = os.path.join(locations.REPO_DIR, 'README.md')
DOCS = os.path.join(locations.REPO_DIR, 'docs')
README_MAX_LINES = 160


def readme():
    with open(README) as f:
        return f.read()


def model_rows(text):
    """{folder: published mean IU cell} of the README's model table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if line.startswith('|') and cells[0] in MODELS:
            rows[cells[0]] = cells[-1]
    return rows


def test_readme_is_short_and_starts_with_the_commands_and_a_photo():
    text = readme()
    assert len(text.splitlines()) <= README_MAX_LINES
    first_screen = '\n'.join(text.splitlines()[:40])
    assert 'make demo' in first_screen and 'make test' in first_screen
    assert 'python infer.py photo.jpg' in first_screen


def test_model_table_matches_the_catalog():
    rows = model_rows(readme())
    assert sorted(rows) == sorted(MODELS) == nets.model_names()
    for folder, cell in rows.items():
        published = MODELS[folder].published
        expected = published.mean_iu if published else None
        assert cell == ('—' if expected is None else f'{expected:.1f}'), folder


def test_every_doc_is_linked_and_every_link_resolves():
    text = readme()
    links = set(re.findall(r'\]\((docs/[^)#]+)', text))
    pages = {f'docs/{name}' for name in os.listdir(DOCS) if name.endswith('.md')}
    assert pages <= links, pages - links
    for page in pages:
        with open(os.path.join(locations.REPO_DIR, page)) as f:
            for target in re.findall(r'\]\(([^)#:]+)', f.read()):
                assert os.path.exists(os.path.join(DOCS, target)), f'{page} -> {target}'
    for link in links:
        assert os.path.exists(os.path.join(locations.REPO_DIR, link)), link
