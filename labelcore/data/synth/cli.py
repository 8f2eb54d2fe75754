"""``labelcore synth``: the synthetic generator's command (it lives with the generator; the
main CLI loads it by name, so real-data commands never import the generator)."""

from __future__ import annotations

import time
from pathlib import Path

from labelcore.data.io import check_replaceable
from labelcore.data.synth.survey import DEFAULT_PARAMS, default_data_dir, ensure_survey, make_survey


def _progress(frac, msg):
    print(f"  [{frac * 100:5.1f}%] {msg}", flush=True)


def cmd_synth(a) -> int:
    if a.default:
        t = time.perf_counter()
        path = ensure_survey(Path(a.out) if a.out else None)
        print(f"default survey ready at {path} ({time.perf_counter() - t:.1f} s)")
        return 0
    out = Path(a.out) if a.out else default_data_dir() / "survey"
    check_replaceable(out, "survey", force=a.force)           # before the work, not after
    n_spec = dict(DEFAULT_PARAMS["n_spectra"])
    for setup in ("rave", "lamost", "apogee"):
        v = getattr(a, f"n_{setup}")
        if v is not None:
            n_spec[setup] = v
    t = time.perf_counter()
    info = make_survey(out, n_catalogue=a.n_stars, n_spectra=n_spec, seed=a.seed,
                       normalised=not a.raw, rest_frame=not a.raw, progress=_progress, force=a.force)
    dt = time.perf_counter() - t
    print(f"wrote {out}: {info['n_catalogue']} stars, observations {info['n_observations']}, "
          f"{info['n_label_survey']} label-survey rows in {dt:.1f} s")
    for k, v in info["timings"].items():
        print(f"  {k}: {v:.1f}")
    return 0
