"""FCN-32s, NYUDv2 RGB-HHA late fusion (two streams, scores averaged), VGG16,
40 classes; from the colour and HHA FCN-32s."""
from nets import NYUD, Model

model = Model(NYUD(modalities=('color', 'hha')), trunk='vgg16', stride=32, base_lr=1e-12,
              init=('nyud-fcn32s', 'nyud-fcn32s-hha'))

if __name__ == '__main__':
    model.write(__file__)
