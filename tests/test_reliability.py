"""Nothing run twice, nothing lost: concurrent submitters and pollers, processes killed
with SIGKILL at random points, stale runs, and folders that are not ours.

Every subprocess is bounded in time and works on this machine's files only."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labelcore.data.io import atomic_dir, atomic_path, read_table, recover_artifact, spectra_info
from labelcore.errors import ValidationError
from labelcore.prep.training import TrainingSet
from labelcore.runs import JobQueue, RunError, RunStore

PY = sys.executable
LABELCORE = str(Path(sys.executable).parent / "labelcore")
TINY = {"method": "Lux", "params": {"n_latent": 4, "omega": 1.0},
        "data": {"kind": "synthetic", "setup": "rave", "n_train": 40, "n_test": 10, "labels": ["teff", "logg"],
                 "seed": 1}}


def _env(**kw):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **{k: str(v) for k, v in kw.items()})


def _starts(run) -> int:
    return sum(1 for line in run.log_text().splitlines() if line.endswith(" started"))


# --------------------------------------------------------------------- exactly once
SUBMIT = """
import sys
from labelcore.runs import RunStore
cfg = {cfg}
s = RunStore(sys.argv[1])
for k in range(3):
    s.create(dict(cfg, name=f"{{sys.argv[2]}}-{{k}}"))
"""
POLL = """
import sys, time
from labelcore.runs import JobQueue, RunStore, FINAL_STATES
q = JobQueue(RunStore(sys.argv[1]), max_workers=1)
t0 = time.monotonic()
while time.monotonic() - t0 < 240:
    q.poll()
    runs = q.store.runs()
    if len(runs) >= int(sys.argv[2]) and all(r.state in FINAL_STATES for r in runs) and not q.active:
        break
    time.sleep(0.1)
