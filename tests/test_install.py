"""A normal (non-editable) install works: the package and its manifests (package data)
are found from outside the source tree."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_non_editable_install_finds_its_manifests(tmp_path):
    target = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                          "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (target / "labelcore" / "data_manifests" / "apogee_dr17.yaml").is_file()
    code = ("import labelcore, labelcore.data.manifests as m; "
            "print(labelcore.__file__); print(sorted(m.list_manifests())); "
            "print(m.load_manifest('apogee_dr17').presets.keys())")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    first, names, _ = run.stdout.splitlines()
    assert first.startswith(str(target))                  # the installed copy, not the source tree
    assert "apogee_dr17" in names and "synthetic" in names
