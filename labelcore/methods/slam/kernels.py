"""SLAM kernels: the RBF kernel, pivoted-Cholesky landmarks and Nystroem features
shared by every pixel at one gamma (see :mod:`labelcore.methods.slam`)."""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular


def rbf(xa, xb, gamma):
    d2 = (np.sum(xa**2, 1)[:, None] + np.sum(xb**2, 1)[None, :] - 2 * xa @ xb.T)
    return np.exp(-gamma * np.maximum(d2, 0.0))


def pivoted_cholesky(x, gamma, tol, max_rank):
    """Greedy pivoted Cholesky of the RBF kernel on ``x`` (unit diagonal): the indices of
    the landmark stars, chosen until the largest residual variance is below ``tol``."""
    n = x.shape[0]
    m = int(min(max_rank, n))
    G = np.zeros((n, m))
    diag = np.ones(n)
    piv = []
    for k in range(m):
        i = int(np.argmax(diag))
        if diag[i] <= tol:
            break
        piv.append(i)
        col = np.exp(-gamma * np.sum((x - x[i]) ** 2, axis=1)) - G[:, :k] @ G[i, :k]
        G[:, k] = col / np.sqrt(diag[i])
        diag = np.maximum(diag - G[:, k] ** 2, 0.0)
        diag[piv] = 0.0
    return np.asarray(piv, int)


def kernel_features(x, gamma, rank_tol, max_rank):
    """Nystroem eigen-features of the RBF kernel on ``x``.

    Landmarks L (a subset of the stars) come from a pivoted Cholesky to a residual
    variance ``rank_tol``; K ~ K_xL K_LL^-1 K_Lx is then diagonalised, so the features are
    orthogonal over the training set (well-conditioned for the solver) and the feature
    map of *any* label vector is phi(x*) = k(x*, L) @ proj -- prediction needs only the
    m landmarks, not all N training stars. Returns (phi [N, r], landmarks [m, M],
    proj [m, r])."""
    piv = pivoted_cholesky(x, gamma, rank_tol, max_rank)
    L = x[piv]
    Kll = rbf(L, L, gamma)
    R = np.linalg.cholesky(Kll + 1e-10 * np.eye(len(piv)))
    Kxl = rbf(x, L, gamma)
    Gm = solve_triangular(R, Kxl.T, lower=True).T          # K ~ Gm Gm^T
    _, s, qt = np.linalg.svd(Gm, full_matrices=False)
    r = int(np.sum(s**2 > rank_tol * s[0] ** 2))
    proj = solve_triangular(R.T, qt[:r].T, lower=False)    # R^-T Q
    return Kxl @ proj, L, proj


