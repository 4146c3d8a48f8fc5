"""What the fetch command downloads, and what the published models scored.

DOWNLOADS is the one table of download URLs: datasets, the ILSVRC classifiers
and (built from MODELS) the FCN authors' trained models. MODELS is the one
table mapping a model folder (<repo>/<folder>/) to its published caffemodel and
published figures. Nothing else in the repository should spell a URL or a
published number.

Checksums: none are known for the FCN models. Where the table records one,
the download is checked against it; otherwise the fetch prints the sha256 and
size of the first successful download so that they can be recorded here.
"""
import posixpath
from dataclasses import dataclass, make_dataclass
from urllib.parse import urlsplit

from common.metrics import METRICS


@dataclass(frozen=True)
class Download:
    url: str
    size: int | None = None     # bytes
    sha256: str | None = None
    md5: str | None = None      # as published by other users of the file
    sha1: str | None = None     # as published in the Caffe model zoo
    note: str = ''              # e.g. why the URL or the archive layout is unverified

    @property
    def filename(self):
        return posixpath.basename(urlsplit(self.url).path)

    @property
    def digests(self):
        """{hashlib algorithm name: expected hex digest} for those recorded."""
        return {name: value for name, value in
                (('sha256', self.sha256), ('md5', self.md5), ('sha1', self.sha1))
                if value}


# Published scores in percent, one field per column of the paper's table
# (common.metrics.METRICS); None where the source does not report one.
Metrics = make_dataclass('Metrics', [(key, float | None, None) for key, _ in METRICS],
                         frozen=True)


@dataclass(frozen=True)
class PublishedModel:
    folder: str                 # the model folder's name
    weights: str | None         # published caffemodel, stored as <folder>/<weights>
    split: str                  # split the published figure is measured on (score.py --split)
    published: Metrics | None   # the published figure for these weights (or this setup)
    reference: str              # where `published` comes from


# The FCN authors' host for their trained models (FACTS section 7).
FCN_MODEL_HOST = 'http://dl.caffe.berkeleyvision.org/'

_REFERENCE = 'reference release, mean IU on seg11valid'
_CVPR_T4 = 'CVPR Table 4, NYUDv2 test'

MODELS = {m.folder: m for m in (
    PublishedModel('voc-fcn32s', 'fcn32s-heavy-pascal.caffemodel', 'seg11valid',
                   Metrics(mean_iu=63.6), _REFERENCE),
    PublishedModel('voc-fcn16s', 'fcn16s-heavy-pascal.caffemodel', 'seg11valid',
                   Metrics(mean_iu=65.0), _REFERENCE),
    PublishedModel('voc-fcn8s', 'fcn8s-heavy-pascal.caffemodel', 'seg11valid',
                   Metrics(mean_iu=65.5), _REFERENCE),
    PublishedModel('voc-fcn8s-atonce', 'fcn8s-atonce-pascal.caffemodel', 'seg11valid',
                   Metrics(mean_iu=65.4), _REFERENCE),
    PublishedModel('voc-fcn-alexnet', 'fcn-alexnet-pascal.caffemodel', 'seg11valid',
                   Metrics(mean_iu=48.0), _REFERENCE),
    # CVPR Table 1 trains on VOC2011 train with a fixed lr and scores VOC2011
    # val; no trained FCN-GoogLeNet was published.
    PublishedModel('voc-fcn-googlenet', None, 'seg11valid',
                   Metrics(mean_iu=42.5), 'CVPR Table 1, VOC2011 val (not seg11valid)'),
    PublishedModel('nyud-fcn32s', 'nyud-fcn32s-color-heavy.caffemodel', 'test',
                   Metrics(60.0, 42.2, 29.2, 43.9), _CVPR_T4),
    PublishedModel('nyud-fcn32s-hha', 'nyud-fcn32s-hha-heavy.caffemodel', 'test',
                   Metrics(57.1, 35.2, 24.2, 40.4), _CVPR_T4),
    PublishedModel('nyud-fcn32s-color-d', None, 'test',
                   Metrics(61.5, 42.4, 30.5, 45.5), _CVPR_T4),
    PublishedModel('nyud-fcn32s-color-hha', 'nyud-fcn32s-color-hha-heavy.caffemodel', 'test',
                   Metrics(64.3, 44.9, 32.8, 48.0), _CVPR_T4),
    PublishedModel('nyud-fcn16s-color-hha', None, 'test',
                   Metrics(65.4, 46.1, 34.0, 49.5), _CVPR_T4),
    PublishedModel('siftflow-fcn32s', 'siftflow-fcn32s-heavy.caffemodel', 'test',
                   None, 'no published figure'),
    # Semantic head; the geometric head's pixel accuracy is 94.3.
    PublishedModel('siftflow-fcn16s', 'siftflow-fcn16s-heavy.caffemodel', 'test',
                   Metrics(85.2, 51.7, 39.5, 76.1), 'CVPR Table 5, SIFT Flow test (semantic)'),
    PublishedModel('siftflow-fcn8s', 'siftflow-fcn8s-heavy.caffemodel', 'test',
                   None, 'no published figure'),
    PublishedModel('pascalcontext-fcn32s', 'pascalcontext-fcn32s-heavy.caffemodel', 'val',
                   None, 'not in FCN-FACTS.md'),
    PublishedModel('pascalcontext-fcn16s', 'pascalcontext-fcn16s-heavy.caffemodel', 'val',
                   None, 'not in FCN-FACTS.md'),
    PublishedModel('pascalcontext-fcn8s', 'pascalcontext-fcn8s-heavy.caffemodel', 'val',
                   None, 'not in FCN-FACTS.md'),
)}

