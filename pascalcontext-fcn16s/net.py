"""FCN-16s, PASCAL-Context 59 classes + background, VGG16."""
from nets import Context, Model

model = Model(Context(), trunk='vgg16', stride=16, base_lr=1e-12, init=('pascalcontext-fcn32s',))

if __name__ == '__main__':
    model.write(__file__)
