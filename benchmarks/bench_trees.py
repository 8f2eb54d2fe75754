"""The same workloads on two source trees of labelcore, measured in one run: did a change
(e.g. a restructuring) slow anything down?

    python benchmarks/bench_trees.py --before 21f5167 [--after REV] [--rounds 3]

``--before``/``--after`` are git revisions (checked out into temporary worktrees) or
folders; the after side defaults to this checkout. Each workload runs in a fresh process per tree and round,
alternating the trees, so both see the same machine state; the table shows the median
seconds per tree and the ratio after/before (1.00 = no change; the VM's noise between
processes is up to ~10 %). Workloads use only the method contract, which both trees share:

* ``lux``: Lux fit (P = 36, Omega = 1) on 2000 RAVE-like spectra, predict 4000;
* ``slam``: SLAM fit (3 folds, 2 x 2 grid) on 800 spectra, predict 2000;
* ``cnn``: CNN fit (4 members, 8 epochs) on 1500 spectra, predict 20000;
* ``catalogue``: a saved Lux model labelling a 20000-spectrum file chunk by chunk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
WORKLOADS = ("lux", "slam", "cnn", "catalogue")


def child(workload: str, scratch: str) -> dict:
    """Run one workload in this process; returns {"fit": s, "predict": s, "file": ...}."""
    import numpy as np

    import labelcore
    from labelcore.data.synth.datasets import labelled_set
    from labelcore.methods import CNN, SLAM, Lux

    out = {"file": labelcore.__file__}
    names = ("teff", "logg", "m_h", "alpha_m")
    if workload == "catalogue":
        from labelcore.catalogue import predict_catalogue
        from labelcore.data.containers import Spectra
        from labelcore.data.io import write_spectra

        d = labelled_set("rave", 1500, seed=4, label_names=names, snr=(20, 200))
        model_dir = Path(scratch) / "model"
        Lux(n_latent=24, omega=1.0).fit(d.flux, d.labels, flux_err=d.flux_err, label_names=names,
                                         wave=d.wave).save(model_dir)
        big = labelled_set("rave", 20000, seed=5, label_names=names, snr=(20, 200))
        sp = Path(scratch) / "s.h5"
        write_spectra(Spectra(big.wave, big.flux, big.flux_err, ids=np.arange(20000).astype(str)), sp)
        t = time.perf_counter()
        predict_catalogue(model_dir, sp, Path(scratch) / "c.parquet", chunk_rows=4096)
        out["predict"] = time.perf_counter() - t
        return out
    n_train, n_test, make = {
        "lux": (2000, 4000, lambda: Lux(n_latent=36, omega=1.0)),
        "slam": (800, 2000, lambda: SLAM(n_folds=3, C_grid=(1.0, 10.0), gamma_grid=(0.01, 0.1))),
        "cnn": (1500, 20000, lambda: CNN(n_members=4, members_per_model=4, max_epochs=8, patience=8)),
    }[workload]
    d = labelled_set("rave", n_train + n_test, seed=3, label_names=names, snr=(20, 200))
    tr, te = d.split(n_train)
    m = make()
    t = time.perf_counter()
    m.fit(tr.flux, tr.labels, flux_err=tr.flux_err, label_names=names, wave=tr.wave)
    out["fit"] = time.perf_counter() - t
    t = time.perf_counter()
    m.predict(te.flux, flux_err=te.flux_err)
    out["predict"] = time.perf_counter() - t
    return out


def tree_of(rev: str, tmp: Path, side: str) -> Path:
    """A folder as given, or a git revision checked out into a temporary worktree."""
    p = Path(rev)
    if p.is_dir():
        return p.resolve()
    wt = tmp / side
    subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(wt), rev], check=True,
                   capture_output=True)
    return wt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", help="git revision or source folder of the 'before' tree")
    ap.add_argument("--after", help="git revision or folder of the 'after' tree (default: this checkout)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--child", nargs=2, metavar=("WORKLOAD", "SCRATCH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(*a.child)))
        return 0
    if not a.before:
        ap.error("give --before REV")
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        trees = {"before": tree_of(a.before, tmp, "before"),
                 "after": tree_of(a.after, tmp, "after") if a.after else HERE}
        try:
            res = {w: {k: [] for k in trees} for w in a.workloads.split(",")}
            for rnd in range(a.rounds):
                for w in res:
                    for side in (("before", "after") if rnd % 2 == 0 else ("after", "before")):
                        env = dict(os.environ, PYTHONPATH=str(trees[side]), TF_CPP_MIN_LOG_LEVEL="2")
                        scratch = tempfile.mkdtemp(dir=tmp)
                        r = subprocess.run([sys.executable, __file__, "--child", w, scratch], env=env,
                                           capture_output=True, text=True, cwd=tmp)
                        if r.returncode != 0:
                            print(r.stdout, r.stderr, file=sys.stderr)
                            return 1
                        doc = json.loads(r.stdout.strip().splitlines()[-1])
                        assert doc["file"].startswith(str(trees[side])), (doc["file"], trees[side])
                        res[w][side].append(doc)
                        print(f"round {rnd + 1} {w:9s} {side:6s} " + ", ".join(
                            f"{k} {v:.2f} s" for k, v in doc.items() if k != "file"), flush=True)
            print(f"\nmedian of {a.rounds} rounds (seconds; ratio = after / before)")
            print(f"{'workload':10s} {'step':8s} {'before':>8s} {'after':>8s} {'ratio':>6s}")
            for w, sides in res.items():
                for step in [k for k in sides["before"][0] if k != "file"]:
                    b = statistics.median(d[step] for d in sides["before"])
                    f = statistics.median(d[step] for d in sides["after"])
                    print(f"{w:10s} {step:8s} {b:8.2f} {f:8.2f} {f / b:6.2f}")
        finally:
            for side in ("before", "after"):
                if (tmp / side).exists():
                    subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(tmp / side)],
                                   capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
