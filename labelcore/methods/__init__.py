"""The three methods behind one contract (ARCHITECTURE.md section 3).

Imports are lazy so that using one method does not load the others' frameworks
(Keras/TensorFlow for the CNN)."""

from labelcore.methods.base import LabelMethod, NotFittedError

__all__ = ["CNN", "SLAM", "Lux", "LabelMethod", "NotFittedError"]


def __getattr__(name):
    if name == "Lux":
        from labelcore.methods.lux import Lux

        return Lux
    if name == "SLAM":
        from labelcore.methods.slam import SLAM

        return SLAM
    if name == "CNN":
        from labelcore.methods.cnn import CNN

        return CNN
    raise AttributeError(name)
