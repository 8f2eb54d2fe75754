import numpy as np
import pandas as pd
import pytest

from labelcore.data import Catalogue, Labels, Spectra
from labelcore.errors import EmptySelectionError, ValidationError

WAVE = np.linspace(8420, 8780, 50)


def test_spectra_folds_nonfinite_and_bad_errors_into_mask():
    flux = np.ones((3, 50))
    err = np.full((3, 50), 0.01)
    flux[0, 3] = np.nan
    err[1, 7] = 0.0
    err[2, 9] = np.inf
    s = Spectra(WAVE, flux, err)
    assert s.mask[0, 3] and s.mask[1, 7] and s.mask[2, 9]
    assert s.mask.sum() == 3
    # masked pixels carry zero weight, never NaN
    iv = s.ivar()
    assert np.all(np.isfinite(iv)) and iv[0, 3] == 0 and iv[1, 7] == 0
    assert np.isfinite(s.flux).all()


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(wave=WAVE[::-1]), "not strictly increasing"),
        (dict(flux=np.ones((2, 49))), "columns; expected 50"),
        (dict(flux_err=np.ones((3, 50))), "rows; expected 2"),
        (dict(mask=np.zeros((2, 10), bool)), "mask has shape"),
        (dict(ids=np.array(["a"])), "ids has shape"),
    ],
)
def test_spectra_shape_errors_name_the_field(kwargs, msg):
    args = dict(wave=WAVE, flux=np.ones((2, 50)), flux_err=np.full((2, 50), 0.1))
    args.update(kwargs)
    with pytest.raises(ValidationError, match=msg):
        Spectra(**args)


def test_spectrum_with_no_usable_pixel_is_rejected():
    flux = np.ones((2, 50))
    flux[1] = np.nan
    with pytest.raises(ValidationError, match="row 1 has no usable pixel"):
        Spectra(WAVE, flux)


def test_unknown_errors_refuse_ivar():
    s = Spectra(WAVE, np.ones((1, 50)))
    assert not s.has_errors
    with pytest.raises(ValidationError, match="no flux uncertainties"):
        s.ivar()


def test_subset_and_empty_selection():
    s = Spectra(WAVE, np.arange(150.0).reshape(3, 50) + 1, ids=np.array(["a", "b", "c"]))
    sub = s.subset(np.array([False, True, True]))
    assert list(sub.ids) == ["b", "c"] and sub.flux[0, 0] == 51
    with pytest.raises(EmptySelectionError):
        s.subset(np.zeros(3, bool))


def test_labels_missing_and_errors():
    v = np.array([[5000.0, 2.5], [np.nan, 3.0]])
    e = np.array([[50.0, 0.1], [np.nan, 0.1]])
    lab = Labels(v, ["teff", "logg"], e)
    assert lab.missing.tolist() == [[False, False], [True, False]]
    assert lab.units == ["K", "dex"]
    with pytest.raises(ValidationError, match="non-positive or infinite uncertainty"):
        Labels(v, ["teff", "logg"], np.array([[0.0, 0.1], [1, 1]]))
    with pytest.raises(ValidationError, match="infinite at row 1"):
        Labels(np.array([[1.0, 2], [np.inf, 1]]), ["teff", "logg"])
    with pytest.raises(ValidationError, match="must be unique"):
        Labels(v, ["teff", "teff"])
    sel = lab.select(["logg"])
    assert sel.names == ["logg"] and sel.values[1, 0] == 3.0
    round_trip = Labels.from_frame(lab.to_frame(), ["teff", "logg"])
    np.testing.assert_array_equal(round_trip.errors, e)


def test_catalogue_validation():
    df = pd.DataFrame({"id": ["a", "b"], "teff": [5000, 4000], "teff_err": [50.0, 60.0]})
    assert len(Catalogue(df)) == 2
    with pytest.raises(ValidationError, match="duplicate id 'a' at row 1"):
        Catalogue(df.assign(id=["a", "a"]))
    with pytest.raises(ValidationError, match="non-positive uncertainty"):
        Catalogue(df.assign(teff_err=[50.0, -1.0]))
    with pytest.raises(ValidationError, match="no 'id' column"):
        Catalogue(df.drop(columns="id"))
