"""SLAM, the Stellar LAbel Machine (Zhang, Liu & Deng 2020), by job:

* :mod:`~labelcore.methods.slam.model` -- the :class:`SLAM` estimator (fit, predict,
  model spectra, persistence; the paper's choices in its docstring);
* :mod:`~labelcore.methods.slam.kernels` -- RBF kernel, landmarks, Nystroem features;
* :mod:`~labelcore.methods.slam.svr` -- the batched epsilon-SVR solver (JAX);
* :mod:`~labelcore.methods.slam.lm` -- model flux and batched Levenberg-Marquardt (JAX);
* :mod:`~labelcore.methods.slam.compress` -- fewer landmarks and low-rank coefficients;
* :mod:`~labelcore.methods.slam.cods` -- coefficients of dependence (eqs. 12-13).
"""

from labelcore.methods.slam.model import DEFAULT_C, DEFAULT_GAMMA, SLAM

__all__ = ["DEFAULT_C", "DEFAULT_GAMMA", "SLAM"]
