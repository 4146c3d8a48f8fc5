"""FCN-8s, PASCAL-Context 59 classes + background, VGG16."""
from nets import Context, Model

model = Model(Context(), trunk='vgg16', stride=8, base_lr=1e-14, init=('pascalcontext-fcn16s',))

if __name__ == '__main__':
    model.write(__file__)
