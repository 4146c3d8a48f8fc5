"""FCN-16s, NYUDv2 RGB-HHA late fusion, VGG16, 40 classes (CVPR Table 4; not
in the reference release); staged from the late-fusion FCN-32s at its rate."""
from nets import NYUD, Model

model = Model(NYUD(modalities=('color', 'hha')), trunk='vgg16', stride=16, base_lr=1e-12,
              init=('nyud-fcn32s-color-hha',))

if __name__ == '__main__':
    model.write(__file__)
