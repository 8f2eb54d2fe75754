"""Batched weighted linear least squares shared by the linear-in-parameters methods
(Lux's a-, b- and z-steps; The Cannon's per-pixel coefficients and its test-step
normal equations) and the per-pixel maximum-likelihood intrinsic scatter they both fit.

Every row r of a problem (a pixel, a star, a label) has weights w_r [K] and targets
y_r [K] over the same K design vectors x_k [P]; its normal equations
G_r = sum_k w_rk x_k x_k^T and b_r = sum_k w_rk y_rk x_k are, for all rows at once, one
matrix product with the pair products x_kp x_kq (p <= q): ``w [R, K] @ xx [K, P(P+1)/2]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


@jax.jit
def _pair_products(x, iu0, iu1):
    """x [K, P] -> x_kp x_kq for p <= q, [K, P(P+1)/2] (float32)."""
    x = x.astype(jnp.float32)
    return x[:, iu0] * x[:, iu1]


@jax.jit
def _weighted_sums(w, xx, wy, x):
    """Gram triangles ``w @ xx`` [R, T] and right-hand sides ``wy @ x`` [R, P]."""
    return (w.astype(jnp.float32) @ xx, wy.astype(jnp.float32) @ x.astype(jnp.float32))


def gram(w, y, x, *, exact: bool = False):
    """Weighted normal equations of every row r: G_r = sum_k w_rk x_k x_k^T,
    b_r = sum_k w_rk y_rk x_k, for w, y [R, K] and x [K, P]. Returns float64 arrays
    (G [R, P, P], b [R, P]).

    By default the products run in float32 on JAX (fast; what Lux's alternating steps
    need). ``exact=True`` computes them in float64 with numpy -- for solves whose design
    is ill-conditioned (The Cannon's quadratic vectoriser) and for chi^2 values built
    from G and b, where float32 cancellation would be visible."""
    p = x.shape[1]
    iu = np.triu_indices(p)
    if exact:
        x = np.asarray(x, np.float64)
        gt = np.asarray(w, np.float64) @ (x[:, iu[0]] * x[:, iu[1]])
        b = (np.asarray(w, np.float64) * y) @ x
    else:
        xx = _pair_products(jnp.asarray(x), iu[0], iu[1])
        gt, b = _weighted_sums(jnp.asarray(w), xx, jnp.asarray(w * y), jnp.asarray(x))
        gt = np.asarray(gt, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
    g = np.zeros((w.shape[0], p, p))
    g[:, iu[0], iu[1]] = gt
    g[:, iu[1], iu[0]] = gt
    return g, b


def solve(g, b, ridge, start=None):
    """Batched solve of (G_r + ridge_r I) theta_r = b_r.

    With ``start`` the solution is returned as ``start + delta`` where delta is the
    minimum-norm correction (``delta = (G + eps I)^-1 (b - G start)``): directions the data
    do not constrain keep their ``start`` value -- exactly what one Gauss-Newton step from
    ``start`` gives on a linear least-squares problem."""
    if start is not None:
        b = b - np.einsum("rpq,rq->rp", g, start)
    p = g.shape[-1]
    ridge = np.broadcast_to(np.asarray(ridge, float), g.shape[:1])
    # a tiny relative jitter keeps rank-deficient rows (e.g. all-masked) solvable
    tr = np.trace(g, axis1=1, axis2=2) / p
    jitter = 1e-10 * np.where(tr > 0, tr, 1.0) + 1e-12
    gg = g + (ridge + jitter)[:, None, None] * np.eye(p)
    try:
        sol = np.linalg.solve(gg, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        sol = np.einsum("rpq,rq->rp", np.linalg.pinv(gg), b)
    return sol if start is None else start + sol


@jax.jit
def _scatter_kernel(r2, var, mask, v_max):
    m = mask.astype(jnp.float32)

    def dloss(v):
        t = var + v[None, :]
        return jnp.sum(m * (1.0 / t - r2 / t**2), axis=0)

    lo = jnp.full(r2.shape[1], -30.0)
    hi = jnp.log(jnp.maximum(v_max, 1e-12))

    def body(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        neg = dloss(jnp.exp(mid)) < 0  # still increasing the likelihood: go up
        return jnp.where(neg, mid, lo), jnp.where(neg, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 60, body, (lo, hi))
    v = jnp.exp(0.5 * (lo + hi))
    return jnp.where(dloss(jnp.zeros_like(v) + 1e-30) >= 0, 0.0, v)


def scatter_step(r2, var, mask, v_max=None):
    """Per-pixel maximum-likelihood extra variance v = s^2 given the residuals: the root
    of sum_n [1/(var+v) - r^2/(var+v)^2] over unmasked n (0 when the residuals are no
    larger than the noise), by bisection in log v, vectorised over pixels.

    r2, var, mask [N, K] (squared residuals, noise variance, usable pixels); ``v_max``
    [K] bounds the search (default: the largest squared residual). Returns float64 [K]."""
    r2 = np.where(mask, r2, 0.0)
    if v_max is None:
        v_max = np.max(r2, axis=0)
    v_max = np.maximum(np.asarray(v_max, float), 1e-12)
    out = _scatter_kernel(jnp.asarray(r2, jnp.float32), jnp.asarray(np.where(mask, var, 1.0), jnp.float32),
                          jnp.asarray(mask), jnp.asarray(v_max, jnp.float32))
    return np.asarray(out, np.float64)
