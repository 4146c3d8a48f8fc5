"""FCN-32s, PASCAL-Context 59 classes + background, VGG16."""
from nets import Context, Model

model = Model(Context(), trunk='vgg16', stride=32, base_lr=1e-10, init=('vgg16',))

if __name__ == '__main__':
    model.write(__file__)