# ILSVRC classifiers, fetched into nets/ilsvrc-nets/ (locations.ILSVRC_DIR).
# Those with fully connected layers are cast into <net>-fcn.caffemodel there
# by `surgery.py convert`; GoogLeNet has none besides its classifier (which
# the FCN drops), so its weights are used as downloaded.
ILSVRC_NETS = ('vgg16', 'caffenet', 'googlenet')
ILSVRC_CONVERTED = ('vgg16', 'caffenet')

_VOC = 'http://host.robots.ox.ac.uk/pascal/VOC/'
_CONTEXT = 'http://www.cs.stanford.edu/~roozbeh/pascal-context/'
# md5s of the VOC and SBD archives as recorded by torchvision's dataset code;
# sha1s of the BVLC models as recorded in Caffe's model zoo.
DOWNLOADS = {
    'voc2010': Download(_VOC + 'voc2010/VOCtrainval_03-May-2010.tar',
                      md5='da459979d0c395079b5c75ee67908abb'),
    'voc2011': Download(_VOC + 'voc2011/VOCtrainval_25-May-2011.tar',
                      md5='6c3384ef61512963050cb5d687e5bf1e'),
    'voc2012': Download(_VOC + 'voc2012/VOCtrainval_11-May-2012.tar',
                      md5='6cd6e144f989b92b3379bac3b3de84fd'),
    'sbd': Download('http://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/'
                  'semantic_contours/benchmark.tgz',
                  md5='82b4d87ceb2ed10f6038a1cba92111cb'),
    # The FCN authors' repackaging of Gupta et al.'s data (their data/nyud
    # README); the archive's inner layout is unverified: the unpacker looks
    # for the folder holding segmentation/.
    'nyud': Download('http://dl.caffe.berkeleyvision.org/nyud.tar.gz',
                   note='archive layout unverified'),
    # As linked from the FCN authors' data/sift-flow README. Layout (Images/,
    # SemanticLabels/, GeoLabels/, TestSet1.txt) unverified.
    'siftflow': Download('http://www.cs.unc.edu/~jtighe/Papers/ECCV10/siftflow/SiftFlowDataset.zip',
                       note='archive layout unverified'),
    # PASCAL-Context annotations as listed on the dataset's site; that
    # trainval.tar.gz also holds the full labels.txt is unverified.
    'context-trainval': Download(_CONTEXT + 'trainval.tar.gz',
                               note='labels.txt inside the archive unverified'),
    'context-59-labels': Download(_CONTEXT + '59_labels.txt'),
    'vgg16': Download('http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/'
                    'VGG_ILSVRC_16_layers.caffemodel'),
    'caffenet': Download('http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel',
                       sha1='4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46'),
    'googlenet': Download('http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel',
                        sha1='405fc5acd08a3bb12de8ee5e23a96bec22f08204'),
    **{m.folder: Download(FCN_MODEL_HOST + m.weights)
       for m in MODELS.values() if m.weights},
}
