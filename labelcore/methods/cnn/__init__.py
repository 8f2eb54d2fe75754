"""The CNN of Guiglion et al. (2020), by job:

* :mod:`~labelcore.methods.cnn.model` -- the :class:`CNN` estimator (the paper's choices in
  its docstring);
* :mod:`~labelcore.methods.cnn.network` -- the batched ensemble network (Keras 3);
* :mod:`~labelcore.methods.cnn.training` -- mini-batches and per-member early stopping.

Keras/TensorFlow load on first use (``labelcore._lazy``), not on import.
"""

from labelcore.methods.cnn.model import CNN
from labelcore.methods.cnn.network import build_ensemble_model, masked_mse

__all__ = ["CNN", "build_ensemble_model", "masked_mse"]
