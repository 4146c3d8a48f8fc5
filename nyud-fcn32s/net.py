"""FCN-32s, NYUDv2 colour (RGB), VGG16, 40 classes; from ILSVRC VGG16."""
from nets import NYUD, Model

model = Model(NYUD(modalities=('color',)), trunk='vgg16', stride=32, base_lr=1e-10, init=('vgg16',))

if __name__ == '__main__':
    model.write(__file__)
