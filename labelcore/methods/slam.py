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
  and fold, so it is built once (not 900 x 25 x 5 times) and diagonalised once:
  K = V diag(lambda) V^T, truncated where lambda < ``rank_tol`` x lambda_max (at most
  ``max_rank`` terms). The SVR of every pixel is then a linear SVR in these r features
  (exact up to the truncated kernel directions, which carry weight ~1/lambda in the RKHS
  norm and so cannot be used by the model at these C).
* All pixels (and all C values of the grid) are solved *at once* in JAX: the primal
  objective 1/2 |w|^2 + C sum_i L(y_i - phi_i w - b) with the epsilon-insensitive loss L
  smoothed quadratically over ``huber_delta`` beyond the tube (annealed from 1 to
  ``huber_delta``), by batched Newton-CG with a backtracking line search. The bias b is
  not regularised, as in libsvm. Bad pixels of a star have zero weight in that pixel's
  regression only.
* Prediction runs Levenberg-Marquardt for all stars at once (vectorised JAX: analytic
  Jacobians, per-star damping and convergence flags), instead of one
  ``scipy.optimize.least_squares`` call per star.

``benchmarks/bench_slam.py`` measures the speed-up and how often the per-pixel (C, gamma)
choices agree with a straightforward per-pixel ``GridSearchCV(SVR)``.
"""

from __future__ import annotations

import time
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from labelcore.errors import ValidationError
from labelcore.methods.base import LabelMethod, report
from labelcore.prep.standardise import Standardiser

DEFAULT_C = tuple(float(x) for x in 10.0 ** np.array([0.0, 0.5, 1.0, 1.5, 2.0]))
DEFAULT_GAMMA = tuple(float(x) for x in 10.0 ** np.array([-3.0, -2.5, -2.0, -1.5, -1.0]))


# ----------------------------------------------------------------------------- kernels
def rbf(xa, xb, gamma):
    d2 = (np.sum(xa**2, 1)[:, None] + np.sum(xb**2, 1)[None, :] - 2 * xa @ xb.T)
    return np.exp(-gamma * np.maximum(d2, 0.0))


def kernel_features(x, gamma, rank_tol, max_rank):
    """Eigen-features of the RBF kernel on ``x``: returns (phi [N, r], proj [N, r]) with
    phi = V sqrt(lambda) and proj = V / sqrt(lambda), so that phi(x*) = k(x*, x) @ proj."""
    K = rbf(x, x, gamma)
    lam, V = np.linalg.eigh(K)
    lam, V = lam[::-1], V[:, ::-1]
    keep = lam > rank_tol * lam[0]
    r = int(min(keep.sum(), max_rank))
    lam, V = lam[:r], V[:, :r]
    return V * np.sqrt(lam), V / np.sqrt(lam)


@partial(jax.jit, static_argnames=("n_newton", "n_cg"))
def _svr_solve(phi, y, m, c, eps, delta_final, theta0, delta0=1.0, n_newton=25, n_cg=12):
    """Batched smoothed-primal SVR: columns of y [N, J] with masks m [N, J] and penalties
    c [J] on shared features phi [N, r]. Returns theta [r + 1, J] (last row = bias)."""
    n, r = phi.shape
    X = jnp.concatenate([phi, jnp.ones((n, 1), phi.dtype)], axis=1)
    reg = jnp.ones(r + 1, phi.dtype).at[-1].set(1e-8)[:, None]

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

        def cg_step(_, st):
            x, rr, p, rs = st
            Ap = hvp(p)
            a = rs / (jnp.sum(p * Ap, 0) + 1e-30)
            x = x + a * p
            rr = rr - a * Ap
            rs2 = jnp.sum(rr * rr, 0)
            p = rr + (rs2 / (rs + 1e-30)) * p
            return x, rr, p, rs2

        rr0 = -g
        d, _, _, _ = jax.lax.fori_loop(0, n_cg, cg_step, (jnp.zeros_like(g), rr0, rr0, jnp.sum(rr0 * rr0, 0)))
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


# ----------------------------------------------------------------------------- predict
@partial(jax.jit, static_argnames=("n_iter",))
def _lm_batch(theta0, f, w, xtr, gammas, projs, ws, biases, n_iter=50, tol=1e-6):
    """Levenberg-Marquardt for S stars at once.

    f, w [S, J] standardised flux and weights 1/(sigma_obs^2 + sigma_model^2) (0 = bad);
    for each gamma group g: projs[g] [N, r], ws[g] [r, J] (zero for pixels of other
    groups), biases [J]."""

    def flux_only(theta):
        d2 = jnp.sum((theta[:, None, :] - xtr[None, :, :]) ** 2, -1)
        out = jnp.zeros(f.shape, f.dtype) + biases[None, :]
        for g in range(len(gammas)):
            out = out + (jnp.exp(-gammas[g] * d2) @ projs[g]) @ ws[g]
        return out

    def model(theta):  # theta [S, M] -> flux [S, J], jac [S, J, M]
        d = theta[:, None, :] - xtr[None, :, :]            # [S, N, M]
        d2 = jnp.sum(d * d, -1)                              # [S, N]
        out = jnp.zeros(f.shape, f.dtype) + biases[None, :]
        jac = jnp.zeros(f.shape + (theta.shape[1],), f.dtype)
        for g in range(len(gammas)):
            k = jnp.exp(-gammas[g] * d2)                     # [S, N]
            kp = k @ projs[g]                                # [S, r]
            out = out + kp @ ws[g]
            dk = (-2.0 * gammas[g]) * k[:, :, None] * d      # [S, N, M]
            dkp = jnp.einsum("snm,nr->smr", dk, projs[g])    # [S, M, r]
            jac = jac + jnp.einsum("smr,rj->sjm", dkp, ws[g])
        return out, jac

    def chi2(theta):
        return jnp.sum(w * (f - flux_only(theta)) ** 2, 1)

    def body(i, st):
        theta, lam, c2, done, nit = st
        mod, jac = model(theta)
        r = f - mod
        jtw = jac * w[:, :, None]
        H = jnp.einsum("sjm,sjn->smn", jtw, jac)
        g = jnp.einsum("sjm,sj->sm", jtw, r)
        diag = jnp.diagonal(H, axis1=1, axis2=2)
        A = H + lam[:, None, None] * (jnp.eye(H.shape[1])[None] * (diag[:, None, :] + 1e-9))
        step = jnp.linalg.solve(A, g[..., None])[..., 0]
        cand = theta + step
        c2n = chi2(cand)
        ok = (c2n < c2) & ~done
        rel = (c2 - c2n) / jnp.maximum(c2, 1e-30)
        theta = jnp.where(ok[:, None], cand, theta)
        newly = ok & (rel < tol)
        stalled = ~ok & (lam > 1e6)
        done2 = done | newly | stalled
        nit = jnp.where(done, nit, nit + 1)
        lam = jnp.where(ok, lam / 3.0, lam * 4.0)
        c2 = jnp.where(ok, c2n, c2)
        return theta, lam, c2, done2, nit

    s = theta0.shape[0]
    st = (theta0, jnp.full(s, 1e-2, f.dtype), chi2(theta0), jnp.zeros(s, bool), jnp.zeros(s, jnp.int32))

    def cond(st_i):
        st, i = st_i
        return (i < n_iter) & ~jnp.all(st[3])

    def step(st_i):
        st, i = st_i
        return body(i, st), i + 1

    (theta, lam, c2, done, nit), _ = jax.lax.while_loop(cond, step, (st, 0))
    mod, jac = model(theta)
    jtw = jac * w[:, :, None]
    H = jnp.einsum("sjm,sjn->smn", jtw, jac)
    return theta, H, c2, done, nit, mod


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
    rank_tol, max_rank : truncation of the kernel eigen-decomposition.
    huber_delta : smoothing width of the loss beyond the tube (standardised flux).
    n_newton : Newton iterations of the batched SVR solver.
    lm_max_iter, lm_tol : Levenberg-Marquardt limits (per-star convergence flag).
    batch_size : stars per LM batch (memory ~ batch x N_train x M floats).
    random_state : seed of the fold assignment.
    """

    _format = "labelcore-slam"

    def __init__(self, C_grid=DEFAULT_C, gamma_grid=DEFAULT_GAMMA, epsilon=0.05, n_folds=5,
                 clean=False, clean_sigma=4.0, rank_tol=1e-7, max_rank=300, huber_delta=0.01,
                 n_newton=20, lm_max_iter=60, lm_tol=1e-7, batch_size=256, random_state=0):
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
        self.lm_max_iter = lm_max_iter
        self.lm_tol = lm_tol
        self.batch_size = batch_size
        self.random_state = random_state

    # ----------------------------------------------------------------- training pieces
    def _cv_grid(self, x, y, m, Cs, gammas, progress=None, frac=(0.0, 1.0)):
        """CV MSE and MD [J, nC, nG] for every pixel and grid point."""
        n, J = y.shape
        k = int(self.n_folds)
        rng = np.random.default_rng(self.random_state)
        fold = rng.permutation(np.arange(n) % k)
        sse = np.zeros((J, len(Cs), len(gammas)))
        sd = np.zeros_like(sse)
        cnt = np.zeros(J)
        order = np.argsort(Cs)
        total = k * len(gammas)
        for i in range(k):
            tr, te = fold != i, fold == i
            cnt += m[te].sum(0)
            for gi, g in enumerate(gammas):
                phi, proj = kernel_features(x[tr], g, self.rank_tol, self.max_rank)
                phit = rbf(x[te], x[tr], g) @ proj
                theta = None
                for ci in order:  # C path, each solution warm-starts the next
                    theta = svr_fit(phi, y[tr], m[tr], np.full(J, Cs[ci]), self.epsilon,
                                    self.huber_delta, self.n_newton, theta0=theta)
                    res = (phit @ theta[:-1] + theta[-1] - y[te]) * m[te]
                    sse[:, ci, gi] += (res**2).sum(0)
                    sd[:, ci, gi] += res.sum(0)
                done = i * len(gammas) + gi + 1
                report(progress, frac[0] + (frac[1] - frac[0]) * done / total,
                       f"SLAM CV fold {i + 1}/{k}, gamma={g:.3g}")
        cnt = np.maximum(cnt, 1)[:, None, None]
        return sse / cnt, sd / cnt

    def _fit_fixed(self, x, y, m, C, gidx, gammas):
        """Final per-pixel SVRs on all stars with per-pixel C [J] and gamma index [J]."""
        J = y.shape[1]
        projs, ws = [], []
        bias = np.zeros(J)
        for gi, g in enumerate(gammas):
            phi, proj = kernel_features(x, g, self.rank_tol, self.max_rank)
            cols = np.flatnonzero(gidx == gi)
            w = np.zeros((proj.shape[1], J))
            if cols.size:
                theta = svr_fit(phi, y[:, cols], m[:, cols], C[cols], self.epsilon,
                                self.huber_delta, self.n_newton)
                w[:, cols] = theta[:-1]
                bias[cols] = theta[-1]
            projs.append(proj)
            ws.append(w)
        return projs, ws, bias

    def _predict_flux_std(self, xq, x, gammas, projs, ws, bias):
        out = np.zeros((xq.shape[0], bias.size)) + bias
        for g, p, w in zip(gammas, projs, ws):
            out += (rbf(xq, x, g) @ p) @ w
        return out

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
        mse, md = self._cv_grid(x, ys, m, Cs, gammas, progress, (0.0, 0.8))
        flat = mse.reshape(mse.shape[0], -1)
        best = np.argmin(flat, axis=1)
        ci, gi = np.unravel_index(best, (len(Cs), len(gammas)))
        self.cv_mse_grid_, self.cv_md_grid_ = mse, md
        self.C_ = np.asarray(Cs)[ci]
        self.gamma_ = np.asarray(gammas)[gi]
        self.gamma_index_ = gi
        self.cv_mse_ = flat[np.arange(flat.shape[0]), best]
        self.cv_md_ = md.reshape(md.shape[0], -1)[np.arange(flat.shape[0]), best]
        report(progress, 0.85, "SLAM: refitting every pixel on all stars")
        projs, ws, bias = self._fit_fixed(x, ys, m, self.C_, gi, gammas)
        self.x_train_, self.projs_, self.ws_, self.bias_ = x, projs, ws, bias
        self.gammas_ = np.asarray(gammas)
        fit = self._predict_flux_std(x, x, gammas, projs, ws, bias)
        res = (fit - ys) * m
        cnt = np.maximum(m.sum(0), 1)
        self.mse_ = (res**2).sum(0) / cnt
        self.md_ = res.sum(0) / cnt
        self.train_flux_std_ = ys  # standardised training flux (initial guesses)
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

    def predict_details(self, flux, *, flux_err=None):
        """Labels, formal errors, convergence flags, iterations, chi2, fit RMSE per star."""
        self._check_fitted()
        f, e, bad = self._flux_arrays(flux, flux_err, n_pixels=self.n_pixels_)
        fs = np.where(bad, 0.0, self.flux_scaler_.transform(f))
        sig_obs = np.zeros_like(f) if e is None else np.where(bad, 0.0, e / self.flux_scaler_.std_)
        w = np.where(bad, 0.0, 1.0 / (sig_obs**2 + self.cv_mse_[None, :]))
        # initial guess: the training spectrum with the highest likelihood
        tm = self.train_mask_.astype(float)
        tf = self.train_flux_std_
        chi = (w * fs**2).sum(1)[:, None] - 2 * (w * fs) @ (tf * tm).T + w @ (tf**2 * tm).T
        theta0 = self.x_train_[np.argmin(chi, axis=1)]
        out = {k: [] for k in ("theta", "H", "chi2", "done", "nit", "model")}
        used = [g for g in range(len(self.projs_)) if np.any(self.gamma_index_ == g)]
        projs = tuple(jnp.asarray(self.projs_[g], jnp.float32) for g in used)
        ws = tuple(jnp.asarray(self.ws_[g], jnp.float32) for g in used)
        gams = tuple(float(self.gammas_[g]) for g in used)
        xtr = jnp.asarray(self.x_train_, jnp.float32)
        for a in range(0, f.shape[0], int(self.batch_size)):
            sl = slice(a, a + int(self.batch_size))
            res = _lm_batch(jnp.asarray(theta0[sl], jnp.float32), jnp.asarray(fs[sl], jnp.float32),
                            jnp.asarray(w[sl], jnp.float32), xtr, gams, projs, ws, jnp.asarray(self.bias_, jnp.float32),
                            n_iter=int(self.lm_max_iter), tol=float(self.lm_tol))
            for key, v in zip(out, res):
                out[key].append(np.asarray(v, np.float64))
        theta = np.concatenate(out["theta"])
        H = np.concatenate(out["H"])
        M = theta.shape[1]
        cov = np.linalg.pinv(H + 1e-12 * np.eye(M))
        std = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0, None))
        model = np.concatenate(out["model"])
        good = ~bad
        rmse = np.sqrt(np.sum(np.where(good, ((model - fs) * self.flux_scaler_.std_) ** 2, 0), 1)
                       / np.maximum(good.sum(1), 1))
        return {
            "labels": self.label_scaler_.inverse(theta),
            "errors": self.label_scaler_.inverse_scale(std),
            "converged": np.concatenate(out["done"]).astype(bool),
            "n_iter": np.concatenate(out["nit"]).astype(int),
            "chi2": np.concatenate(out["chi2"]),
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
        fs = self._predict_flux_std(xs, self.x_train_, self.gammas_, self.projs_, self.ws_, self.bias_)
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
                projs, ws, bias = self._fit_fixed(xx[tr], ys[tr], m[tr], self.C_, self.gamma_index_,
                                                  list(self.gammas_))
                pred = self._predict_flux_std(xx[te], xx[tr], self.gammas_, projs, ws, bias)
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
                "flux_scaler": self.flux_scaler_.to_dict(), "n_gamma": len(self.projs_)}
        arrays = {"x_train": self.x_train_, "bias": self.bias_, "gammas": self.gammas_,
                  "C": self.C_, "gamma": self.gamma_, "gamma_index": self.gamma_index_,
                  "cv_mse": self.cv_mse_, "cv_md": self.cv_md_, "mse": self.mse_, "md": self.md_,
                  "cv_mse_grid": self.cv_mse_grid_, "cv_md_grid": self.cv_md_grid_,
                  "train_flux_std": self.train_flux_std_, "train_mask": self.train_mask_}
        for g, (p, w) in enumerate(zip(self.projs_, self.ws_)):
            arrays[f"proj_{g}"] = p
            arrays[f"w_{g}"] = w
        if self.wave_ is not None:
            arrays["wave"] = self.wave_
        return meta, arrays

    def _set_state(self, meta, a):
        self.n_pixels_ = meta["n_pixels"]
        self.n_dropped_missing_ = meta["n_dropped_missing"]
        self.n_cleaned_ = meta["n_cleaned"]
        self.label_scaler_ = Standardiser.from_dict(meta["label_scaler"])
        self.flux_scaler_ = Standardiser.from_dict(meta["flux_scaler"])
        self.x_train_, self.bias_, self.gammas_ = a["x_train"], a["bias"], a["gammas"]
        self.C_, self.gamma_, self.gamma_index_ = a["C"], a["gamma"], a["gamma_index"]
        self.cv_mse_, self.cv_md_, self.mse_, self.md_ = a["cv_mse"], a["cv_md"], a["mse"], a["md"]
        self.cv_mse_grid_, self.cv_md_grid_ = a["cv_mse_grid"], a["cv_md_grid"]
        self.train_flux_std_, self.train_mask_ = a["train_flux_std"], a["train_mask"]
        self.projs_ = [a[f"proj_{g}"] for g in range(meta["n_gamma"])]
        self.ws_ = [a[f"w_{g}"] for g in range(meta["n_gamma"])]
        self.wave_ = a.get("wave")
