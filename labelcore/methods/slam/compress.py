"""Compression of a fitted SLAM model for prediction: fewer landmarks per gamma group
and low-rank coefficient factors, exact to a set RMS fraction of each pixel's model scatter."""

from __future__ import annotations

import numpy as np
import scipy.linalg


def compress_coefficients(W, F, scale, tol):
    """Low-rank factors of a group's coefficients W [m, J_g] for prediction.

    F = k(x_train, L) W is the group's model flux on the training labels; with pixels in
    units of their model scatter (``scale`` = sqrt(CV MSE)), keep the leading right
    singular vectors B_r of F / scale until the RMS of the dropped part is below ``tol``:
    W ~ (W D B_r)(B_r^T D^-1), D = diag(1/scale). Returns (W,) when that is not cheaper."""
    m, J = W.shape
    G = F / scale
    if not np.isfinite(G).all():
        return (W,)
    try:
        _, sv, bt = np.linalg.svd(G, full_matrices=False)
    except np.linalg.LinAlgError:         # LAPACK's divide-and-conquer can fail to converge:
        try:                              # the slower QR-iteration SVD, else no compression
            _, sv, bt = scipy.linalg.svd(G, full_matrices=False, lapack_driver="gesvd")
        except (np.linalg.LinAlgError, ValueError):
            return (W,)
    tail = np.sqrt(np.cumsum((sv**2)[::-1])[::-1] / F.size)
    r = int(np.argmax(tail < tol)) if np.any(tail < tol) else sv.size
    r = max(r, 1)
    if r * (m + J) >= 0.8 * m * J:
        return (W,)
    B = bt[:r].T
    return ((W / scale) @ B, B.T * scale)


def fewer_landmarks(K, F, scale, tol):
    """The fewest leading landmarks that still carry a group's model, for prediction.

    K = k(x_train, L) [N, m] with the landmarks in pivoted-Cholesky order (so prefixes are
    the greedy nested sets) and F = K W the model flux on the training labels. Training
    keeps landmarks down to a residual kernel variance of ``rank_tol`` (1e-7), far more
    than the fitted functions need: find the smallest prefix k whose least-squares refit
    W_k = argmin |K[:, :k] W_k - F| leaves an RMS error, in units of each pixel's model
    scatter ``scale``, below ``tol`` (bisection; the error only falls as k grows).
    Returns (k, W_k), W_k None when all m are needed."""
    m = K.shape[1]
    Fs = F / scale

    def fit(k):
        Wk = np.linalg.lstsq(K[:, :k], F, rcond=None)[0]
        return Wk, float(np.sqrt(np.mean(((K[:, :k] @ Wk) / scale - Fs) ** 2)))

    lo, hi = 1, m            # the error at hi is below tol (exact at k = m)
    best = None
    while lo < hi:
        mid = (lo + hi) // 2
        Wk, err = fit(mid)
        if err < tol:
            hi, best = mid, Wk
        else:
            lo = mid + 1
    return hi, best          # best is None when every landmark is needed


