"""A deterministic synthetic segmentation data set in the PASCAL VOC
layout, and a classification set of crops, for the offline mini-reproduction.

    python synthetic.py OUT_DIR [--seed 0] [--train 300] [--val 60] [--crops 1000]

Scenes: 1-3 objects (disc, triangle, ring, cross) of 80-150 pixels on a
cluttered background of greyish gradients, textured rectangles and blotches.
Objects are saturated and textured; each class has its own shape and band
of hues (brightness, saturation and texture vary). The ring's band and the
cross's arms are thin (6-23 pixels, about a tenth of the object), finer than
a stride-32 prediction resolves; a ring's hole is background. Labels are
palette PNGs with a 1-pixel void (255) border around objects, as VOC's.

Layout written under OUT_DIR:
    voc/JPEGImages/<id>.jpg, voc/SegmentationClass/<id>.png,
    voc/ImageSets/Segmentation/{train,val}.txt      (what VOCSegDataLayer reads)
    crops/<id>.jpg, crops/{train,val}.txt           (lines '<id> <class index>')

Crops (the stand-in for ILSVRC) are CROP_SIZE x CROP_SIZE cut-outs of
scenes of their own, each labelled with the class at its centre: see crops().
Every example has its own random stream (seed, split, index).
"""
import colorsys
import os

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

import nets
from common import cli, datasets, outputs

CLASSES = ('background', 'disc', 'triangle', 'ring', 'cross')
CROP_SIZE = 224           # the VGG16 classifier's input (fc6 sees a 7x7 pool5)
SCENE_SIZES = (160, 192)   # scene height and width are drawn from this range
OBJECT_EXTENT = (0.35, 0.65)  # object sizes, in crop widths (scenes and crops alike)
CROP_CENTER_DEPTH = 4      # pixels from the centre to another class, where there is room
SUPERSAMPLE = 4           # masks are drawn this much finer, then averaged: soft edges
JPEG_QUALITY = 92


# ------------------------------------------------------------------ shapes
def _polygon(center, radii, angles):
    return [(center[0] + r * np.cos(a), center[1] + r * np.sin(a)) for r, a in zip(radii, angles)]


def _bar(center, length, thickness, angle):
    """Rotated rectangle: the cross's arms."""
    dx, dy = np.cos(angle), np.sin(angle)
    hx, hy = dx * length / 2, dy * length / 2
    tx, ty = -dy * thickness / 2, dx * thickness / 2
    cx, cy = center
    return [(cx - hx - tx, cy - hy - ty), (cx + hx - tx, cy + hy - ty),
            (cx + hx + tx, cy + hy + ty), (cx - hx + tx, cy - hy + ty)]


def draw_shape(draw, cls, center, size, angle, rng):
    """Draw class `cls` (an index of CLASSES) filled with 255 into `draw`
    (an 'L' image); `size` is the object's extent in pixels."""
    r = size / 2
    name = CLASSES[cls]
    if name == 'disc':  # an ellipse, as a polygon so that it can rotate
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        aspect = rng.uniform(0.65, 1.0)
        pts = [(center[0] + r * np.cos(a) * np.cos(angle) - r * aspect * np.sin(a) * np.sin(angle),
                center[1] + r * np.cos(a) * np.sin(angle) + r * aspect * np.sin(a) * np.cos(angle))
               for a in t]
        draw.polygon(pts, fill=255)
    elif name == 'triangle':
        angles = angle + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.3, 0.3, 3)
        draw.polygon(_polygon(center, [r] * 3, angles), fill=255)
    elif name == 'ring':  # thin band: about a tenth of the diameter
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        inner = r * (1 - rng.uniform(0.16, 0.24))
        draw.polygon(_polygon(center, [r] * len(t), t), fill=255)
        draw.polygon(_polygon(center, [inner] * len(t), t), fill=0)
    elif name == 'cross':  # two thin perpendicular arms
        thickness = size * rng.uniform(0.1, 0.16)
        for a in (angle, angle + np.pi / 2):
            draw.polygon(_bar(center, size, thickness, a), fill=255)
    else:
        raise ValueError(f'no shape for class {name!r}')


