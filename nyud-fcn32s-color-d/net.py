"""FCN-32s, NYUDv2 RGBD early fusion (4-channel conv1_1_bgrd), VGG16, 40 classes."""
from nets import NYUD, Model

model = Model(NYUD(modalities=('color', 'depth')), trunk='vgg16', stride=32, base_lr=1e-10,
              init=('vgg16',))

if __name__ == '__main__':
    model.write(__file__)
