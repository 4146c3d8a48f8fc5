"""Class lists and the split files derived from the datasets' own splits."""
from pathlib import Path

from common import datasets, outputs

from . import FetchError

# Relative to the data root; one name per line in model output order.
CLASS_LISTS = {
    f'{datasets.PASCAL_DIR}/classes.txt': datasets.VOC_CLASSES,
    f'{datasets.NYUD_DIR}/classes.txt': datasets.NYUD_CLASSES,
    f'{datasets.SIFTFLOW_DIR}/classes.txt': datasets.SIFTFLOW_CLASSES,
    f'{datasets.SIFTFLOW_DIR}/geo-classes.txt': datasets.SIFTFLOW_GEO_CLASSES,
    f'{datasets.CONTEXT_DIR}/classes.txt': datasets.CONTEXT_CLASSES,
}


def read_ids(path):
    """Ids of a split file, one per line; blank lines, CRLF line ends and a
    UTF-8 byte order mark are tolerated."""
    with open(path, encoding='utf-8-sig') as f:
        return [line.strip() for line in f if line.strip()]


def write_lines(path, lines):
    """Write one item a line, atomically (readers never see half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        outputs.write_atomically(str(path), ''.join(f'{line}\n' for line in lines), 'the list')
    except outputs.OutputError as e:
        raise FetchError(str(e)) from None


def write_class_lists(data_root):
    written = []
    for rel, names in CLASS_LISTS.items():
        write_lines(Path(data_root) / rel, names)
        written.append(Path(data_root) / rel)
    return written


def seg11valid(voc_val_ids, sbd_train_ids):
    """VOC2011 segmentation val ids not in SBD train, in VOC val order."""
    sbd_train = set(sbd_train_ids)
    return [i for i in voc_val_ids if i not in sbd_train]


def siftflow_splits(siftflow_dir):
    """(trainval, test) ids: test from the dataset's TestSet1.txt, trainval
    every other image; images lacking a semantic or geometric label file
    (two in the release) are in neither."""
    root = Path(siftflow_dir)
    images = sorted(p.stem for p in (root / 'Images' / datasets.SIFTFLOW_SUBDIR).glob('*.jpg'))
    labelled = {i for i in images
                if (root / 'SemanticLabels' / datasets.SIFTFLOW_SUBDIR / f'{i}.mat').exists()
                and (root / 'GeoLabels' / datasets.SIFTFLOW_SUBDIR / f'{i}.mat').exists()}
    # Lines are image paths, possibly Windows-style: keep the file stem.
    listed = [Path(line.replace('\\', '/')).stem for line in read_ids(root / 'TestSet1.txt')]
    test = [i for i in dict.fromkeys(listed) if i in labelled]
    test_set = set(test)
    trainval = [i for i in images if i in labelled and i not in test_set]
    return trainval, test


def write_derived_splits(data_root):
    """Write every split file that can be derived from what is unpacked;
    return the paths written."""
    data_root = Path(data_root)
    written = []

    voc_val = data_root / datasets.voc_split(datasets.voc_year_dir(2011), 'val')
    sbd_train = data_root / datasets.SBDD_DIR / 'train.txt'
    if voc_val.exists() and sbd_train.exists():
        ids = seg11valid(read_ids(voc_val), read_ids(sbd_train))
        # The VOC data layer reads <voc_dir>/ImageSets/Segmentation/<split>.txt.
        for path in (voc_val.parent / 'seg11valid.txt', data_root / datasets.PASCAL_DIR / 'seg11valid.txt'):
            write_lines(path, ids)
            written.append(path)
        print(f'seg11valid: {len(ids)} images (the real VOC2011 val and SBD train '
              f'give {datasets.SEG11VALID_SIZE})')

    nyud = data_root / datasets.NYUD_DIR
    if (nyud / 'train.txt').exists() and (nyud / 'val.txt').exists() \
            and not (nyud / 'trainval.txt').exists():
        write_lines(nyud / 'trainval.txt', read_ids(nyud / 'train.txt') + read_ids(nyud / 'val.txt'))
        written.append(nyud / 'trainval.txt')

    siftflow = data_root / datasets.SIFTFLOW_DIR
    if (siftflow / 'TestSet1.txt').exists() and not (siftflow / 'test.txt').exists():
        trainval, test = siftflow_splits(siftflow)
        write_lines(siftflow / 'trainval.txt', trainval)
        write_lines(siftflow / 'test.txt', test)
        written += [siftflow / 'trainval.txt', siftflow / 'test.txt']
        print(f'sift-flow: {len(trainval)} trainval, {len(test)} test images')
    return written