def shape_alpha(shape, cls, center, size, angle, rng):
    """Soft coverage (0..1 float) of one object within its bounding box, and
    the box as a pair of slices of an image of `shape` (H, W)."""
    h, w = shape
    reach = 0.51 * size + 2  # every shape lies within this of its centre
    y0, x0 = max(int(center[1] - reach), 0), max(int(center[0] - reach), 0)
    y1, x1 = min(int(center[1] + reach) + 1, h), min(int(center[0] + reach) + 1, w)
    s = SUPERSAMPLE
    im = Image.new('L', ((x1 - x0) * s, (y1 - y0) * s), 0)
    draw_shape(ImageDraw.Draw(im), cls, ((center[0] - x0) * s, (center[1] - y0) * s), size * s,
               angle, rng)
    fine = np.asarray(im, dtype=np.float32) / 255
    alpha = fine.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
    return alpha, (slice(y0, y1), slice(x0, x1))


# ------------------------------------------------------------- appearance
# Objects are saturated, the background greyish: whether a pixel belongs to
# an object is a local cue. Each class has its own band of hues (a cue the
# small net learns in the minutes it trains) and its own shape; saturation,
# brightness and texture vary freely.
OBJECT_SATURATION = (0.55, 1.0)
BACKGROUND_SATURATION = (0.0, 0.3)
HUE_JITTER = 0.06  # of the colour circle, either side of the class's hue


def random_color(rng, saturation, hue=None):
    hue = rng.uniform(0, 1) if hue is None else hue
    rgb = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(*saturation), rng.uniform(0.3, 1))
    return np.array(rgb, np.float32) * 255


def class_hue(cls, rng):
    """A hue in the band of object class `cls` (1..n-1), evenly spaced bands."""
    return (cls - 1) / (len(CLASSES) - 1) + rng.uniform(-HUE_JITTER, HUE_JITTER)


def texture(shape, rng, saturation=OBJECT_SATURATION, cls=None):
    """An H x W x 3 float pattern: plain, striped, checked or mottled, in
    two colours (of the class's hue band for an object class `cls`)."""
    h, w = shape
    a, b = (random_color(rng, saturation, None if cls is None else class_hue(cls, rng))
            for _ in range(2))
    y, x = (v.astype(np.float32) for v in np.ogrid[:h, :w])
    kind = rng.integers(4)
    if kind == 0:
        return np.broadcast_to(a, (h, w, 3))
    elif kind == 1:
        theta, period = rng.uniform(0, np.pi), rng.uniform(4, 10)
        phase = (x * np.cos(theta) + y * np.sin(theta)) * 2 * np.pi / period
        t = (np.sin(phase) > 0).astype(np.float32)
    elif kind == 2:
        period = rng.uniform(4, 10)
        t = ((np.floor(x / period) + np.floor(y / period)) % 2).astype(np.float32)
    else:
        t = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 2)
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
    return a + t[..., None] * (b - a)


def background(shape, rng):
    """A smooth gradient cluttered with soft-edged rectangles and blotches
    (the background class's variety)."""
    h, w = shape
    y, x = (v.astype(np.float32) for v in np.ogrid[:h, :w])
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (x * np.cos(theta) + y * np.sin(theta))
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    colors = [random_color(rng, BACKGROUND_SATURATION) for _ in range(3)]
    image = colors[0] + ramp[..., None] * (colors[1] - colors[2]) * 0.6
    for _ in range(rng.integers(3, 8)):  # clutter: soft-edged axis-aligned rectangles
        rh, rw = rng.uniform(0.1, 0.5) * h, rng.uniform(0.1, 0.5) * w
        y0, x0 = rng.uniform(-rh / 2, h - rh / 2), rng.uniform(-rw / 2, w - rw / 2)
        # work in the rectangle's neighbourhood only (the blur reaches 3 px)
        top, left = max(int(y0) - 3, 0), max(int(x0) - 3, 0)
        bottom, right = min(int(y0 + rh) + 4, h), min(int(x0 + rw) + 4, w)
        if bottom <= top or right <= left:
            continue
        yy, xx = y[top:bottom], x[:, left:right]
        box = ((yy >= y0) & (yy < y0 + rh) & (xx >= x0) & (xx < x0 + rw)).astype(np.float32)
        alpha = ndimage.gaussian_filter(box, 1.0, mode='constant')[..., None] * rng.uniform(0.3, 0.7)
        region = image[top:bottom, left:right]
        image[top:bottom, left:right] = (region * (1 - alpha)
                                         + texture(box.shape, rng, BACKGROUND_SATURATION) * alpha)
    blotch = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 4)
    blotch = np.clip(blotch / (blotch.std() + 1e-6), -2, 2)[..., None]
    return image + blotch * rng.uniform(5, 20)


