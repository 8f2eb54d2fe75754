"""The SLAM model flux and the batched Levenberg-Marquardt solver of the test step (JAX):
kernel rows per gamma group, one model evaluation per iteration, continuous batching
state, and the best-match initial-guess search."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from labelcore.methods.slam.kernels import rbf


# ----------------------------------------------------------------------------- model flux
def model_flux(xq, gammas, gidx, landmarks, coefs, bias):
    """Standardised model flux [S, J] of the fitted per-pixel SVRs at labels ``xq`` [S, M]
    (numpy, float64): pixel j of gamma group g is k(xq, L_g) @ coefs[g][:, rank of j] + b_j."""
    out = np.zeros((xq.shape[0], bias.size)) + bias
    for g, (L, W) in enumerate(zip(landmarks, coefs, strict=True)):
        cols = np.flatnonzero(gidx == g)
        if cols.size:
            out[:, cols] += rbf(xq, L, gammas[g]) @ W
    return out


# ----------------------------------------------------------------------------- predict
def apply_coefs(a, Wg):
    """a @ W for a group's coefficients, stored as (W,) or low-rank factors (U, V)."""
    for factor in Wg:
        a = a @ factor
    return a


def kernel_rows(theta, gammas, Ls, Ws, first_row=None):
    """The model and its analytic Jacobian at ``theta`` [S, M], pixels in gamma-group
    order, without the bias: one GEMM chain per gamma group on the stacked rows
    [r0, dk/dtheta_1..M] (dk/dtheta = -2 gamma (theta - L) k). r0 is the kernel row k
    itself (the model flux) or ``first_row(g, k)`` (e.g. a kernel *change*, for the model
    change). Returns (rows [S, 1 + M, J'], kernel values k[g] [S, m_g])."""
    s, M = theta.shape
    outs, ks = [], []
    for g in range(len(Ws)):
        d = theta[:, None, :] - Ls[g][None, :, :]                            # [S, m, M]
        k = jnp.exp(-gammas[g] * jnp.sum(d * d, -1))                          # [S, m]
        dk = (-2.0 * gammas[g]) * k[:, None, :] * jnp.swapaxes(d, 1, 2)     # [S, M, m]
        r0 = k if first_row is None else first_row(g, k)
        a = jnp.concatenate([r0[:, None, :], dk], axis=1).reshape(s * (M + 1), -1)
        outs.append(apply_coefs(a, Ws[g]).reshape(s, M + 1, -1))
        ks.append(k)
    return jnp.concatenate(outs, axis=-1), ks


class LMState(NamedTuple):
    """Per-slot state of the batched Levenberg-Marquardt (a JAX pytree): see
    :func:`lm_chunk`."""

    theta: Any      # [S, M] accepted point (fresh slots: the initial guess)
    step: Any       # [S, M] pending step from theta
    lam: Any        # [S] damping
    done: Any       # [S] finished (converged or given up)
    conv: Any       # [S] converged
    nit: Any        # [S] model evaluations so far
    fresh: Any      # [S] theta not evaluated yet
    mod: Any        # [S, J'] model flux at theta, without the bias
    jac: Any        # [S, M, J'] Jacobian at theta
    H: Any          # [S, M, M] Gauss-Newton Hessian at theta
    chi2: Any       # [S]
    ks: Any         # tuple of [S, m_g]: kernel values at theta per gamma group


