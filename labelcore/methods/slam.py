"""SLAM: the Stellar LAbel Machine (Zhang, Liu & Deng 2020).

A generative model of each pixel's *standardised* flux as a support-vector regression
(RBF kernel, epsilon-insensitive loss) on the standardised labels, with (C, gamma) chosen
per pixel by k-fold cross-validation, and labels of new spectra by maximising the
Gaussian likelihood of eq. (8) with Levenberg-Marquardt.

Paper defaults: epsilon = 0.05; C = 10^[0, 0.5, 1, 1.5, 2]; gamma = 10^[-3, -2.5, -2,
-1.5, -1]; 5-fold CV (the paper uses 5 in section 3 and 8 in section 4); the grid point
with the lowest CV MSE is refitted on all stars; model variance in eq. (8) = CV MSE of the
pixel; initial guess = the best-matching training spectrum; optional training-set cleaning
(section 4.2): leave-1/10-out prediction, drop stars deviating by > 4 sigma in any label.

How it is made fast (and what that changes)
-------------------------------------------
* The RBF kernel over the training labels is the same for every pixel at a given gamma
  and fold, so it is built once (not 900 x 25 x 5 times). A pivoted Cholesky picks m
  landmark stars until the largest residual kernel variance is below ``rank_tol``
  (m ~ 30 at gamma = 1e-3 to ~450 at gamma = 0.1 for 3000 stars in 4 labels), and the
  Nystroem kernel K_xL K_LL^-1 K_Lx is diagonalised: r orthogonal features (eigenvalues
  below ``rank_tol`` x the largest dropped). The SVR of every pixel is then a linear
  SVR in these features (exact up to kernel directions of eigenvalue < rank_tol x
  lambda_max, which carry weight ~1/lambda in the RKHS norm), and the fitted model of
  pixel j is k(x, L) @ c_j + b_j: m landmarks, not all N training stars.
* All pixels (and all C values of the grid) are solved *at once* in JAX: the primal
  objective 1/2 |w|^2 + C sum_i L(y_i - phi_i w - b) with the epsilon-insensitive loss L
  smoothed quadratically over ``huber_delta`` beyond the tube (annealed from 1 to
  ``huber_delta``), by batched Newton-CG with a backtracking line search. The bias b is
  not regularised, as in libsvm. Bad pixels of a star have zero weight in that pixel's
  regression only. Newton directions come from Jacobi-preconditioned CG; with
  ``huber_delta`` = 1e-3 the CV MSEs agree with libsvm's to ~1e-4 (median, relative),
  worse (up to ~1e-2) at the large-C, large-gamma corner, where the Nystroem features and
  the smoothing limit the solver.
* Close calls are decided exactly. Many pixels (continuum, weak lines) have CV-MSE
  surfaces flat to < 1e-3 over several grid points, so ~1e-4 errors would flip their
  choice. Where two or more grid points of a pixel lie within ``refine_tol`` (2e-4) of
  its minimum, those points get exact CV MSEs from libsvm (scikit-learn ``SVR``) on the
  exact RBF kernel of each (gamma, fold), computed once and shared by all pixels and C
  values (a precomputed-kernel SVR), on threads; rounds repeat if the exact values move
  the minimum. ``cv_refined_grid_`` marks the exact values. The batched solver screens
  the grid; libsvm decides between the survivors (~1 grid point in 25).
* ``pixel_chunks`` > 1 splits the pixels into independent dask tasks: on the workers of
  an active ``dask.distributed.Client`` (a cluster) or dask's local scheduler -- one code
  path. One machine's cores are already busy with one batched block.
* Prediction runs Levenberg-Marquardt for all stars at once (JAX, float32): analytic
  Jacobians as one GEMM per gamma group, per-star damping and convergence flags, and
  one model evaluation per iteration, at the trial point, giving both the exact model
  change (which decides acceptance) and the Jacobian of the next step; the model, chi2
  and Gauss-Newton Hessian at the solution come out of the iteration itself.
  Continuous batching (converged stars leave, queued ones take their slots), each
  group's model carried by fewer landmarks and low-rank coefficients (``compress_tol``:
  e.g. 455 -> 272 landmarks at gamma = 0.1), and a two-stage best-match search for the
  initial guesses. No ``scipy.optimize.least_squares`` call
  per star.

``benchmarks/bench_slam.py`` measures the speed-up and how often the per-pixel (C, gamma)
choices agree with a straightforward per-pixel ``GridSearchCV(SVR)``.
"""

from __future__ import annotations

import time
import warnings
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg import solve_triangular

from labelcore.errors import FormatError, ValidationError
from labelcore.methods.base import LabelMethod, report
from labelcore.prep.standardise import Standardiser

DEFAULT_C = tuple(float(x) for x in 10.0 ** np.array([0.0, 0.5, 1.0, 1.5, 2.0]))
DEFAULT_GAMMA = tuple(float(x) for x in 10.0 ** np.array([-3.0, -2.5, -2.0, -1.5, -1.0]))


# ----------------------------------------------------------------------------- kernels
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


# ----------------------------------------------------------------------------- model flux
def _model_flux(xq, gammas, gidx, landmarks, coefs, bias):
    """Standardised model flux [S, J] of the fitted per-pixel SVRs at labels ``xq`` [S, M]
    (numpy, float64): pixel j of gamma group g is k(xq, L_g) @ coefs[g][:, rank of j] + b_j."""
    out = np.zeros((xq.shape[0], bias.size)) + bias
    for g, (L, W) in enumerate(zip(landmarks, coefs, strict=True)):
        cols = np.flatnonzero(gidx == g)
        if cols.size:
            out[:, cols] += rbf(xq, L, gammas[g]) @ W
    return out