def finish(image, rng):
    image = image + 4 * rng.standard_normal(image.shape, dtype=np.float32)  # sensor noise
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ scenes
def scene(rng, size=None, include=None):
    """(H x W x 3 uint8 RGB image, H x W uint8 label with 255 void); the
    first object is of class `include` if given."""
    h, w = size or tuple(int(v) for v in rng.integers(SCENE_SIZES[0], SCENE_SIZES[1] + 1, 2))
    image = background((h, w), rng)
    label = np.zeros((h, w), np.uint8)
    for i in range(rng.integers(1, 4)):
        cls = include if include and i == 0 else int(rng.integers(1, len(CLASSES)))
        extent = rng.uniform(*OBJECT_EXTENT) * CROP_SIZE
        center = (rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h)
        alpha, box = shape_alpha((h, w), cls, center, extent, rng.uniform(0, 2 * np.pi), rng)
        a = alpha[..., None]
        image[box] = image[box] * (1 - a) + texture(alpha.shape, rng, cls=cls) * a
        label[box][alpha >= 0.5] = cls  # later objects occlude earlier ones
    # VOC-style void: the background pixels bordering an object (thin
    # parts stay labelled).
    objects = label > 0
    label[ndimage.binary_dilation(objects) & ~objects] = datasets.VOID
    return finish(image, rng), label


def crops(rng, fill):
    """[(class, CROP_SIZE x CROP_SIZE uint8 RGB image)]: crops of one scene
    of their own, each centred on a pixel of its class, one per object class
    present (and, every other scene, one of background, which every scene
    has: about as many as of each object class), the world outside the
    scene painted `fill` (the dataset's mean colour).

    Why so: a crop's class is what lies at its centre, as for the objects
    of ILSVRC photos, so the classifier's fully connected layers learn where
    as well as what; and a stride-32 FCN's every output is that classifier
    centred on one place of a scene, reaching past the scene's edges into
    conv1's padding, which is the mean colour after mean subtraction.
    """
    image, label = scene(rng, include=int(rng.integers(1, len(CLASSES))))
    classes = [c for c in range(1, len(CLASSES)) if (label == c).any()]
    if rng.random() < 0.5:
        classes.insert(0, 0)
    return [(cls, cut) for cls in classes
            for cut in [centred_crop(image, label, cls, rng, fill)] if cut is not None]


def centred_crop(image, label, cls, rng, fill):
    """A CROP_SIZE x CROP_SIZE crop of `image` centred on a pixel of class
    `cls` well inside its region (as far as its thinnest parts allow, so
    that the class at the centre is unambiguous), `fill` outside the image;
    None if the class has no pixel."""
    depth = ndimage.distance_transform_edt(label == cls)
    if not depth.any():
        return None
    places = np.argwhere(depth >= min(CROP_CENTER_DEPTH, depth.max()))
    cy, cx = places[rng.integers(len(places))]
    cut = np.empty((CROP_SIZE, CROP_SIZE, 3), np.uint8)
    cut[...] = fill
    h, w = label.shape
    top, left = CROP_SIZE // 2 - cy, CROP_SIZE // 2 - cx  # the image's corner in the crop
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, CROP_SIZE), min(left + w, CROP_SIZE)
    cut[y0:y1, x0:x1] = image[y0 - top:y1 - top, x0 - left:x1 - left]
    return cut


# ------------------------------------------------------------------ writing
SPLIT_KEYS = {'train': 0, 'val': 1, 'crops-train': 2, 'crops-val': 3}


def example_rng(seed, split, index):
    """Each example has its own random stream, so a smaller set is a prefix
    of a larger one and examples do not depend on each other."""
    return np.random.default_rng([seed, SPLIT_KEYS[split], index])


def write_voc(folder, seed, train, val):
    """Write the segmentation set; returns {split: ids}."""
    splits = {}
    for split, count in (('train', train), ('val', val)):
        ids = [f'{split}_{i:04d}' for i in range(count)]
        examples = {idx: scene(example_rng(seed, split, i)) for i, idx in enumerate(ids)}
        datasets.write_voc(folder, {split: ids}, examples, jpeg_quality=JPEG_QUALITY)
        splits[split] = ids
    return splits


def write_crops(folder, seed, train, val, fill):
    """Write the classification set; returns {split: [(id, class)]}."""
    os.makedirs(folder, exist_ok=True)
    splits = {}
    for split, count in (('train', train), ('val', val)):
        examples = []
        scenes = 0
        while len(examples) < count:
            for cls, image in crops(example_rng(seed, 'crops-' + split, scenes), fill):
                if len(examples) < count:
                    idx = f'{split}_{len(examples):04d}'
                    Image.fromarray(image).save(os.path.join(folder, idx + '.jpg'), quality=JPEG_QUALITY)
                    examples.append((idx, cls))
            scenes += 1
        with open(os.path.join(folder, split + '.txt'), 'w') as f:
            f.write(''.join(f'{idx} {cls}\n' for idx, cls in examples))
        splits[split] = examples
    return splits


