import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata():
    if not REALDATA.exists():
        pytest.skip("../shared/realdata is not present")
    return REALDATA


@pytest.fixture(scope="session")
def small_survey(tmp_path_factory):
    """A small synthetic survey shared by the tests (about 2 s to make)."""
    from labelcore.data.synth.survey import make_survey

    path = tmp_path_factory.mktemp("survey") / "small"
    make_survey(path, n_catalogue=6000, n_spectra={"rave": 1500, "lamost": 400, "apogee": 300},
                seed=7)
    return path


@pytest.fixture()
def rng():
    return np.random.default_rng(12345)


RUN_LABELS = ["teff", "logg", "m_h"]
RUN_DATA = {"kind": "synthetic", "setup": "rave", "n_train": 240, "n_test": 60, "seed": 5, "labels": RUN_LABELS,
            "snr": [20, 300]}


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory):
    """A run store with one finished run of each method on the same synthetic data (small
    settings, about 30 s in all): {"store": RunStore, "CNN": Run, "SLAM": Run, "Lux": Run}."""
    from labelcore.runs import RunStore, execute

    store = RunStore(tmp_path_factory.mktemp("runs"))
    cfgs = {
        "SLAM": {"n_folds": 3, "C_grid": [1.0, 10.0], "gamma_grid": [0.01, 0.1]},
        "CNN": {"n_members": 5, "max_epochs": 3, "batch_size": 32},
        "Lux": {"latent_grid": [1, 2], "omega_grid": [1.0, 10.0], "n_folds": 3},
    }
    out = {"store": store}
    for method, params in cfgs.items():
        run = store.create({"method": method, "params": params, "data": dict(RUN_DATA), "name": f"{method} test"})
        execute(run)
        assert run.state == "done", run.status()
        out[method] = run
    return out
