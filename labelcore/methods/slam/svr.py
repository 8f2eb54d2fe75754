"""The batched epsilon-SVR solver: every pixel and every C of the grid at once, smoothed
primal Newton-CG in JAX (see :mod:`labelcore.methods.slam`)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np


@partial(jax.jit, static_argnames=("n_newton", "n_cg"))
def _svr_solve(phi, y, m, c, eps, delta_final, theta0, delta0=1.0, n_newton=25, n_cg=12):
    """Batched smoothed-primal SVR: columns of y [N, J] with masks m [N, J] and penalties
    c [J] on shared features phi [N, r]. Returns theta [r + 1, J] (last row = bias)."""
    n, r = phi.shape
    X = jnp.concatenate([phi, jnp.ones((n, 1), phi.dtype)], axis=1)
    reg = jnp.ones(r + 1, phi.dtype).at[-1].set(1e-8)[:, None]
    X2 = X * X

    def loss_terms(theta, delta):
        res = y - X @ theta
        u = jnp.abs(res) - eps
        h = jnp.where(u <= 0, 0.0, jnp.where(u < delta, u**2 / (2 * delta), u - delta / 2))
        f = 0.5 * jnp.sum(reg * theta**2, 0) + c * jnp.sum(m * h, 0)
        return res, u, f

    def newton(k, theta):
        delta = jnp.maximum(delta_final, delta0 * 0.6 ** k)
        res, u, f0 = loss_terms(theta, delta)
        hp = jnp.sign(res) * jnp.clip(u / delta, 0.0, 1.0)
        g = reg * theta - c * (X.T @ (m * hp))
        D = c * m * jnp.where((u > 0) & (u < delta), 1.0 / delta, 0.0)

        def hvp(v):
            return reg * v + X.T @ (D * (X @ v))

        # Jacobi-preconditioned CG: the features are orthogonal with scales sqrt(lambda),
        # so diag(H) captures most of the conditioning (C x lambda_max / reg ~ 1e7 at the
        # large-C, large-gamma corner of the grid).
        pinv = 1.0 / (reg + X2.T @ D)

        def cg_step(_, st):
            x, rr, z, p, rz = st
            Ap = hvp(p)
            a = rz / (jnp.sum(p * Ap, 0) + 1e-30)
            x = x + a * p
            rr = rr - a * Ap
            z = pinv * rr
            rz2 = jnp.sum(rr * z, 0)
            p = z + (rz2 / (rz + 1e-30)) * p
            return x, rr, z, p, rz2

        rr0 = -g
        z0 = pinv * rr0
        d, _, _, _, _ = jax.lax.fori_loop(0, n_cg, cg_step,
                                          (jnp.zeros_like(g), rr0, z0, z0, jnp.sum(rr0 * z0, 0)))
        best_t, best_f = theta, f0
        for step in (1.0, 0.5, 0.25, 0.1, 0.02):
            cand = theta + step * d
            _, _, fc = loss_terms(cand, delta)
            better = fc < best_f
            best_t = jnp.where(better[None, :], cand, best_t)
            best_f = jnp.where(better, fc, best_f)
        return best_t

    return jax.lax.fori_loop(0, n_newton, newton, theta0)


def svr_fit(phi, y, m, c, epsilon, huber_delta, n_newton, theta0=None, chunk=4096):
    """Solve all columns (in chunks of columns to bound memory); ``theta0`` warm-starts
    (e.g. from the solution at the next smaller C), with a shorter smoothing schedule."""
    out = []
    for a in range(0, y.shape[1], chunk):
        sl = slice(a, a + chunk)
        t0 = (jnp.zeros((phi.shape[1] + 1, y[:, sl].shape[1]), jnp.float32) if theta0 is None
              else jnp.asarray(theta0[:, sl], jnp.float32))
        out.append(np.asarray(_svr_solve(jnp.asarray(phi, jnp.float32), jnp.asarray(y[:, sl], jnp.float32),
                                          jnp.asarray(m[:, sl], jnp.float32), jnp.asarray(c[sl], jnp.float32),
                                          float(epsilon), float(huber_delta), t0,
                                          1.0 if theta0 is None else 0.2, n_newton=n_newton)))
    return np.concatenate(out, axis=1).astype(np.float64)


