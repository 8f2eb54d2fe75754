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
