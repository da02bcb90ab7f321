"""runtime.batch on a real local 2-CPU Ray cluster (2 worker actors) with the exported tiny model.

- the merged results.json equals runtime.infer run on each video one by one, and a corrupt
  video is reported with its error while the others finish;
- a job killed with SIGKILL midway (a real `python -m runtime.batch --address ...` subprocess),
  then rerun, completes only the missing videos and gives the same merged file;
- a worker actor killed (SIGKILL of its process) while it holds a video is replaced and the
  video retried (in the same run as the first point).

The cluster is started by the fixture (ray.init in this process) and always shut down.
"""
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from batch_support import (NUM_VIDEOS, ROOT, concat, copy_dataset, corrupt_frame, dataset_videos, infer_reference,
                           load, make_dataset, run_args, shared_tiny)

from runtime.batch.ray_pool import use_loopback_cluster  # noqa: E402

use_loopback_cluster()   # the test cluster (and jobs that join it) stays on 127.0.0.1
from extras import require  # noqa: E402

ray = require("ray", "cluster")
pytest.importorskip("torch")   # the export of the tiny model

from runtime.batch import BatchSpec, run_batch  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("batch_ray")
    model = shared_tiny(tmp_path_factory)
    gt = make_dataset(str(base / "clean"))
    ref = infer_reference(model, dataset_videos(gt), str(base / "ref"))
    return {"base": base, "model": model, "gt": gt, "clean": str(base / "clean"), "ref": ref,
            "ids": [vid for _, vid in dataset_videos(gt)]}


@pytest.fixture(scope="module")
def ray_cluster():
    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:"), f"the test cluster must stay on loopback, got {address}"
        yield address
    finally:
        ray.shutdown()


def _wait_for_free_cpus(n: float, timeout: float = 90.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if ray.available_resources().get("CPU", 0) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"the cluster did not free its CPUs: {ray.available_resources()}")


def test_merged_equals_infer_one_by_one_corrupt_video_reported_killed_worker_replaced(setup, ray_cluster, tmp_path):
    gt = copy_dataset(setup["clean"], str(tmp_path / "data"))
    videos = load(gt)["videos"]
    bad_key = corrupt_frame(gt, video_index=2, frame=5)      # decodes 5 frames, then fails
    bad_id = videos[2]["id"]
    target = os.path.dirname(videos[1]["file_names"][0])      # its worker is killed while holding it
    killed = []

    def on_event(kind, slot=None, item=None, pid=None, attempt=None, **_):
        if kind == "start" and item.key == target and attempt == 1:
            os.kill(pid, signal.SIGKILL)      # the actor process dies holding this video
            killed.append((slot, pid))

    out = tmp_path / "out"
    summary = run_batch(BatchSpec(videos=os.path.dirname(os.path.dirname(gt)), output=str(out),
                                  run_args=run_args(setup["model"]), workers=2, progress=False, evaluate=gt),
                        on_event=on_event)
    assert summary["executor"] == "ray" and summary["cluster"]["resources"]["CPU"] == 2
    # --evaluate: the evaluator's metrics of the merged file (run as `python -m mdqe.evaluate`)
    from mdqe.evaluation import evaluate
    direct = evaluate(gt, str(out / "results.json"))
    assert summary["metrics"] == load(out / "metrics.json")
    assert summary["metrics"] == pytest.approx(direct) and summary["metrics"]["AP"] >= 0
    # the merged file == runtime.infer on each video one by one (the corrupt one left out)
    merged = load(out / "results.json")
    assert merged == concat(setup["ref"], [i for i in setup["ids"] if i != bad_id])
    assert summary["results_entries"] == len(merged)
    # the corrupt video: reported with its error, nothing half-written, the others finished
    assert summary["failed"] == 1 and summary["finished"] == NUM_VIDEOS - 1
    (fail,) = summary["failures"]
    assert fail["video"] == bad_key and fail["video_id"] == bad_id and fail["attempts"] == 1
    assert "cannot decode image" in fail["error"] and "00005.jpg" in fail["error"]
    assert not os.path.exists(out / "videos" / bad_key)
    assert not [d for d in os.listdir(out / "videos") if d.startswith(".")]
    assert load(out / "summary.json")["failures"] == summary["failures"]
    # the killed actor: replaced, its video retried once and finished
    assert len(killed) == 1
    slot, pid = killed[0]
    (death,) = summary["worker_deaths"]
    assert death["video"] == target and death["worker"] == slot and death["retried"] and death["pid"] == pid
    assert "died" in death["error"]
    w = summary["per_worker"][slot]
    assert w["restarts"] == 1 and w["pids"][0] == pid and len(w["pids"]) == 2 and w["pids"][1] != pid
    assert load(out / "videos" / target / "video.json")["attempt"] == 2
    # two actors; each loads the model once per process and runs several videos with it
    workers = summary["per_worker"]
    assert len(workers) == 2 and len({w["pids"][-1] for w in workers}) == 2
    assert all(len(w["pids"]) == len(w["model_load_s"]) == w["restarts"] + 1 for w in workers)
    assert sum(w["videos"] + w["failed"] for w in workers) == NUM_VIDEOS and max(w["videos"] for w in workers) >= 2
    assert summary["frames"] == sum(w["frames"] for w in workers) == (NUM_VIDEOS - 1) * 8


def test_killed_job_rerun_completes_only_missing_videos(setup, ray_cluster, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "runtime.batch", "--videos", setup["clean"], "--output", str(out),
           "--address", ray_cluster, "--workers", "2", "--no-progress"] + run_args(setup["model"])
    log = open(tmp_path / "job.log", "w")
    job = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        t0 = time.time()
        done = []
        while time.time() - t0 < 120 and job.poll() is None:
            if (out / "videos").is_dir():
                done = [d for d in os.listdir(out / "videos") if not d.startswith(".")]
                if done:
                    break
            time.sleep(0.02)
        assert job.poll() is None, "the job ended before it could be killed: " + open(tmp_path / "job.log").read()
        os.kill(job.pid, signal.SIGKILL)
        assert job.wait(timeout=30) == -signal.SIGKILL
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        log.close()
    done = sorted(d for d in os.listdir(out / "videos") if not d.startswith("."))
    assert 1 <= len(done) < NUM_VIDEOS, done
    assert not (out / "results.json").exists()
    stamps = {d: os.stat(out / "videos" / d / "results.json").st_mtime_ns for d in done}
    _wait_for_free_cpus(2)    # the killed driver's actors are gone

    summary = run_batch(BatchSpec(videos=setup["clean"], output=str(out), run_args=run_args(setup["model"]),
                                  workers=2, progress=False))
    assert summary["skipped_already_done"] == len(done)
    assert summary["processed"] == NUM_VIDEOS - len(done) and summary["failed"] == 0
    assert summary["frames"] == (NUM_VIDEOS - len(done)) * 8
    assert {d: os.stat(out / "videos" / d / "results.json").st_mtime_ns for d in done} == stamps   # untouched
    assert not [d for d in os.listdir(out / "videos") if d.startswith(".")]   # partial folders removed
    assert load(out / "results.json") == concat(setup["ref"], setup["ids"])
