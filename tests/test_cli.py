import json
import subprocess
import sys

from labelcore.cli import main


def test_synth_build_info(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["synth", "--out", str(out), "--n-stars", "3000", "--n-rave", "400",
                 "--n-lamost", "50", "--n-apogee", "200"]) == 0
    assert json.loads((out / "survey.json").read_text())["n_catalogue"] == 3000
    ts = tmp_path / "ts"
    assert main(["build-training-set", str(out), "--out", str(ts), "--setup", "rave",
                 "--labels", "guiglion2020", "--photometry",
                 "--cut", '{"column": "snr_rave", "op": ">", "value": 20}']) == 0
    printed = capsys.readouterr().out
    assert "snr_rave > 20" in printed and "saved training set" in printed
    assert main(["info", str(ts)]) == 0
    assert main(["info", str(out / "spectra_rave.h5")]) == 0
    assert '"n_pixels": 900' in capsys.readouterr().out


def test_user_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["build-training-set", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "no spectra for set-up 'rave'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "labelcore.cli", "manifests"], capture_output=True,
                       text=True, check=True)
    assert "apogee_dr17" in r.stdout and "horta2024_A" in r.stdout


def test_train_and_runs_commands(tmp_path, capsys):
    store = tmp_path / "runs"
    assert main(["train", "--method", "Lux", "--params", '{"n_latent": 6, "omega": 1.0}', "--n-train", "200",
                 "--n-test", "60", "--labels", "teff,logg,m_h", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "held-out scatter (bias) against true labels" in out and "teff" in out
    assert main(["runs", "--store", str(store)]) == 0
    assert "done" in capsys.readouterr().out
    # user errors: one line, exit 2, no run folder left behind
    assert main(["train", "--method", "Lux", "--params", '{"bogus": 1}', "--store", str(store)]) == 2
    assert "no hyper-parameter(s) ['bogus']" in capsys.readouterr().err
    assert len([p for p in store.iterdir() if not p.name.startswith(".")]) == 1
    # a training that fails exits 1 and says why
    assert main(["train", "--method", "CNN", "--n-train", "20", "--n-test", "5", "--store", str(store)]) == 1
    assert "too few to train the CNN" in capsys.readouterr().err


def test_predict_command(tmp_path, capsys, finished_runs, small_survey):
    from labelcore.data.io import read_table

    run = finished_runs["Lux"]
    out = tmp_path / "cat.parquet"
    assert main(["predict", run.id, str(small_survey / "spectra_rave.h5"), "--out", str(out),
                 "--store", str(finished_runs["store"].root), "--chunk-rows", "500"]) == 0
    assert "spectra/s" in capsys.readouterr().out
    cat = read_table(out)
    from labelcore.data.io import spectra_info

    assert len(cat) == spectra_info(small_survey / "spectra_rave.h5")["n_spectra"]
    assert {"teff", "teff_err", "teff_flag", "snr"} <= set(cat.columns)
    assert main(["predict", "no-such-run", str(small_survey / "spectra_rave.h5"), "--out", str(out),
                 "--store", str(finished_runs["store"].root)]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err