"""


def test_three_submitters_and_two_pollers_run_every_run_exactly_once(tmp_path):
    root = tmp_path / "store"
    RunStore(root)
    pollers = [subprocess.Popen([PY, "-c", POLL, str(root), "9"], env=_env()) for _ in range(2)]
    subs = [subprocess.Popen([PY, "-c", SUBMIT.format(cfg=repr(TINY)), str(root), f"s{i}"], env=_env())
            for i in range(3)]
    for p in subs:
        assert p.wait(timeout=120) == 0
    for p in pollers:
        assert p.wait(timeout=300) == 0
    runs = RunStore(root).runs()
    assert len(runs) == 9
    owners = set()
    for r in runs:
        assert r.state == "done", r.status()
        assert _starts(r) == 1, r.log_text()                 # started once, by one process
        owners.add(r.claim_info()["owner"])
    assert len(owners) == 2                                   # both pollers took runs; neither took one twice


def test_cli_background_run_in_a_store_a_queue_polls_runs_once(tmp_path):
    root = tmp_path / "store"
    q = JobQueue(RunStore(root)).start(interval=0.1)        # the app's queue thread
    try:
        out = subprocess.run([LABELCORE, "train", "--method", "Lux", "--params", '{"n_latent": 4, "omega": 1.0}',
                              "--n-train", "40", "--n-test", "10", "--labels", "teff,logg", "--store", str(root),
                              "--background"], env=_env(), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        run = RunStore(root).runs()[0]
        t0 = time.monotonic()
        while run.state not in ("done", "failed") and time.monotonic() - t0 < 180:
            time.sleep(0.3)
    finally:
        q.stop()
    assert run.state == "done", run.status()
    assert _starts(run) == 1 and run.claim_info()["owner"].startswith("queue")


def test_claims_are_exclusive_and_cancel_takes_the_claim(tmp_path):
    store = RunStore(tmp_path)
    run = store.create(TINY)
    tok = run.claim("a")
    assert tok and run.claim("b") is None and run.claim_info()["owner"] == "a"
    other = store.create(TINY)
    other.cancel()                                           # queued: cancelled at once, and claimed
    assert other.state == "cancelled" and other.claim("poller") is None
    born = store.create(TINY, claim="cli")
    assert born.claim_token and born.claim("poller") is None


def test_stale_runs_fail_with_a_reason_whatever_their_pid(tmp_path, monkeypatch):
    monkeypatch.setenv("LABELCORE_HEARTBEAT", "1")
    store = RunStore(tmp_path)
    run = store.create(TINY)
    run.claim("dead poller")
    # running, with a live PID (this test's: a reused PID) but a heartbeat that stopped
    run._set_status(state="running", pid=os.getpid(), host=os.uname().nodename)
    run.beat()
    assert run.state == "running"
    old = time.time() - 5
    os.utime(run.path / "heartbeat", (old, old))
    st = run.status()
    assert st["state"] == "failed" and "no heartbeat" in st["error"]
    run.cancel()
    assert run.state == "cancelled"
    store.delete(run.id)
    assert store.runs() == []
    # claimed but never started (the launching process died): failed, never re-run
    lost = store.create(TINY)
    lost.claim("a poller killed before it launched")
    info = json.loads((lost.path / "claim").read_text())
    info["time"] = time.time() - 5
    (lost.path / "claim").write_text(json.dumps(info))
    st = lost.status()
    assert st["state"] == "failed" and "never started" in st["error"]
    q = JobQueue(store)
    q.poll()
    assert q.active == [] and _starts(lost) == 0


def test_a_running_run_cannot_be_deleted_or_executed_twice(tmp_path):
    from labelcore.runs import execute

    store = RunStore(tmp_path)
    run = store.create(TINY)
    tok = run.claim("me")
    with pytest.raises(RunError, match="claimed by another process"):
        execute(run)
    with pytest.raises(RunError, match="token does not match"):
        execute(run, token="forged")
    execute(run, token=tok)
    assert run.state == "done" and _starts(run) == 1
    with pytest.raises(RunError, match="already done"):
        execute(run)


# --------------------------------------------------------------------- kill -9
def _kill_at(cmd, delay, env):
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        p.wait(timeout=delay)
        return p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        return None


def test_kill_9_during_training_leaves_a_consistent_store(tmp_path):
    rng = random.Random(12)
    env = _env(LABELCORE_HEARTBEAT=2)
    root = tmp_path / "store"
    results = []
    for trial in range(4):
        delay = rng.uniform(0.5, 9.0)
        code = _kill_at([LABELCORE, "train", "--method", "Lux", "--params", '{"n_latent": 4, "omega": 1.0}',
                         "--n-train", "60", "--n-test", "10", "--labels", "teff,logg", "--store", str(root),
                         "--name", f"trial {trial}"], delay, env)
        results.append((round(delay, 2), code))
    time.sleep(2.5)                                          # past the heartbeat timeout
    store = RunStore(root)
    runs = store.runs()
    assert len(runs) <= 4
    for r in runs:
        st = subprocess.run([PY, "-c", f"from labelcore.runs import Run; print(Run({str(r.path)!r}).state)"],
                            env=env, capture_output=True, text=True, timeout=60).stdout.strip()
        assert st in ("done", "failed"), (st, r.status())
        if (r.path / "model").exists():                      # a model is whole or absent
            r.model()
        if st == "done":
            assert len(r.predictions()) == 10
    for r in runs:                                           # stale runs can be deleted
        os.environ["LABELCORE_HEARTBEAT"] = "2"
        try:
            store.delete(r.id)
        finally:
            del os.environ["LABELCORE_HEARTBEAT"]
    assert store.runs() == []
    print("kill -9 during training:", results)


def test_kill_9_while_replacing_a_training_set_keeps_old_or_new_whole(small_survey, tmp_path):
    out = tmp_path / "ts"
    base = [LABELCORE, "build-training-set", str(small_survey), "--out", str(out), "--setup", "rave",
            "--labels", "teff,logg,m_h"]
    subprocess.run(base + ["--max-stars", "200"], env=_env(), check=True, capture_output=True, timeout=120)
    sizes = {len(TrainingSet.load(out))}
    rng = random.Random(5)
    for trial in range(4):
        n = 300 + 100 * trial
        _kill_at(base + ["--max-stars", str(n)], rng.uniform(0.5, 6.0), _env())
        ts = TrainingSet.load(out)                             # old or new, whole (recovered if needed)
        assert len(ts) in sizes | {n}, (len(ts), sizes, n)
        sizes.add(len(ts))
        assert ts.spectra.n_spectra == len(ts.table)
    recover_artifact(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ts.")]


def test_kill_9_during_predict_leaves_no_partial_catalogue(finished_runs, small_survey, tmp_path):
    lux = finished_runs["Lux"]
    out = tmp_path / "cat.parquet"
    spectra = small_survey / "spectra_rave.h5"
    n = spectra_info(spectra)["n_spectra"]
    rng = random.Random(9)
    for _trial in range(3):
        code = _kill_at([LABELCORE, "predict", str(lux.path), str(spectra), "--out", str(out), "--chunk-rows",
                         "200"], rng.uniform(1.0, 8.0), _env())
        if out.exists():
            cat = read_table(out)
            assert len(cat) == n                              # whole, never a part
        else:
            assert code is None
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "cat.parquet"]
    # a killed writer's temporary file is removed by the next write of the same target
    subprocess.run([LABELCORE, "predict", str(lux.path), str(spectra), "--out", str(out)], env=_env(), check=True,
                   capture_output=True, timeout=300)
    assert [p.name for p in tmp_path.iterdir()] == ["cat.parquet"], leftovers
    assert len(read_table(out)) == n


def test_kill_9_during_synth_into_an_existing_survey(tmp_path):
    out = tmp_path / "survey"
    base = [LABELCORE, "synth", "--out", str(out), "--n-stars", "3000", "--n-lamost", "50", "--n-apogee", "20"]
    subprocess.run(base + ["--n-rave", "100"], env=_env(), check=True, capture_output=True, timeout=120)
    rng = random.Random(3)
    for trial in range(3):
        _kill_at(base + ["--n-rave", str(200 + 100 * trial)], rng.uniform(0.5, 5.0), _env())
        recover_artifact(out)
        info = json.loads((out / "survey.json").read_text())      # old or new, whole
        assert len(read_table(out / "catalogue.parquet")) == info["n_catalogue"] == 3000


# --------------------------------------------------------------------- writes
def test_concurrent_writers_of_one_folder_never_mix(tmp_path):
    out = tmp_path / "survey"
    cmd = [LABELCORE, "synth", "--out", str(out), "--n-stars", "2000", "--n-lamost", "30", "--n-apogee", "20"]
    procs = [subprocess.Popen(cmd + ["--n-rave", str(50 + 10 * i), "--seed", str(i)], env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(3)]
    for p in procs:
        p.wait(timeout=180)
        p.stderr.close()
    info = json.loads((out / "survey.json").read_text())
    seed = info["params"]["seed"]
    from labelcore.data.io import read_spectra

    assert info["params"]["n_spectra"]["rave"] == 50 + 10 * seed
    # one writer's files only: the spectra file is the one survey.json describes
    assert read_spectra(out / "spectra_rave.h5").n_spectra == info["n_observations"]["rave"]
    assert not [p for p in tmp_path.iterdir() if p.name != "survey"]


def test_atomic_writes_keep_modes_and_never_change_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "a.json") as tmp:
            tmp.write_text("{}")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
        assert os.umask(0o027) == 0o027                       # nobody changed it meanwhile
    finally:
        os.umask(old)


def test_atomic_dir_refuses_other_folders_and_cleans_dead_writers(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.csv").write_text("1,2")
    with pytest.raises(ValidationError, match="refusing"), atomic_dir(mine, "training_set"):
        pass
    assert (mine / "data.csv").exists()
    with atomic_dir(mine, "training_set", force=True) as tmp:
        (tmp / "training_set.json").write_text("{}")
    assert not (mine / "data.csv").exists()
    # a dead writer's leftovers (pid 999999 on this host) are removed by the next write
    host = os.uname().nodename
    dead = tmp_path / f".mine.{host}-999999-0123abcd.partial"
    dead.mkdir()
    aside = tmp_path / f".mine.{host}-999999-4567cdef.old"
    aside.mkdir()
    with atomic_dir(mine, "training_set") as tmp:
        (tmp / "training_set.json").write_text('{"v": 2}')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    # killed between "rename aside" and "rename in": the old folder comes back
    os.rename(mine, tmp_path / f".mine.{host}-999999-89abcdef.old")
    recover_artifact(mine)
    assert json.loads((mine / "training_set.json").read_text()) == {"v": 2}


def test_outputs_never_replace_inputs(finished_runs, small_survey, tmp_path):
    from labelcore.catalogue import predict_catalogue

    spectra = tmp_path / "s.h5"
    spectra.write_bytes((small_survey / "spectra_rave.h5").read_bytes())
    before = spectra.read_bytes()
    with pytest.raises(ValidationError, match="also an input"):
        predict_catalogue(finished_runs["Lux"].path, spectra, spectra)
    assert spectra.read_bytes() == before
