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
