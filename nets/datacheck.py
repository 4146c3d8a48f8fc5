"""A data folder checked before a model trains on it, as the data layer
(layers.SegDataLayer) will read it: `python -m nets check-data DATA
--classes a,b,c`.

Every image and label each split lists is read; the report is a summary
(images per split, sizes, pixels per class) and one line per problem,
naming the file: a split file missing or empty, a listed image or label
missing, two images for one stem, a file that cannot be read, a label value
that is neither a class nor void, an image and its label of different sizes.
"""
import os

import numpy as np
from tqdm import tqdm

import layers
from common import datasets


class Report:
    """What check() found: `splits` {split: stems read}, `pixels` {split:
    per-class pixel counts, void last}, `sizes` [(width, height)], and
    `problems` and `notes` (lines; only problems make the data unusable)."""

    def __init__(self, data_dir, layout, classes):
        self.data_dir, self.layout, self.classes = data_dir, layout, tuple(classes)
        self.splits, self.pixels, self.sizes = {}, {}, []
        self.problems, self.notes = [], []

    def lines(self):
        """The summary, then the notes and problems, then the verdict."""
        n = len(self.classes)
        out = [f'{self.data_dir}: {self.layout.name} layout, {n} classes, {datasets.VOID} void']
        out.append(', '.join(f'{split}: {len(stems)} images' for split, stems in self.splits.items())
                   or 'no split file read')
        if self.sizes:
            sizes = sorted(set(self.sizes), key=lambda s: (s[0] * s[1], s))
            shown = f'all {_size(sizes[0])}' if len(sizes) == 1 else \
                f'{len(sizes)} sizes, {_size(sizes[0])} to {_size(sizes[-1])}'
            out.append(f'sizes (width x height): {shown}')
        if self.pixels:
            width = max(len(c) for c in self.classes + ('void',)) + 6
            out.append(f'{"pixels per class":<{width}}' + ''.join(f'{s:>20}' for s in self.pixels))
            for i, name in enumerate(self.classes + ('void',)):
                index = datasets.VOID if i == n else i
                cells = ''.join(f'{int(p[i]):>12d} {_share(p[i], p.sum()):>7}' for p in self.pixels.values())
                out.append(f'  {index:>3} {name:<{width - 6}}' + cells)
        out += [f'note: {line}' for line in self.notes]
        out += self.problems
        count = len(self.problems)
        out.append('no problems found' if not count else
                   f'{count} problem{"s" if count > 1 else ""} (each line above names its file)')
        return out


def _size(size):
    return f'{size[0]}x{size[1]}'


def _share(part, whole):
    return f'{100 * part / whole:.1f}%' if whole else '-'


def check(data_dir, classes, progress=True):
    """Check the data folder `data_dir` (datasets.layout_of) for a model
    with `classes` (names, index order): returns a Report."""
    layout = datasets.layout_of(data_dir)
    report = Report(data_dir, layout, classes)
    n = len(classes)
    images = layout.image_files(data_dir)
    if not os.path.isdir(os.path.join(data_dir, layout.images)):
        report.problems.append(f'{os.path.join(data_dir, layout.images)}: missing (the images '
                               f'folder of a data folder; docs/nets.md)')
    for stem, found in images.items():
        if len(found) > 1:
            report.problems.append(f'{found[0]}: {len(found)} images for {stem} '
                                   f'({", ".join(found)}); keep one')
    examined = {}  # stem: (label histogram or None, size or None), read once
    for split in datasets.OWN_SPLITS:
        path = layout.split_file(data_dir, split)
        try:
            stems = datasets.split_ids(path)
        except FileNotFoundError:
            report.problems.append(f'{path}: missing (the {split} split: one image stem a line)')
            continue
        except (OSError, UnicodeDecodeError) as e:
            report.problems.append(f'{path}: cannot read the split file ({e})')
            continue
        if not stems:
            report.problems.append(f'{path}: lists no images')
        report.splits[split] = stems
        pixels = np.zeros(n + 1, np.int64)
        for stem in tqdm(stems, desc=f'check {split}', unit='image', disable=None if progress else True):
            if stem not in examined:
                examined[stem] = examine(report, layout, data_dir, path, stem, images.get(stem, []))
            if examined[stem][0] is not None:
                pixels += examined[stem][0]
        report.pixels[split] = pixels
        for i, name in enumerate(classes):
            if stems and pixels[i] == 0:
                report.notes.append(f'no {name} pixels in {split}')
    both = set(report.splits.get('train', ())) & set(report.splits.get('val', ()))
    if both:
        report.notes.append(f'{len(both)} images in both train and val (e.g. {sorted(both)[0]}): '
                            'val then measures what was trained on')
    report.sizes = [s for _, s in examined.values() if s is not None]
    return report


def examine(report, layout, data_dir, split_file, stem, found):
    """Read one example's image and label, adding what is wrong to
    `report.problems`: (label pixels per class with void last, or None;
    (width, height) of the image, or None)."""
    n = len(report.classes)
    size = None
    if not found:
        report.problems.append(f'{layout.missing_image(data_dir, stem)}: missing '
                               f'({stem} is listed in {split_file})')
    elif len(found) == 1:
        try:
            h, w = layers.load_image(found[0]).shape[:2]
            size = (w, h)
        except (layers.DataError, OSError) as e:
            report.problems.append(_named(found[0], e, 'image'))
    label_path = layout.label(data_dir, stem)
    if not os.path.isfile(label_path):
        report.problems.append(f'{label_path}: missing ({stem} is listed in {split_file})')
        return None, size
    try:
        label = layers.load_label_image(label_path)
    except (layers.DataError, OSError) as e:
        report.problems.append(_named(label_path, e, 'label'))
        return None, size
    bad = (label < 0) | ((label >= n) & (label != datasets.VOID))
    if bad.any():
        values = np.unique(label[bad])
        shown = ', '.join(map(str, values[:10])) + (' ...' if len(values) > 10 else '')
        report.problems.append(f'{label_path}: label values {shown} outside 0..{n - 1} (and '
                               f'{datasets.VOID} void) for the {n} classes')
    if size is not None and label.shape != size[::-1]:
        report.problems.append(f'{label_path}: {label.shape[1]}x{label.shape[0]}, but its image '
                               f'{found[0]} is {size[0]}x{size[1]} (width x height): they must '
                               'be the same size')
    pixels = np.bincount(label[~bad & (label != datasets.VOID)].ravel(), minlength=n)[:n]
    return np.append(pixels, np.count_nonzero(label == datasets.VOID)), size


def _named(path, error, what):
    """A read error as one line that starts with the file's path."""
    text = str(error)
    return text if text.startswith(path) else f'{path}: cannot read the {what} ({text})'
