"""``surfmap batch --jobs 2`` stopped by real signals (issue 17, case 5).

A real ``python -m surfmap batch`` runs on a SUBJECTS_DIR of fsaverage5 left hemispheres (the
bundled template written as FreeSurfer files: a few seconds per job), and the test sends SIGINT
or SIGTERM to it, or SIGKILL to one of its workers. Afterwards the manifest must tell the truth,
no process of the run may be left, and no temporary file. Processes are found by a tag in their
environment (Linux ``/proc``).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import surfmap

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists() or os.name != "posix",
                                reason="needs POSIX signals and Linux /proc to find the run's processes")

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 240  # seconds: only a hung run gets near this


@pytest.fixture(scope="module")
def subjects_dir(tmp_path_factory):
    """Six subjects sharing the fsaverage5 left white surface, cortex label and thickness."""
    root = tmp_path_factory.mktemp("fs5")
    tpl = surfmap.load_template("fsaverage5", "left")
    shared = root / "shared"
    shared.mkdir()
    nib.freesurfer.write_geometry(str(shared / "lh.white"), tpl.mesh.vertices, tpl.mesh.faces)
    nib.freesurfer.write_morph_data(str(shared / "lh.thickness"), tpl.metrics["thickness"])
    idx = np.flatnonzero(tpl.cortex)
    V = tpl.mesh.vertices
    lines = ["#!ascii label  , from subject  vox2ras=TkReg", str(len(idx))]
    lines += [f"{i} {V[i, 0]:.3f} {V[i, 1]:.3f} {V[i, 2]:.3f} 0.000000" for i in idx]
    (shared / "lh.cortex.label").write_text("\n".join(lines) + "\n")
    subjects = root / "subjects"
    for s in range(6):
        for folder, name in (("surf", "lh.white"), ("surf", "lh.thickness"), ("label", "lh.cortex.label")):
            (subjects / f"sub-{s + 1:02d}" / folder).mkdir(parents=True, exist_ok=True)
            os.symlink(shared / name, subjects / f"sub-{s + 1:02d}" / folder / name)
    return subjects


def _start(src, out, tag, subjects=None, session=False):
    cmd = [sys.executable, "-m", "surfmap", "batch", str(src), "-o", str(out), "--jobs", "2", "--hemi", "left",
           "--metrics", "thickness", "--method", "conformal", "--size", "32", "--no-progress"]
    if subjects:
        cmd += ["--subjects", *subjects]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SURFMAP_TEST_TAG": tag}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=session)


def _tagged(tag) -> list[tuple[int, int]]:
    """(pid, parent pid) of live processes whose environment holds ``tag``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"SURFMAP_TEST_TAG={tag}".encode() not in (entry / "environ").read_bytes():
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":  # zombies are dead
            found.append((int(entry.name), int(fields[1])))
    return found


def _wait_for(condition, what, proc):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the batch ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def _finished(out):
    return sorted(out.glob("*/left/status.json"))


def _finish(proc, tag):
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the batch did not stop")
    deadline = time.monotonic() + 10
    while _tagged(tag) and time.monotonic() < deadline:  # the resource tracker ends just after the batch
        time.sleep(0.1)
    assert _tagged(tag) == [], "processes of the batch are left running"
    return err


def _manifest(out, name="manifest.tsv"):
    with open(out / name, newline="") as fh:
        return {r["subject"]: r for r in csv.DictReader(fh, delimiter="\t")}


def _no_tmp(out):
    return [p for p in out.rglob("*") if ".tmp" in p.name] == []


def test_sigint_finishes_running_jobs_cancels_queued_ones(subjects_dir, tmp_path):
    out, tag = tmp_path / "out", uuid.uuid4().hex
    proc = _start(subjects_dir, out, tag)
    _wait_for(lambda: _finished(out), "a first finished job", proc)
    proc.send_signal(signal.SIGINT)
    err = _finish(proc, tag)
    assert proc.returncode == 130, err
    assert "stopped by SIGINT" in err
    rows = _manifest(out)
    assert len(rows) == 6
    done = {s for s, r in rows.items() if r["status"] == "done"}
    assert done == {p.parent.parent.name for p in _finished(out)}  # the manifest tells the truth
    assert {r["status"] for s, r in rows.items() if s not in done} == {"cancelled"}  # running jobs finished
    assert 1 <= len(done) < 6
    assert _no_tmp(out)


@pytest.mark.parametrize("to", ["batch", "group"])
def test_sigterm_stops_at_once_and_writes_a_true_manifest(subjects_dir, tmp_path, to):
    """SIGTERM to the batch process, or to its whole process group (what Slurm does at the end of a job)."""
    out, tag = tmp_path / "out", uuid.uuid4().hex
    proc = _start(subjects_dir, out, tag, session=to == "group")
    _wait_for(lambda: _finished(out), "a first finished job", proc)
    if to == "group":
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    err = _finish(proc, tag)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err
    rows = _manifest(out)
    assert len(rows) == 6
    done = {s for s, r in rows.items() if r["status"] == "done"}
    assert done == {p.parent.parent.name for p in _finished(out)}
    assert {r["status"] for s, r in rows.items() if s not in done} <= {"interrupted", "cancelled"}
    assert "cancelled" in {r["status"] for r in rows.values()}
    for r in rows.values():
        if r["status"] == "interrupted":
            assert "stopped (SIGTERM) while this job ran" in r["message"]
            assert not (out / r["subject"] / "left" / "status.json").exists()  # not finished: redone next time
    assert _no_tmp(out)


def _workers(tag, parent):
    """Worker processes of the batch ``parent`` (not multiprocessing's resource tracker)."""
    pids = []
    for pid, ppid in _tagged(tag):
        try:
            if ppid == parent and b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            pass
    return pids


def test_sigkill_of_a_worker_fails_only_its_job(subjects_dir, tmp_path):
    out, tag = tmp_path / "out", uuid.uuid4().hex
    proc = _start(subjects_dir, out, tag, subjects=["sub-01", "sub-02", "sub-03"])
    # a worker is given its first job when it starts: killing it before that job ends fails that job
    workers = _wait_for(lambda: len(_workers(tag, proc.pid)) == 2 and _workers(tag, proc.pid), "two workers", proc)
    assert not _finished(out)
    os.kill(workers[0], signal.SIGKILL)
    err = _finish(proc, tag)
    assert proc.returncode == 3, err  # one failed, the batch went on
    rows = _manifest(out)
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert len(failed) == 1, rows
    assert [r["error"] for r in _manifest(out, "failures.tsv").values()] == ["WorkerDied"]
    assert f"the worker process running {failed[0]['subject']} left died (killed by SIGKILL)" in failed[0]["message"]
    assert sum(r["status"] == "done" for r in rows.values()) == 2
    assert _no_tmp(out)