# ----------------------------------------------------------------------------- predict
def _apply(a, Wg):
    """a @ W for a group's coefficients, stored as (W,) or low-rank factors (U, V)."""
    for factor in Wg:
        a = a @ factor
    return a


def _kernel_rows(theta, gammas, Ls, Ws, first_row=None):
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
        outs.append(_apply(a, Ws[g]).reshape(s, M + 1, -1))
        ks.append(k)
    return jnp.concatenate(outs, axis=-1), ks


class _LMState(NamedTuple):
    """Per-slot state of the batched Levenberg-Marquardt (a JAX pytree): see
    :func:`_lm_chunk`."""

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
def _lm_chunk(state, f, w, bias, gammas, Ls, Ws, n_steps, max_iter, chi2_tol):
    """Up to ``n_steps`` Levenberg-Marquardt iterations for every active slot of a batch.

    f, w [S, J'] are the standardised flux and weights 1/(sigma_obs^2 + sigma_model^2)
    (0 = bad), pixels in gamma-group order; ``state`` is an :class:`_LMState`: the
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

        out, knew = _kernel_rows(pt, gammas, Ls, Ws, change)
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
        return _LMState(theta, step, lam, done, conv, nit, fresh, mod, jac, Hs, c2, ks), i + 1

    def cond(st_i):
        st, i = st_i
        return (i < n_steps) & ~jnp.all(st.done)

    st, _ = jax.lax.while_loop(cond, body, (state, 0))
    return st


@jax.jit
def _evaluate(theta, f, w, bias, gammas, Ls, Ws):
    """Model flux, Gauss-Newton Hessian J^T W J and chi2 at labels ``theta`` (one batch)."""
    mj, _ = _kernel_rows(theta, gammas, Ls, Ws)
    mod = mj[:, 0] + bias
    jac = mj[:, 1:]
    H = jnp.einsum("smj,snj->smn", jac * w[:, None, :], jac)
    return mod, H, jnp.sum(w * (f - mod) ** 2, 1)


@partial(jax.jit, static_argnames=("k",))
def _init_search(ff, ww, sw, V, C, tf, k):
    """Best-matching training spectrum for each star: the ``k`` nearest in the whitened
    PCA space, then the exact weighted chi2 (up to a per-star constant) on those."""
    c = (jnp.where(ww > 0, ff, 0.0) * sw) @ V
    d2 = jnp.sum(C**2, 1)[None, :] - 2 * c @ C.T
    _, pre = jax.lax.top_k(-d2, k)
    G = tf[pre]                                                          # [s, k, J]
    chi = jnp.einsum("skj,skj->sk", G, G * ww[:, None, :] - 2 * (ww * ff)[:, None, :])
    return jnp.take_along_axis(pre, jnp.argmin(chi, axis=1)[:, None], 1)[:, 0]


def _compress(W, F, scale, tol):
    """Low-rank factors of a group's coefficients W [m, J_g] for prediction.

    F = k(x_train, L) W is the group's model flux on the training labels; with pixels in
    units of their model scatter (``scale`` = sqrt(CV MSE)), keep the leading right
    singular vectors B_r of F / scale until the RMS of the dropped part is below ``tol``:
    W ~ (W D B_r)(B_r^T D^-1), D = diag(1/scale). Returns (W,) when that is not cheaper."""
    m, J = W.shape
    _, sv, bt = np.linalg.svd(F / scale, full_matrices=False)
    tail = np.sqrt(np.cumsum((sv**2)[::-1])[::-1] / F.size)
    r = int(np.argmax(tail < tol)) if np.any(tail < tol) else sv.size
    r = max(r, 1)
    if r * (m + J) >= 0.8 * m * J:
        return (W,)
    B = bt[:r].T
    return ((W / scale) @ B, B.T * scale)


def _fewer_landmarks(K, F, scale, tol):
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


# ----------------------------------------------------------------------------- model
class SLAM(LabelMethod):
    """SLAM after Zhang, Liu & Deng (2020). See the module docstring.

    Parameters
    ----------
    C_grid, gamma_grid : grids of the SVR penalty and RBF width (paper defaults).
    epsilon : SVR tube half-width in standardised flux (paper: 0.05).
    n_folds : k of the k-fold CV (paper: 5).
    clean : bool
        Training-set cleaning of section 4.2 before training (leave-1/10-out).
    clean_sigma : rejection threshold in units of the residual scatter (paper: 4).
    rank_tol : landmarks are added until the largest residual kernel variance is below
        ``rank_tol``; Nystroem eigen-directions below ``rank_tol`` x the largest are dropped.
    max_rank : at most this many landmarks per gamma.
    huber_delta : smoothing width of the loss beyond the tube (standardised flux).
    n_newton : Newton iterations of the batched SVR solver.
    refine_tol : grid points whose batched CV MSE is within this fraction of the pixel's
        minimum are re-evaluated with exact SVRs (libsvm on the exact precomputed kernel),
        which then decide the choice (0 = off). See ``_refine_exact``.
    n_jobs : threads for the exact refinement (default: all cores).
    lm_max_iter : Levenberg-Marquardt iteration limit (unconverged stars are flagged).
    lm_tol : convergence when the Gauss-Newton decrement g^T H^-1 g (chi2 still to gain)
        (or the chi2 gain of an accepted step) is below this: 1e-2 puts the labels within
        0.1 sigma of their formal error of the likelihood maximum.
    compress_tol : prediction carries each gamma group's model on the fewest leading
        landmarks (half this budget, see ``_fewer_landmarks``) and low-rank factors of the
        coefficients (the other half), exact to this RMS fraction of each pixel's model
        scatter sqrt(CV MSE) over the training labels (0 = the full model).
    batch_size : LM slots (stars iterated together) in prediction.
    pixel_chunks : train the pixels as this many independent dask tasks (1 = here, at once;
        with a ``dask.distributed.Client`` active, the tasks run on its workers).
    random_state : seed of the fold assignment.
    """

    _format = "labelcore-slam"

    def __init__(self, C_grid=DEFAULT_C, gamma_grid=DEFAULT_GAMMA, epsilon=0.05, n_folds=5,
                 clean=False, clean_sigma=4.0, rank_tol=1e-7, max_rank=1000, huber_delta=1e-3,
                 n_newton=20, refine_tol=2e-4, n_jobs=None, lm_max_iter=60, lm_tol=1e-2,
                 compress_tol=1e-3, batch_size=256, pixel_chunks=1, random_state=0):
        self.C_grid = C_grid
        self.gamma_grid = gamma_grid
        self.epsilon = epsilon
        self.n_folds = n_folds
        self.clean = clean
        self.clean_sigma = clean_sigma
        self.rank_tol = rank_tol
        self.max_rank = max_rank
        self.huber_delta = huber_delta
        self.n_newton = n_newton
        self.refine_tol = refine_tol
        self.n_jobs = n_jobs
        self.lm_max_iter = lm_max_iter
        self.lm_tol = lm_tol
        self.compress_tol = compress_tol
        self.pixel_chunks = pixel_chunks
        self.batch_size = batch_size
        self.random_state = random_state

    # ----------------------------------------------------------------- training pieces
    def _cv_grid(self, x, y, m, Cs, gammas, progress=None, frac=(0.0, 1.0)):
        """CV MSE and MD [J, nC, nG] for every pixel and grid point: the mean over the folds
        of each fold's MSE (MD) on its good test pixels, as in scikit-learn's k-fold CV.
        Also returns the fold of every star."""
        n, J = y.shape
        k = int(self.n_folds)
        rng = np.random.default_rng(self.random_state)
        fold = rng.permutation(np.arange(n) % k)
        mse = np.zeros((J, len(Cs), len(gammas)))
        md = np.zeros_like(mse)
        nf = np.zeros(J)
        order = np.argsort(Cs)
        total = k * len(gammas)
        for i in range(k):
            tr, te = fold != i, fold == i
            cnt = m[te].sum(0)
            nf += cnt > 0
            inv = (1.0 / np.maximum(cnt, 1))[:, None]
            for gi, g in enumerate(gammas):
                phi, L, proj = kernel_features(x[tr], g, self.rank_tol, self.max_rank)
                phit = rbf(x[te], L, g) @ proj
                theta = None
                for ci in order:  # C path, each solution warm-starts the next
                    theta = svr_fit(phi, y[tr], m[tr], np.full(J, Cs[ci]), self.epsilon,
                                    self.huber_delta, self.n_newton, theta0=theta)
                    res = (phit @ theta[:-1] + theta[-1] - y[te]) * m[te]
                    mse[:, ci, gi] += (res**2).sum(0) * inv[:, 0]
                    md[:, ci, gi] += res.sum(0) * inv[:, 0]
                done = i * len(gammas) + gi + 1
                report(progress, frac[0] + (frac[1] - frac[0]) * done / total,
                       f"SLAM CV fold {i + 1}/{k}, gamma={g:.3g}")
        nf = np.maximum(nf, 1)[:, None, None]
        return mse / nf, md / nf, fold

    def _refine_exact(self, x, y, m, Cs, gammas, fold, mse, md, progress=None, frac=(0.0, 1.0)):
        """Exact CV MSE/MD at the grid points that compete for a pixel's minimum.

        The batched solver's CV MSEs are good to ~1e-4 (relative, median; up to ~1e-2 at the
        large-C, large-gamma corner, from the Nystroem features and the smoothed loss). Where
        two or more of a pixel's grid points lie within ``refine_tol`` of its minimum, the
        choice between them is decided by exact SVRs: libsvm (scikit-learn ``SVR``) on the
        exact RBF kernel of each (gamma, fold), computed once and shared by every pixel and C
        (a precomputed-kernel SVR), on ``n_jobs`` threads (libsvm releases the GIL). If the
        exact values move the minimum, the points near the new minimum are refined in turn
        (at most 4 rounds). Updates ``mse`` and ``md`` in place; returns the mask
        [J, nC, nG] of the grid points that now hold exact values."""
        tol = float(self.refine_tol)
        J = y.shape[1]
        done = np.zeros(mse.shape, bool)
        if tol <= 0 or J == 0:
            return done
        for _ in range(4):
            rel = mse / np.min(mse.reshape(J, -1), axis=1)[:, None, None] - 1.0
            near = rel <= tol
            cand = near & (near.sum(axis=(1, 2)) >= 2)[:, None, None] & ~done
            if not cand.any():
                break
            e2, e1 = self._exact_cv(x, y, m, Cs, gammas, fold, cand, progress, frac)
            mse[cand], md[cand] = e2[cand], e1[cand]
            done |= cand
        return done

    def _exact_cv(self, x, y, m, Cs, gammas, fold, cand, progress=None, frac=(0.0, 1.0)):
        """libsvm CV MSE and MD [J, nC, nG] at the grid points ``cand`` (0 elsewhere)."""
        import os
        from concurrent.futures import ThreadPoolExecutor

        from sklearn import config_context
        from sklearn.svm import SVR

        k = int(self.n_folds)
        n_jobs = int(self.n_jobs or os.cpu_count() or 1)
        ok = m > 0
        sse = np.zeros(cand.shape)
        sd = np.zeros(cand.shape)
        nf = np.zeros(cand.shape[0])
        for i in range(k):
            tr, te = np.flatnonzero(fold != i), np.flatnonzero(fold == i)
            nf += ok[te].any(0)
            for gi, g in enumerate(gammas):
                jobs = np.argwhere(cand[:, :, gi])              # (pixel, C index)
                if not len(jobs):
                    continue
                K = rbf(x[tr], x[tr], g)
                Kt = rbf(x[te], x[tr], g)

                def one(job, K=K, Kt=Kt, tr=tr, te=te):
                    j, ci = int(job[0]), int(job[1])
                    a, b = ok[tr, j], ok[te, j]
                    if not b.any():
                        return j, ci, 0.0, 0.0
                    Ka, Kb = (K, Kt) if a.all() else (K[np.ix_(a, a)], Kt[:, a])
                    with config_context(assume_finite=True):
                        svr = SVR(kernel="precomputed", C=float(Cs[ci]), epsilon=float(self.epsilon),
                                  cache_size=500).fit(Ka, y[tr[a], j])
                        res = svr.predict(Kb[b]) - y[te[b], j]
                    return j, ci, float(np.mean(res**2)), float(np.mean(res))

                with ThreadPoolExecutor(n_jobs) as ex:
                    for j, ci, e2, e1 in ex.map(one, jobs):
                        sse[j, ci, gi] += e2
                        sd[j, ci, gi] += e1
                report(progress, frac[0] + (frac[1] - frac[0]) * (i * len(gammas) + gi + 1) / (k * len(gammas)),
                       f"SLAM exact refinement fold {i + 1}/{k}, gamma={g:.3g}")
        nf = np.maximum(nf, 1)[:, None, None]
        return sse / nf, sd / nf

    def _fit_fixed(self, x, y, m, C, gidx, gammas):
        """Final per-pixel SVRs on all stars with per-pixel C [J] and gamma index [J].
        Returns (landmarks, coefs, bias): for gamma group g, the landmark labels [m_g, M]
        and kernel coefficients [m_g, J_g] of its pixels (see :func:`_model_flux`)."""
        J = y.shape[1]
        landmarks, coefs = [], []
        bias = np.zeros(J)
        for gi, g in enumerate(gammas):
            cols = np.flatnonzero(gidx == gi)
            if not cols.size:
                landmarks.append(np.zeros((0, x.shape[1])))
                coefs.append(np.zeros((0, 0)))
                continue
            phi, L, proj = kernel_features(x, g, self.rank_tol, self.max_rank)
            theta = svr_fit(phi, y[:, cols], m[:, cols], C[cols], self.epsilon,
                            self.huber_delta, self.n_newton)
            landmarks.append(L)
            coefs.append(proj @ theta[:-1])
            bias[cols] = theta[-1]
        return landmarks, coefs, bias

    def _flux_std(self, xq):
        """Standardised model flux [S, J] at standardised labels ``xq`` [S, M]."""
        return _model_flux(xq, self.gammas_, self.gamma_index_, self.landmarks_, self.coefs_, self.bias_)

    def _train_chunk(self, x, ys, m, Cs, gammas, progress=None, frac=(0.0, 1.0)):
        """CV grid, exact refinement of close calls, choice and final fit for a block of
        pixels: (cv_mse [J, nC, nG], cv_md, C [J], gamma index [J], landmarks per gamma,
        coefs per gamma, bias [J], refined mask [J, nC, nG])."""
        mid = frac[0] + 0.8 * (frac[1] - frac[0])
        mse, md, fold = self._cv_grid(x, ys, m, Cs, gammas, progress, (frac[0], mid))
        refined = self._refine_exact(x, ys, m, Cs, gammas, fold, mse, md, progress, (mid, frac[1]))
        best = np.argmin(mse.reshape(mse.shape[0], -1), axis=1)
        ci, gi = np.unravel_index(best, (len(Cs), len(gammas)))
        C = np.asarray(Cs, float)[ci]
        report(progress, frac[1], "SLAM: refitting every pixel on all stars")
        landmarks, coefs, bias = self._fit_fixed(x, ys, m, C, gi, gammas)
        return mse, md, C, gi, landmarks, coefs, bias, refined

    def _train_pixels(self, x, ys, m, Cs, gammas, progress):
        """Train every pixel, in ``pixel_chunks`` independent blocks. One block runs here;
        several run through ``dask.compute``, i.e. on the workers of an active
        ``dask.distributed.Client`` (a cluster) or else dask's local scheduler: the same
        code path either way. Pixels are independent, so the blocks give the same model
        as one block."""
        J = ys.shape[1]
        n_chunks = int(max(1, min(int(self.pixel_chunks), J)))
        if n_chunks == 1:
            return [self._train_chunk(x, ys, m, Cs, gammas, progress, (0.0, 0.95))]
        import dask

        blocks = np.array_split(np.arange(J), n_chunks)
        report(progress, 0.0, f"SLAM: training {J} pixels in {n_chunks} dask tasks")
        tasks = [dask.delayed(self._train_chunk)(x, ys[:, b], m[:, b], Cs, gammas) for b in blocks]
        return list(dask.compute(*tasks))

    # ----------------------------------------------------------------- public API
    def fit(self, flux, labels, *, flux_err=None, label_err=None, photometry=None,
            label_names=None, wave=None, progress=None):
        """Train the per-pixel SVRs. Stars with any missing (NaN) label are dropped (SLAM
        needs every label of a training star); their number is kept in
        ``n_dropped_missing_``. Returns self."""
        if photometry is not None:
            warnings.warn("SLAM does not use photometry; it is ignored", UserWarning, stacklevel=2)
        t0 = time.perf_counter()
        f, e, bad = self._flux_arrays(flux, flux_err)
        y, _, names = self._label_arrays(labels, None, label_names, n=f.shape[0])
        keep = ~np.isnan(y).any(axis=1)
        self.n_dropped_missing_ = int((~keep).sum())
        f, bad, y = f[keep], bad[keep], y[keep]
        e = None if e is None else e[keep]
        k = int(self.n_folds)
        if y.shape[0] < 2 * k:
            raise ValidationError(f"SLAM needs at least {2 * k} complete training stars for "
                                  f"{k}-fold CV; got {y.shape[0]}")
        self.label_names_ = names
        self.n_pixels_ = f.shape[1]
        self.wave_ = None if wave is None else np.asarray(wave, float)
        self.label_scaler_ = Standardiser().fit(y, names=names)
        self.flux_scaler_ = Standardiser().fit(np.where(bad, np.nan, f),
                                               names=[f"pixel {j}" for j in range(f.shape[1])])
        m = (~bad).astype(float)
        if self.clean:
            keep2 = self._clean(f, bad, y, progress)
            self.n_cleaned_ = int((~keep2).sum())
            f, bad, y, m = f[keep2], bad[keep2], y[keep2], m[keep2]
        else:
            self.n_cleaned_ = 0
        x = self.label_scaler_.transform(y)
        ys = np.where(bad, 0.0, self.flux_scaler_.transform(np.where(bad, 0.0, f)))
        Cs, gammas = list(self.C_grid), list(self.gamma_grid)
        parts = self._train_pixels(x, ys, m, Cs, gammas, progress)
        mse, md, C, gi = (np.concatenate([p[i] for p in parts]) for i in range(4))
        flat = mse.reshape(mse.shape[0], -1)
        best = np.argmin(flat, axis=1)
        self.cv_mse_grid_, self.cv_md_grid_ = mse, md
        self.cv_refined_grid_ = np.concatenate([p[7] for p in parts])
        self.C_ = C
        self.gamma_ = np.asarray(gammas)[gi]
        self.gamma_index_ = gi
        self.cv_mse_ = flat[np.arange(flat.shape[0]), best]
        self.cv_md_ = md.reshape(md.shape[0], -1)[np.arange(flat.shape[0]), best]
        self.landmarks_, self.coefs_ = [], []
        for g in range(len(gammas)):   # landmarks are the same in every chunk (deterministic)
            have = [p[4][g] for p in parts if p[5][g].size]
            self.landmarks_.append(have[0] if have else np.zeros((0, x.shape[1])))
            self.coefs_.append(np.concatenate([p[5][g] for p in parts if p[5][g].size], axis=1)
                               if have else np.zeros((0, 0)))
        self.bias_ = np.concatenate([p[6] for p in parts])
        self.x_train_ = x
        self.gammas_ = np.asarray(gammas)
        fit = self._flux_std(x)
        res = (fit - ys) * m
        cnt = np.maximum(m.sum(0), 1)
        self.mse_ = (res**2).sum(0) / cnt
        self.md_ = res.sum(0) / cnt
        # standardised training flux for the initial guesses; masked pixels hold the model
        self.train_flux_std_ = np.where(m > 0, ys, fit)
        self.train_mask_ = m.astype(bool)
        self._set_label_range(y)
        self.fit_seconds_ = time.perf_counter() - t0
        report(progress, 1.0, "SLAM fitted")
        return self

    def _clean(self, f, bad, y, progress):
        """Section 4.2: leave-1/10-out predictions with mid-grid hyper-parameters
        (C = 10, gamma = 0.01 -- the paper does not say which it used); drop stars whose
        labels deviate by more than ``clean_sigma`` x the residual scatter in any label."""
        n = y.shape[0]
        rng = np.random.default_rng(self.random_state + 1)
        fold = rng.permutation(np.arange(n) % 10)
        pred = np.zeros_like(y)
        for i in range(10):
            tr, te = fold != i, fold == i
            sub = SLAM(C_grid=(10.0,), gamma_grid=(0.01,), epsilon=self.epsilon, n_folds=2,
                       rank_tol=self.rank_tol, max_rank=self.max_rank, huber_delta=self.huber_delta,
                       n_newton=self.n_newton, lm_max_iter=self.lm_max_iter,
                       batch_size=self.batch_size)
            sub.fit(np.where(bad[tr], np.nan, f[tr]), y[tr], label_names=self.label_names_)
            pred[te] = sub.predict(np.where(bad[te], np.nan, f[te]))
            report(progress, 0.0, f"SLAM cleaning fold {i + 1}/10")
        r = pred - y
        sig = np.std(r, axis=0)
        keep = np.all(np.abs(r - r.mean(0)) <= self.clean_sigma * sig, axis=1)
        self.clean_residuals_ = r
        return keep

    def _initial_guess(self, fs, w, chunk=256, n_pre=16, rank=128):
        """Section 2.3: the labels of the training star whose spectrum matches best (the
        highest likelihood of eq. 8, with each star's own weights and bad pixels; masked
        pixels of training spectra hold the model flux at that star's labels).

        Searching all N training spectra costs N x J per star -- more than the whole LM
        fit. So the search runs in two stages: a preselection of the ``n_pre`` nearest
        training spectra in a rank-``rank`` PCA of the spectra whitened by the model
        scatter (weights 1/CV MSE), then the exact chi2 on those only. The best match is
        among them for > 98 % of stars, and otherwise a near-identical spectrum (the test
        suite compares with the exhaustive search)."""
        C, V, sw, tf = self._init_index(rank)
        best = np.empty(fs.shape[0], int)
        k = int(min(n_pre, C.shape[0]))
        n = fs.shape[0]
        for i in range(0, n, chunk):
            idx = np.minimum(np.arange(i, i + chunk), n - 1)        # pad: one compile
            b = _init_search(jnp.asarray(fs[idx], jnp.float32), jnp.asarray(w[idx], jnp.float32),
                             sw, V, C, tf, k)
            best[i:i + chunk] = np.asarray(b)[:min(chunk, n - i)]
        return self.x_train_[best]

    def _init_index(self, rank):
        """PCA coordinates [N, r] of the whitened training spectra, the basis [J, r], the
        whitening sqrt(1/CV MSE) [J] and the training spectra as float32 (cached)."""
        key = (int(rank), id(self.train_flux_std_))
        if getattr(self, "_init_cache", (None,))[0] == key:
            return self._init_cache[1]
        sw = (1.0 / np.sqrt(self.cv_mse_)).astype(np.float32)
        tf = self.train_flux_std_.astype(np.float32)
        Z = tf * sw
        _, _, vt = np.linalg.svd(Z, full_matrices=False)
        V = np.ascontiguousarray(vt[:rank].T)
        out = tuple(jnp.asarray(a) for a in (Z @ V, V, sw, tf))
        self._init_cache = (key, out)
        return out

    def _device_model(self):
        """Pixels in gamma-group order (perm) and the per-group arrays for JAX, with each
        group's coefficients compressed to low rank (``compress_tol``, see
        :func:`_compress`). Cached: it depends only on the fitted state."""
        key = (float(self.compress_tol), id(self.coefs_))
        if getattr(self, "_device_cache", (None,))[0] == key:
            return self._device_cache[1]
        used = [g for g in range(len(self.coefs_)) if np.any(self.gamma_index_ == g)]
        perm = np.concatenate([np.flatnonzero(self.gamma_index_ == g) for g in used])
        Ws, Ls = [], []
        for g in used:
            cols = np.flatnonzero(self.gamma_index_ == g)
            W, L = self.coefs_[g], self.landmarks_[g]
            if self.compress_tol > 0:
                # half the budget to fewer landmarks, half to the low-rank factors
                scale = np.sqrt(self.cv_mse_[cols])
                K = rbf(self.x_train_, L, self.gammas_[g])
                k, Wk = _fewer_landmarks(K, K @ W, scale, 0.5 * self.compress_tol)
                if Wk is not None:
                    W, L, K = Wk, L[:k], K[:, :k]
                Ws.append(tuple(jnp.asarray(a, jnp.float32)
                                for a in _compress(W, K @ W, scale, 0.5 * self.compress_tol)))
            else:
                Ws.append((jnp.asarray(W, jnp.float32),))
            Ls.append(jnp.asarray(L, jnp.float32))
        dev = (perm, tuple(jnp.float32(self.gammas_[g]) for g in used), tuple(Ls), tuple(Ws),
               jnp.asarray(self.bias_[perm], jnp.float32))
        self._device_cache = (key, dev)
        return dev

    def _solve_batched(self, theta0, fs, w, n_steps=2):
        """Levenberg-Marquardt for all stars with *continuous batching*: a fixed number of
        slots (``batch_size``) iterates in JAX; every ``n_steps`` iterations the finished
        stars leave and queued stars take their slots, so no slot idles while the
        slowest star of a batch converges. The queue starts with the least informative
        (lowest S/N, slowest) spectra, and once it is empty the last few stars move to a
        batch 8x smaller. Returns (theta, converged, n_evaluations, model flux [N, J] in
        pixel order, GN Hessian [N, M, M], chi2 [N]), all at the solution (:func:`_lm_chunk`)."""
        n, M = theta0.shape
        perm, gams, Ls, Ws, bias = self._device_model()
        fp = np.ascontiguousarray(fs[:, perm], np.float32)
        wp = np.ascontiguousarray(w[:, perm], np.float32)
        J = fp.shape[1]
        queue = np.argsort(wp.sum(1), kind="stable")
        B = int(max(1, min(int(self.batch_size), n)))
        z = lambda *shape, dt=np.float32: np.zeros((B, *shape), dt)  # noqa: E731
        st = _LMState(theta=z(M), step=z(M), lam=z(), done=np.ones(B, bool), conv=z(dt=bool),
                      nit=z(dt=np.int32), fresh=z(dt=bool), mod=z(J), jac=z(M, J), H=z(M, M), chi2=z(),
                      ks=tuple(z(L.shape[0]) for L in Ls))
        fb = np.zeros((B, J), np.float32)
        wb = np.zeros_like(fb)
        slot = -np.ones(B, int)
        out_theta = theta0.astype(np.float64).copy()
        out_conv = np.zeros(n, bool)
        out_nit = np.zeros(n, int)
        out_mod = np.zeros((n, J), np.float32)
        out_H = np.zeros((n, M, M))
        out_c2 = np.zeros(n)
        nxt = 0
        while True:
            fin = st.done & (slot >= 0)
            if fin.any():
                s_ = slot[fin]
                out_theta[s_], out_conv[s_], out_nit[s_] = st.theta[fin], st.conv[fin], st.nit[fin]
                out_H[s_], out_c2[s_] = st.H[fin], st.chi2[fin]
                out_mod[s_] = np.asarray(st.mod)[fin]
                slot[fin] = -1
            free = np.flatnonzero(slot < 0)
            n_new = min(free.size, n - nxt)
            if n_new:
                new, idx = free[:n_new], queue[nxt:nxt + n_new]
                nxt += n_new
                slot[new] = idx
                st.theta[new] = theta0[idx]
                st.lam[new] = 1e-2
                st.done[new] = st.conv[new] = False
                st.nit[new] = 0
                st.fresh[new] = True
                fb[new], wb[new] = fp[idx], wp[idx]
            active = np.flatnonzero(slot >= 0)
            if not active.size:
                break
            if nxt == n and B >= 64 and active.size <= B // 8:   # tail: shrink the batch
                B //= 8
                keep = np.concatenate([active, np.flatnonzero(slot < 0)])[:B]
                st = jax.tree_util.tree_map(lambda a, keep=keep: np.asarray(a)[keep], st)
                fb, wb, slot = fb[keep], wb[keep], slot[keep]
            res = _lm_chunk(st, fb, wb, bias, gams, Ls, Ws, n_steps, int(self.lm_max_iter), float(self.lm_tol))
            # the small per-slot arrays come back to the host for the slot bookkeeping; the
            # model, Jacobian and kernel values stay on the device (a fresh slot overwrites them)
            st = res._replace(**{f: np.array(getattr(res, f))
                                 for f in _LMState._fields if f not in ("mod", "jac", "ks")})
        model = np.empty((n, J), np.float32)
        model[:, perm] = out_mod + np.asarray(bias)[None, :]
        return out_theta, out_conv, out_nit, model, out_H, out_c2

    def _evaluate_at(self, theta, fs, w):
        """The prediction model (compressed, float32) at standardised labels ``theta``:
        model flux [N, J] (pixel order), Gauss-Newton Hessian [N, M, M] and chi2 [N] -- an
        independent evaluation, against which the tests check what the solver reports."""
        n = theta.shape[0]
        perm, gams, Ls, Ws, bias = self._device_model()
        B = int(max(1, min(int(self.batch_size), n)))
        mod = np.empty((n, fs.shape[1]))
        H = np.empty((n, theta.shape[1], theta.shape[1]))
        c2 = np.empty(n)
        for a in range(0, n, B):
            idx = np.minimum(np.arange(a, a + B), n - 1)   # pad the last batch (one compile)
            k = min(B, n - a)
            m_, h_, c_ = _evaluate(jnp.asarray(theta[idx], jnp.float32), jnp.asarray(fs[idx][:, perm], jnp.float32),
                                   jnp.asarray(w[idx][:, perm], jnp.float32), bias, gams, Ls, Ws)
            mod[a:a + k, perm] = np.asarray(m_, np.float64)[:k]
            H[a:a + k] = np.asarray(h_, np.float64)[:k]
            c2[a:a + k] = np.asarray(c_, np.float64)[:k]
        return mod, H, c2

    def _likelihood_inputs(self, flux, flux_err):
        """Standardised flux and weights 1/(sigma_obs^2 + CV MSE) of eq. 8, float32 as the
        solver uses them (bad pixels: flux 0, weight 0), and the bad-pixel mask."""
        f, e, bad = self._flux_arrays(flux, flux_err, n_pixels=self.n_pixels_)
        std = self.flux_scaler_.std_.astype(np.float32)
        fs = (f.astype(np.float32) - self.flux_scaler_.mean_.astype(np.float32)) / std
        fs[bad] = 0.0
        cv = self.cv_mse_.astype(np.float32)
        if e is None:
            w = np.broadcast_to(1.0 / cv, f.shape).copy()
            w[bad] = 0.0
        else:                                   # e = inf at bad pixels: weight 0
            w = 1.0 / ((e.astype(np.float32) / std) ** 2 + cv)
        return fs, w, bad

    def predict_details(self, flux, *, flux_err=None):
        """Labels, formal errors, convergence flags, iterations, chi2, fit RMSE per star."""
        self._check_fitted()
        fs, w, bad = self._likelihood_inputs(flux, flux_err)
        theta0 = self._initial_guess(fs, w)
        theta, conv, nit, model, H, c2 = self._solve_batched(theta0, fs, w)
        M = theta.shape[1]
        cov = np.linalg.pinv(H + 1e-12 * np.eye(M))
        err = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0, None))
        res = (model - fs) * self.flux_scaler_.std_.astype(np.float32)
        res[bad] = 0.0
        rmse = np.sqrt(np.einsum("ij,ij->i", res, res) / np.maximum((~bad).sum(1), 1)).astype(float)
        return {
            "labels": self.label_scaler_.inverse(theta),
            "errors": self.label_scaler_.inverse_scale(err),
            "converged": conv,
            "n_iter": nit,
            "chi2": c2,
            "rmse": rmse,
            "initial": self.label_scaler_.inverse(theta0),
        }

    def predict(self, flux, *, flux_err=None, photometry=None, return_std=False):
        """Maximum-likelihood labels [N, M] (eq. 8); with ``return_std`` also the formal
        1-sigma errors from the LM covariance. Convergence flags: :meth:`predict_details`."""
        d = self.predict_details(flux, flux_err=flux_err)
        return (d["labels"], d["errors"]) if return_std else d["labels"]

    def model_spectra(self, labels) -> np.ndarray:
        """The SLAM model flux (physical units) for given labels [N, M]."""
        self._check_fitted()
        y, _, _ = self._label_arrays(labels, None, self.label_names_, allow_missing=False)
        xs = self.label_scaler_.transform(y)
        fs = self._flux_std(xs)
        return self.flux_scaler_.inverse(fs)

    # ----------------------------------------------------------------- CODs
    def cods(self, flux, labels, *, progress=None):
        """Coefficients of dependence (section 6, eqs. 12-13) on a training set.

        COD_full = 1 - MSE_full (k-fold CV MSE with every label, at each pixel's chosen
        (C, gamma)); COD(l) = COD_full (MSE_l - MSE_full) / sum_l (MSE_l - MSE_full) with
        MSE_l from leave-one-label-out training at the same per-pixel hyper-parameters.
        Returns {"full": [P], <label>: [P], ...}; pixels where no label matters get 0."""
        self._check_fitted()
        f, _, bad = self._flux_arrays(flux, None, n_pixels=self.n_pixels_)
        y, _, _ = self._label_arrays(labels, None, self.label_names_, n=f.shape[0], allow_missing=False)
        m = (~bad).astype(float)
        x = self.label_scaler_.transform(y)
        ys = np.where(bad, 0.0, self.flux_scaler_.transform(f))

        def cv_mse(xx):
            n = xx.shape[0]
            k = int(self.n_folds)
            fold = np.random.default_rng(self.random_state).permutation(np.arange(n) % k)
            sse = np.zeros(ys.shape[1])
            for i in range(k):
                tr, te = fold != i, fold == i
                lm, co, bias = self._fit_fixed(xx[tr], ys[tr], m[tr], self.C_, self.gamma_index_,
                                               list(self.gammas_))
                pred = _model_flux(xx[te], self.gammas_, self.gamma_index_, lm, co, bias)
                sse += (((pred - ys[te]) * m[te]) ** 2).sum(0)
            return sse / np.maximum(m.sum(0), 1)

        full = cv_mse(x)
        out = {"full": np.clip(1.0 - full, 0.0, 1.0)}
        losses = []
        M = x.shape[1]
        for j in range(M):
            losses.append(np.maximum(cv_mse(np.delete(x, j, axis=1)) - full, 0.0))
            report(progress, (j + 1) / M, f"COD: leave out {self.label_names_[j]}")
        tot = np.sum(losses, axis=0)
        for j, name in enumerate(self.label_names_):
            out[name] = np.where(tot > 0, out["full"] * losses[j] / np.where(tot > 0, tot, 1), 0.0)
        return out

    # ----------------------------------------------------------------- persistence
    def _state(self):
        meta = {"n_pixels": self.n_pixels_, "n_dropped_missing": self.n_dropped_missing_,
                "n_cleaned": self.n_cleaned_, "label_scaler": self.label_scaler_.to_dict(),
                "flux_scaler": self.flux_scaler_.to_dict(), "n_gamma": len(self.coefs_)}
        arrays = {"x_train": self.x_train_, "bias": self.bias_, "gammas": self.gammas_,
                  "C": self.C_, "gamma": self.gamma_, "gamma_index": self.gamma_index_,
                  "cv_mse": self.cv_mse_, "cv_md": self.cv_md_, "mse": self.mse_, "md": self.md_,
                  "cv_mse_grid": self.cv_mse_grid_, "cv_md_grid": self.cv_md_grid_,
                  "cv_refined_grid": self.cv_refined_grid_, "train_flux_std": self.train_flux_std_,
                  "train_mask": self.train_mask_}
        for g, (L, W) in enumerate(zip(self.landmarks_, self.coefs_, strict=True)):
            arrays[f"landmarks_{g}"] = L
            arrays[f"coef_{g}"] = W
        if self.wave_ is not None:
            arrays["wave"] = self.wave_
        return meta, arrays

    def _set_state(self, meta, a):
        if "proj_0" in a:
            raise FormatError("this SLAM model was saved by an older labelcore (eigen-feature "
                              "format without landmarks); retrain it with this version")
        self.n_pixels_ = meta["n_pixels"]
        self.n_dropped_missing_ = meta["n_dropped_missing"]
        self.n_cleaned_ = meta["n_cleaned"]
        self.label_scaler_ = Standardiser.from_dict(meta["label_scaler"])
        self.flux_scaler_ = Standardiser.from_dict(meta["flux_scaler"])
        self.x_train_, self.bias_, self.gammas_ = a["x_train"], a["bias"], a["gammas"]
        self.C_, self.gamma_, self.gamma_index_ = a["C"], a["gamma"], a["gamma_index"]
        self.cv_mse_, self.cv_md_, self.mse_, self.md_ = a["cv_mse"], a["cv_md"], a["mse"], a["md"]
        self.cv_mse_grid_, self.cv_md_grid_ = a["cv_mse_grid"], a["cv_md_grid"]
        self.cv_refined_grid_ = a.get("cv_refined_grid", np.zeros(self.cv_mse_grid_.shape, bool))
        self.train_flux_std_, self.train_mask_ = a["train_flux_std"], a["train_mask"]
        self.landmarks_ = [a[f"landmarks_{g}"] for g in range(meta["n_gamma"])]
        self.coefs_ = [a[f"coef_{g}"] for g in range(meta["n_gamma"])]
        self.wave_ = a.get("wave")
