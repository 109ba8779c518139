"""The original course ResNet50, written with tf-keras (the Keras 2 API).

Dev-only: used by the fixture and benchmark scripts to produce reference numbers with real Keras.
`width` scales every filter count the same way `signs_jax.models.scaled` does, so reduced-width
fixtures stay small.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tf_keras as keras  # noqa: E402
from tf_keras import layers  # noqa: E402


def scaled(filters, width):
    return max(1, int(round(filters * width)))


def identity_block(x, f, filters, stage, block):
    conv, bn = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
    f1, f2, f3 = filters
    shortcut = x
    x = layers.Conv2D(f1, (1, 1), strides=(1, 1), padding="valid", name=conv + "2a")(x)
    x = layers.BatchNormalization(axis=3, name=bn + "2a")(x)
    x = layers.Activation("relu")(x)
    x = layers.Conv2D(f2, (f, f), strides=(1, 1), padding="same", name=conv + "2b")(x)
    x = layers.BatchNormalization(axis=3, name=bn + "2b")(x)
    x = layers.Activation("relu")(x)
    x = layers.Conv2D(f3, (1, 1), strides=(1, 1), padding="valid", name=conv + "2c")(x)
    x = layers.BatchNormalization(axis=3, name=bn + "2c")(x)
    x = layers.Add()([x, shortcut])
    return layers.Activation("relu")(x)


def convolutional_block(x, f, filters, stage, block, s=2):
    conv, bn = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
    f1, f2, f3 = filters
    shortcut = x
    x = layers.Conv2D(f1, (1, 1), strides=(s, s), padding="valid", name=conv + "2a")(x)
    x = layers.BatchNormalization(axis=3, name=bn + "2a")(x)
    x = layers.Activation("relu")(x)
    x = layers.Conv2D(f2, (f, f), strides=(1, 1), padding="same", name=conv + "2b")(x)
    x = layers.BatchNormalization(axis=3, name=bn + "2b")(x)
    x = layers.Activation("relu")(x)
    x = layers.Conv2D(f3, (1, 1), strides=(1, 1), padding="valid", name=conv + "2c")(x)
    x = layers.BatchNormalization(axis=3, name=bn + "2c")(x)
    shortcut = layers.Conv2D(f3, (1, 1), strides=(s, s), padding="valid", name=conv + "1")(shortcut)
    shortcut = layers.BatchNormalization(axis=3, name=bn + "1")(shortcut)
    x = layers.Add()([x, shortcut])
    return layers.Activation("relu")(x)


def ResNet50(input_shape=(64, 64, 3), classes=6, width=1.0):
    w = lambda fs: [scaled(f, width) for f in fs]  # noqa: E731
    x_input = layers.Input(input_shape)
    x = layers.ZeroPadding2D((3, 3))(x_input)
    x = layers.Conv2D(scaled(64, width), (7, 7), strides=(2, 2), name="conv1")(x)
    x = layers.BatchNormalization(axis=3, name="bn_conv1")(x)
    x = layers.Activation("relu")(x)
    x = layers.MaxPooling2D((3, 3), strides=(2, 2))(x)
    for stage, filters, blocks, stride in (
        (2, [64, 64, 256], 3, 1),
        (3, [128, 128, 512], 4, 2),
        (4, [256, 256, 1024], 6, 2),
        (5, [512, 512, 2048], 3, 2),
    ):
        x = convolutional_block(x, 3, w(filters), stage, "a", s=stride)
        for i in range(1, blocks):
            x = identity_block(x, 3, w(filters), stage, "abcdefghijklmnopqrstuvwxyz"[i])
    x = layers.AveragePooling2D((2, 2), name="avg_pool")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(classes, activation="softmax", name=f"fc{classes}")(x)
    return keras.Model(inputs=x_input, outputs=x, name="ResNet50")