def read_crops(folder, split):
    """[(absolute image path, class index)] of a crops split file."""
    folder = os.path.abspath(folder)
    with open(os.path.join(folder, split + '.txt')) as f:
        return [(os.path.join(folder, idx + '.jpg'), int(cls))
                for idx, cls in (line.split() for line in f if line.strip())]


def mean_bgr(folder, ids):
    """The BGR mean of a set's images (what the data layers subtract)."""
    total, pixels = np.zeros(3), 0
    for idx in ids:
        rgb = np.asarray(Image.open(datasets.voc_image(folder, idx)).convert('RGB'))
        total += rgb.reshape(-1, 3).sum(axis=0)
        pixels += rgb.shape[0] * rgb.shape[1]
    return tuple(round(float(v), 3) for v in (total / pixels)[::-1])


# --- a set a tiny net learns in seconds: tests and tools/resume_trials.py --------

def squares(rng):
    """A 36-48 px scene: a red square of class 1 and a blue one of class 2 on
    grey, each with a void line above it. (H x W x 3 uint8 RGB, H x W uint8)."""
    h, w = rng.integers(36, 48, size=2)
    label = np.zeros((h, w), np.uint8)
    rgb = (90 + rng.integers(0, 20, (h, w, 3))).astype(np.uint8)
    for cls, colour in ((1, (220, 40, 40)), (2, (40, 40, 220))):
        y, x = rng.integers(0, h - 16), rng.integers(0, w - 16)
        label[y:y + 14, x:x + 14] = cls
        label[max(y - 1, 0), x:x + 14] = datasets.VOID
        rgb[y:y + 14, x:x + 14] = colour
    return rgb, label


def tiny_model(stride=32, lr=1e-3, init=(), classes=datasets.VOC_CLASSES, mean=datasets.VOC_MEAN,
               val_size=2, **options):
    """A narrow VGG16 FCN (1/32 of the channels, trained from scratch) on
    VOC-layout data at ../data/voc: a real model that trains in seconds;
    `options` adds Model keywords (loss='sigmoid')."""
    source = nets.VOC(voc_dir='../data/voc', sbdd_dir='', val_split='val', val_size=val_size,
                      mean=tuple(mean), heads=(nets.Head('', tuple(classes)),))
    return nets.Model(source, trunk='vgg16', stride=stride, base_lr=lr, init=tuple(init),
                      momentum=0.9, normalize_loss=True, trunk_width=1 / 32, trunk_filler='msra',
                      **options)


def write(folder, seed=0, train=300, val=60, crops_train=1000, crops_val=100):
    """Write both sets under `folder` (voc/ and crops/); returns (scene
    splits, crop splits, the scenes' BGR mean)."""
    voc_dir = os.path.join(folder, 'voc')
    splits = write_voc(voc_dir, seed, train, val)
    mean = mean_bgr(voc_dir, splits['train'])
    fill = np.round(mean[::-1]).astype(np.uint8)
    crops = write_crops(os.path.join(folder, 'crops'), seed, crops_train, crops_val, fill)
    return splits, crops, mean


def main(argv=None):
    parser = cli.ArgumentParser(prog='synthetic.py', description=__doc__.split('\n\n')[0])
    parser.add_argument('out', help='folder to write voc/ and crops/ into')
    parser.add_argument('--seed', type=cli.number(int, minimum=0), default=0)
    parser.add_argument('--train', type=cli.number(int, minimum=1), default=300, help='training scenes')
    parser.add_argument('--val', type=cli.number(int, minimum=1), default=60, help='validation scenes')
    parser.add_argument('--crops', type=cli.number(int, minimum=10), default=1000,
                        help='training crops (val: a tenth)')
    args = parser.parse_args(argv)

    def work():
        outputs.writable_dir(args.out, 'the output folder')  # before any work
        return write(args.out, args.seed, args.train, args.val, args.crops, args.crops // 10)
    _, _, mean = cli.run('synthetic.py', work,
                         lambda e: f'{args.out} holds a part of the set; run again to write it whole')
    print(f'wrote {args.out}: voc/ ({args.train} train, {args.val} val scenes, BGR mean {mean}), '
          f'crops/ ({args.crops} train, {args.crops // 10} val)')


if __name__ == '__main__':
    main()
