"""Standardisation (zero mean, unit variance) with masks, as SLAM section 2.1 (eqs. 2-4)
uses for every pixel and every label; also min-max scaling for the CNN (Guiglion 2020,
section 3.1)."""

from __future__ import annotations

import numpy as np

from labelcore.errors import ValidationError


class Standardiser:
    """Per-column mean/std computed over *good* entries only (weights > 0, finite).

    ``std`` uses the unbiased (m-1) denominator as in SLAM eq. (3). A column with zero
    variance raises (a constant label cannot be learned), naming the column.
    """

    def fit(self, x, good=None, names=None):
        x = np.asarray(x, float)
        good = np.isfinite(x) if good is None else (np.asarray(good, bool) & np.isfinite(x))
        n = good.sum(0)
        if np.any(n < 2):
            j = int(np.flatnonzero(n < 2)[0])
            raise ValidationError(f"column {names[j] if names else j} has fewer than 2 good values")
        xz = np.where(good, x, 0.0)
        self.mean_ = xz.sum(0) / n
        var = (np.where(good, x - self.mean_, 0.0) ** 2).sum(0) / (n - 1)
        self.std_ = np.sqrt(var)
        if np.any(self.std_ == 0):
            j = int(np.flatnonzero(self.std_ == 0)[0])
            raise ValidationError(f"column {names[j] if names else j} is constant; cannot standardise")
        return self

    def transform(self, x):
        return (np.asarray(x, float) - self.mean_) / self.std_

    def inverse(self, z):
        return np.asarray(z, float) * self.std_ + self.mean_

    def inverse_scale(self, dz):
        """Uncertainties back to physical units (scale only, no shift)."""
        return np.asarray(dz, float) * self.std_

    def to_dict(self):
        return {"mean": self.mean_.tolist(), "std": self.std_.tolist()}

    @classmethod
    def from_dict(cls, d):
        s = cls()
        s.mean_ = np.asarray(d["mean"], float)
        s.std_ = np.asarray(d["std"], float)
        return s


class MinMaxScaler:
    """Scale each column to [0, 1] over the training range (NaN ignored)."""

    def fit(self, x, names=None):
        x = np.asarray(x, float)
        self.min_ = np.nanmin(x, 0)
        self.max_ = np.nanmax(x, 0)
        if np.any(~np.isfinite(self.min_)) or np.any(self.max_ == self.min_):
            j = int(np.flatnonzero(~np.isfinite(self.min_) | (self.max_ == self.min_))[0])
            raise ValidationError(f"column {names[j] if names else j} is constant or empty")
        return self

    def transform(self, x):
        return (np.asarray(x, float) - self.min_) / (self.max_ - self.min_)

    def inverse(self, z):
        return np.asarray(z, float) * (self.max_ - self.min_) + self.min_

    def inverse_scale(self, dz):
        return np.asarray(dz, float) * (self.max_ - self.min_)