@jax.jit
def lm_chunk(state, f, w, bias, gammas, Ls, Ws, n_steps, max_iter, chi2_tol):
    """Up to ``n_steps`` Levenberg-Marquardt iterations for every active slot of a batch.

    f, w [S, J'] are the standardised flux and weights 1/(sigma_obs^2 + sigma_model^2)
    (0 = bad), pixels in gamma-group order; ``state`` is an :class:`LMState`: the
    accepted point theta with its model flux, Jacobian, Gauss-Newton Hessian J^T W J, chi2
    and kernel values, the pending step, and ``fresh`` for slots not evaluated yet.

    One iteration is one model evaluation per slot, at theta + step (theta itself when
    fresh): one GEMM chain per gamma group on the stacked rows [dk, dk/dtheta_1..M]
    gives the model *change* dm and the Jacobian at the new point. The change comes from
    k(theta + step) - k(theta) = k(theta) expm1(-gamma (2 step.(theta - L) + |step|^2)),
    accurate to float32 precision of the change itself (the difference of two float32
    chi2 sums, each ~ J terms with large cancelling kernel coefficients, is noise for
    the last small steps), and the step is accepted when the exact chi2 change is
    negative. So the model at the accepted point is updated, not recomputed, and every
    evaluation serves as both the test of one step and the Jacobian of the next.

    At the accepted point the star has converged when the Gauss-Newton decrement
    g^T H^-1 g (the chi2 still to gain in the local quadratic model), or the chi2 gain of
    the step just accepted if that step was nearly undamped (lambda < 0.1), is below
    ``chi2_tol``; otherwise the next damped step is
    solved. The reported Hessian, chi2 and model are therefore those at the solution. A
    star stops unconverged when the damping runs away or at ``max_iter`` evaluations."""
    M = state.theta.shape[1]
    eye = jnp.eye(M, dtype=state.theta.dtype)

    def body(st_i):
        (theta, step, lam, done, conv, nit, fresh, mod, jac, Hs, c2, ks), i = st_i
        live = ~done
        pt = jnp.where(fresh[:, None], theta, theta + step)
        s2 = jnp.sum(step * step, 1)[:, None]
        st_th = jnp.sum(step * theta, 1)[:, None]

        def change(g, k):   # k(theta + step) - k(theta), from the kernel at theta
            sd = st_th - step @ Ls[g].T                                    # step.(theta - L)
            return jnp.where(fresh[:, None], k, ks[g] * jnp.expm1(-gammas[g] * (2.0 * sd + s2)))

        out, knew = kernel_rows(pt, gammas, Ls, Ws, change)
        dm, jac_new = out[:, 0], out[:, 1:]
        r = f - bias - mod
        dchi = jnp.sum(w * dm * (dm - 2.0 * r), 1)
        acc = live & (fresh | (dchi < 0))
        # a small gain counts only for a nearly undamped (Gauss-Newton) step: heavily damped
        # steps are short and gain little far from the maximum, too
        gain_conv = acc & ~fresh & (-dchi < chi2_tol) & (lam < 0.1)
        lam = jnp.where(acc & ~fresh, lam / 3.0, jnp.where(live & ~acc, lam * 4.0, lam))
        theta = jnp.where(acc[:, None], pt, theta)
        mod = jnp.where(acc[:, None], jnp.where(fresh[:, None], dm, mod + dm), mod)
        jac = jnp.where(acc[:, None, None], jac_new, jac)
        ks = tuple(jnp.where(acc[:, None], kn, ko) for kn, ko in zip(knew, ks, strict=True))
        # at the accepted point: Hessian, gradient, decrement, next step
        r = f - bias - mod
        jw = jac * w[:, None, :]
        H = jnp.einsum("smj,snj->smn", jw, jac)
        g_ = jnp.einsum("smj,sj->sm", jw, r)
        dH = jnp.diagonal(H, axis1=1, axis2=2)
        newton = jnp.linalg.solve(H + 1e-9 * eye * (dH[:, None, :] + 1e-12), g_[..., None])[..., 0]
        now_conv = live & (gain_conv | (jnp.sum(g_ * newton, 1) < chi2_tol))
        step = jnp.linalg.solve(H + lam[:, None, None] * eye * (dH[:, None, :] + 1e-9), g_[..., None])[..., 0]
        Hs = jnp.where(live[:, None, None], H, Hs)
        c2 = jnp.where(live, jnp.sum(w * r * r, 1), c2)
        nit = jnp.where(live, nit + 1, nit)
        fresh = fresh & ~live
        conv = conv | now_conv
        done = done | now_conv | (lam > 1e8) | (nit >= max_iter)
        return LMState(theta, step, lam, done, conv, nit, fresh, mod, jac, Hs, c2, ks), i + 1

    def cond(st_i):
        st, i = st_i
        return (i < n_steps) & ~jnp.all(st.done)

    st, _ = jax.lax.while_loop(cond, body, (state, 0))
    return st


@jax.jit
def evaluate_at(theta, f, w, bias, gammas, Ls, Ws):
    """Model flux, Gauss-Newton Hessian J^T W J and chi2 at labels ``theta`` (one batch)."""
    mj, _ = kernel_rows(theta, gammas, Ls, Ws)
    mod = mj[:, 0] + bias
    jac = mj[:, 1:]
    H = jnp.einsum("smj,snj->smn", jac * w[:, None, :], jac)
    return mod, H, jnp.sum(w * (f - mod) ** 2, 1)


@partial(jax.jit, static_argnames=("k",))
def init_search(ff, ww, sw, V, C, tf, k):
    """Best-matching training spectrum for each star: the ``k`` nearest in the whitened
    PCA space, then the exact weighted chi2 (up to a per-star constant) on those."""
    c = (jnp.where(ww > 0, ff, 0.0) * sw) @ V
    d2 = jnp.sum(C**2, 1)[None, :] - 2 * c @ C.T
    _, pre = jax.lax.top_k(-d2, k)
    G = tf[pre]                                                          # [s, k, J]
    chi = jnp.einsum("skj,skj->sk", G, G * ww[:, None, :] - 2 * (ww * ff)[:, None, :])
    return jnp.take_along_axis(pre, jnp.argmin(chi, axis=1)[:, None], 1)[:, 0]


