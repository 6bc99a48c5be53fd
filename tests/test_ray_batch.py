"""Ray Data batch job: manifests, result shards and resume logic, the actor's per-clip error handling,
and the whole job on a local 2-CPU Ray cluster (generated clips, the tiny model, failing files, a
resumed run through the CLI). Results are checked against SyncEngine.predict on the same files."""
import csv
import os
import sys
import threading
from collections import Counter

import numpy as np
import pytest

from sync_sdk.errors import BackendError, InputError, SyncSDKWarning
from sync_sdk.serving.ray_batch import ClipScorer, import_ray, plan_workers, run_ray_batch
from sync_sdk.serving.ray_results import (
    ClipJob,
    ShardWriter,
    check_out_dir,
    error_row,
    ok_row,
    read_clip_manifest,
    read_results,
    row_status,
    rows_table,
    shard_paths,
)


@pytest.fixture
def pq():
    """pyarrow.parquet (shards and Parquet manifests need it; pip install 'sync-sdk[ray]')."""
    return pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed (pip install 'sync-sdk[ray]')")


def write_csv(path, rows, header=("path", "start_sec", "offset_sec")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# ---------------------------------------------------------------------------- no Ray needed
def test_manifest_csv(tmp_path):
    (tmp_path / "sub").mkdir()
    m = write_csv(tmp_path / "sub" / "m.csv", [("a.mp4", "", ""), ("/abs/b.mp4", "1.5", "-0.4"),
                                               ("a.mp4", "0", "0"), ("s3://bucket/c.mp4", "2", "")])
    jobs = read_clip_manifest(m, start_sec=0.0)
    assert jobs == [ClipJob(str(tmp_path / "sub" / "a.mp4"), 0.0, 0.0), ClipJob("/abs/b.mp4", 1.5, -0.4),
                    ClipJob("s3://bucket/c.mp4", 2.0, 0.0)]  # relative to the manifest, duplicate dropped


def test_manifest_parquet(tmp_path, pq):
    import pyarrow as pa
    pq.write_table(pa.table({"file": ["x.mp4", "y.mp4"], "start_sec": [None, 3.0]}), tmp_path / "m.parquet")
    assert read_clip_manifest(tmp_path / "m.parquet", start_sec=1.0) == [
        ClipJob(str(tmp_path / "x.mp4"), 1.0, 0.0), ClipJob(str(tmp_path / "y.mp4"), 3.0, 0.0)]


@pytest.mark.parametrize("rows,header,match", [
    ([("a.mp4",)], ("video",), "no path column"),
    ([("a.mp4", "soon")], ("path", "start_sec"), "row 1: start_sec 'soon' is not a number"),
    ([("a.mp4",), ("",)], ("path",), "row 2: empty path"),
])
def test_bad_manifests(tmp_path, rows, header, match):
    with pytest.raises(InputError, match=match):
        read_clip_manifest(write_csv(tmp_path / "m.csv", rows, header))


def test_manifest_kinds(tmp_path):
    (tmp_path / "m.txt").write_text("a.mp4\n")
    with pytest.raises(InputError, match=".csv or .parquet"):
        read_clip_manifest(tmp_path / "m.txt")
    with pytest.raises(InputError, match="does not exist"):
        read_clip_manifest(tmp_path / "none.csv")


def test_plan_workers():
    gpu = plan_workers(32, 4)
    assert (gpu.workers, gpu.num_gpus, gpu.num_cpus, gpu.device, gpu.kind) == (4, 1.0, 1.0, "cuda", "gpu")
    assert (plan_workers(32, 4, workers=8).num_gpus, plan_workers(4, 4).num_cpus) == (0.5, 0.5)  # shared
    assert plan_workers(32, 4, device="cpu").kind == "cpu"
    assert (plan_workers(2, 0).workers, plan_workers(2, 0).num_cpus, plan_workers(2, 0).threads) == (1, 1.0, 1)
    four = plan_workers(2, 0, workers=4)  # actors share half the CPUs, decode tasks keep the other half
    assert (four.workers, four.num_cpus * four.workers, four.threads) == (4, 1.0, 1)
    assert plan_workers(64, 0).workers == 32 and plan_workers(64, 0, cpus_per_worker=4, workers=8).threads == 4
    with pytest.raises(InputError, match="decode tasks"):
        plan_workers(2, 0, workers=2, cpus_per_worker=1)
    with pytest.raises(BackendError, match="no GPUs"):
        plan_workers(8, 0, device="cuda")
    with pytest.raises(InputError):
        plan_workers(8, 0, workers=0)


def fake_row(path, status="ok", start=0.0, run="r1"):
    job = ClipJob(path, start, 0.0)
    if status == "ok":
        logits = np.zeros(21, np.float32)
        logits[12] = 3.0
        return ok_row(job, logits, "sync", "m", 0.1, 0.2, "w", run)
    return error_row(job, "MediaDecodeError", "bad", "m", 0.1, "w", run)


def test_shards_resume_keys_and_results(tmp_path, pq):
    w = ShardWriter(tmp_path, "20260101T000000-aaaaaa", rows_per_shard=2, flush_sec=1e9)
    w.add(rows_table([fake_row("/a"), fake_row("/b", "error")]))  # reaches 2 rows: one shard
    w.add(rows_table([fake_row("/c", start=1.0)]))
    assert len(shard_paths(tmp_path)) == 1
    w.flush()
    w2 = ShardWriter(tmp_path, "20260102T000000-bbbbbb")
    w2.add(rows_table([fake_row("/b", run="r2"), fake_row("/d", "error", run="r2"),
                                 fake_row("/d", "error", run="r3")]))
    w2.flush()
    (tmp_path / ".part-x.parquet.tmp").write_bytes(b"partial")  # an interrupted write is not a shard
    assert [p.name for p in shard_paths(tmp_path)] == [
        "part-20260101T000000-aaaaaa-00000.parquet", "part-20260101T000000-aaaaaa-00001.parquet",
        "part-20260102T000000-bbbbbb-00000.parquet"]
    assert row_status(tmp_path) == {("/a", 0.0, 0.0): "ok", ("/b", 0.0, 0.0): "ok", ("/c", 1.0, 0.0): "ok",
                                    ("/d", 0.0, 0.0): "error"}  # an ok row beats an error row
    t = read_results(tmp_path)
    assert t.schema.names[:4] == ["path", "start_sec", "input_offset_sec", "status"]
    rows = {(r["path"], r["start_sec"]): r for r in t.to_pylist()}
    assert len(rows) == t.num_rows == 4
    assert rows[("/b", 0.0)]["status"] == "ok" and rows[("/b", 0.0)]["run_id"] == "r2"  # ok beats an error
    assert rows[("/d", 0.0)]["run_id"] == "r3"  # the latest error
    a = rows[("/a", 0.0)]
    assert (a["offset_sec"], a["class_index"], a["in_sync"], a["in_sync_tolerant"]) == (0.4, 12, False, False)
    assert a["sync_prob"] is None and len(a["probs"]) == 21 and abs(sum(a["probs"]) - 1) < 1e-5
    (tmp_path / "part-zzz-00000.parquet").write_bytes(b"not parquet")
    with pytest.warns(SyncSDKWarning, match="unreadable"):
        assert len(row_status(tmp_path)) == 4


def test_out_dir_modes(tmp_path, pq):
    out = tmp_path / "scores"
    assert check_out_dir(out, "new") == out and not out.exists()  # created by the job, its parent must exist
    w = ShardWriter(out, "20260101T000000-aaaaaa")
    w.add(rows_table([fake_row("/a")]))
    w.flush()
    (out / ".part-x.parquet.tmp").write_bytes(b"cut")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="--resume.*--retry-failed.*--overwrite"):
        check_out_dir(out, "new")
    assert check_out_dir(out, "resume") == out and len(shard_paths(out)) == 1
    check_out_dir(out, "overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # shards (and cut ones) go, nothing else
    with pytest.raises(InputError, match="is a file"):
        check_out_dir(out / "notes.txt", "resume")
    with pytest.raises(InputError, match="does not exist"):
        check_out_dir(tmp_path / "no" / "scores", "new")


def test_synchronizability_rows(pq):
    row = ok_row(ClipJob("/a"), np.array([0.0, np.log(3.0)], np.float32), "synchronizability", "m", 0, 0, "w", "r")
    assert row["sync_prob"] == pytest.approx(0.75) and "offset_sec" not in row


class _FailingBackend:
    """Wraps a backend; the visual encoder fails on inputs holding NaN (a stand-in for a bad clip)."""

    def __init__(self, backend):
        self.inner, self.config, self.name = backend, backend.config, backend.name
        self.precision, self.device, self.device_arrays = backend.precision, backend.device, backend.device_arrays
        self.model_id = backend.model_id

    def encode_video(self, x):
        if np.isnan(x).any():
            raise RuntimeError("NaN input")
        return self.inner.encode_video(x)

    def encode_audio(self, x):
        return self.inner.encode_audio(x)

    def head(self, v, a):
        return self.inner.head(v, a)


def test_scorer_isolates_a_failing_clip(tiny_model, pq):
    from sync_sdk.engine import SyncEngine
    engine = SyncEngine.from_pretrained(tiny_model)
    scorer = object.__new__(ClipScorer)  # the actor without Ray
    scorer.engine, scorer.run_id, scorer.worker = SyncEngine(_FailingBackend(engine.backend)), "r", "w"
    n = engine.config.n_segments
    rng = np.random.default_rng(1)
    vid = rng.normal(0, 1, (2, n, 16, 3, 224, 224)).astype(np.float32)
    aud = rng.normal(0, 1, (2, n, 1, 128, 66)).astype(np.float32)
    vid[0, 0, 0, 0, 0, 0] = np.nan
    batch = {"path": np.array(["/0", "/1", "/2"]), "start_sec": np.zeros(3), "input_offset_sec": np.zeros(3),
             "error": np.array(["", "", "MediaNotFoundError"]), "message": np.array(["", "", "gone"]),
             "decode_sec": np.ones(3),
             "vid": np.array([v[None] for v in vid] + [np.zeros((0, 0, 16, 3, 224, 224), np.float32)], dtype=object),
             "aud": np.array([a[None] for a in aud] + [np.zeros((0, 0, 1, 128, 66), np.float32)], dtype=object),
             "view_shift": np.array([[0.0], [0.0], []], dtype=object),
             "view_start": np.array([[0.0], [0.0], []], dtype=object),
             "view_vid": np.array([[0], [0], []], dtype=object), "flags": np.array(["", "silent_audio", ""])}
    rows = scorer(batch).to_pylist()
    assert [r["status"] for r in rows] == ["error", "ok", "error"]
    assert (rows[0]["error"], rows[0]["message"]) == ("RuntimeError", "NaN input")
    assert (rows[2]["error"], rows[2]["message"]) == ("MediaNotFoundError", "gone")
    from tiny_engine import single_view_logits
    expected = single_view_logits(engine.encoder, vid[1:], aud[1:])[0]
    assert rows[1]["class_index"] == int(np.argmax(expected))
    assert (rows[1]["flags"], rows[1]["view_shifts"]) == (["silent_audio"], [0.0])
    np.testing.assert_allclose(rows[1]["probs"], np.exp(expected) / np.exp(expected).sum(), atol=1e-5)


def test_missing_ray_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BackendError, match=r"pip install 'sync-sdk\[ray\]'"):
        import_ray()
    from sync_sdk.cli.main import main
    assert main(["batch", "--ray", "m.csv", "--out", "out"]) == 3


# ---------------------------------------------------------------------------- on a local Ray cluster
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """The bundled tiny model, else a tiny-config checkpoint with seeded random weights (needs torch)."""
    from sync_sdk.runtime.loading import bundled_models
    if "synthetic-tiny" in bundled_models():
        return "synthetic-tiny"
    pytest.importorskip("torch")
    from tiny_engine import tiny_state_dict

    from sync_sdk.weights.checkpoint import save_checkpoint
    sd, config = tiny_state_dict()
    return str(save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", sd, config))


@pytest.fixture(scope="module")
def ray_cluster():
    try:
        ray, _ = import_ray()
    except BackendError as e:
        pytest.skip(f"Ray is not installed: {e}")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from sync_sdk.synthetic import generate_clip, write_clip
    d = tmp_path_factory.mktemp("clips")
    for seed in range(3):
        write_clip(generate_clip(seed, offset_sec=0.4 * seed, duration_sec=6.0, size=(128, 160)), d / f"c{seed}.mp4")
    (d / "notmedia.mp4").write_text("not a video")
    return d


def test_job_on_local_ray(ray_cluster, clips, tiny_model, tmp_path, pq):
    from sync_sdk.cli.main import main
    from sync_sdk.engine import SyncEngine
    manifest = write_csv(clips / "m.csv", [("c0.mp4", "0", "0"), ("c1.mp4", "0.4", "0.2"), ("notmedia.mp4", "", ""),
                                           ("missing.mp4", "", ""), ("c2.mp4", "0.8", "-0.6")])
    out = tmp_path / "scores"
    s = run_ray_batch(manifest, out, tiny_model, batch_size=2, progress=False)
    assert (s.total, s.ok, s.failed, s.skipped, s.workers, s.worker_kind) == (5, 3, 2, 0, 1, "cpu")
    assert [str(p) for p in shard_paths(out)] == s.shards and len(s.shards) == 1
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in read_results(out).to_pylist()}
    assert rows["notmedia.mp4"]["error"] == "MediaDecodeError" and rows["missing.mp4"]["error"] == "MediaNotFoundError"
    assert all(rows[n]["message"] and rows[n]["offset_sec"] is None for n in ("notmedia.mp4", "missing.mp4"))
    engine = SyncEngine.from_pretrained(tiny_model)  # the Ray batch answers as predict does, shift views included
    assert tiny_model != "synthetic-tiny" or len(engine.shift_views) == 3
    for name, start, off in [("c0.mp4", 0.0, 0.0), ("c1.mp4", 0.4, 0.2), ("c2.mp4", 0.8, -0.6)]:
        r = rows[name]
        ref = engine.predict(str(clips / name), start_sec=start, offset_sec=off)
        assert (r["status"], r["start_sec"], r["input_offset_sec"]) == ("ok", start, off)
        assert (r["class_index"], r["offset_sec"], r["model_id"]) == (ref.class_index, ref.offset_sec, engine.model_id)
        assert (r["flags"], r["view_shifts"]) == (list(ref.flags), [d for d, _ in ref.views])
        np.testing.assert_allclose(r["probs"], ref.probs, atol=1e-5)
        assert r["confidence"] == pytest.approx(ref.confidence, abs=1e-5) and r["run_id"] == s.run_id

    # resumed through the CLI, with one more clip: finished files are skipped, failed ones retried
    with open(manifest, "a") as f:
        f.write("c0.mp4,1.0,0\n")
    argv = ["batch", "--ray", str(manifest), "--out", str(out), "--model", tiny_model, "--quiet"]
    assert main(argv) == 2 and len(shard_paths(out)) == 1  # a folder with shards needs one of the three
    assert main([*argv, "--retry-failed"]) == 1
    t = read_results(out)
    assert t.num_rows == 6 and len(shard_paths(out)) == 2
    latest = pq.read_table(shard_paths(out)[-1]).to_pylist()
    assert sorted((r["path"].rsplit("/", 1)[-1], r["status"]) for r in latest) == [
        ("c0.mp4", "ok"), ("missing.mp4", "error"), ("notmedia.mp4", "error")]
    again = run_ray_batch(manifest, out, tiny_model, retry_failed=False, progress=False)
    assert (again.skipped, again.ok, again.failed, again.failed_before, again.shards) == (6, 0, 0, 2, [])
    assert main([*argv, "--resume"]) == 1  # nothing to run; two inputs' rows are errors


def test_a_killed_model_actor_is_replaced(ray_cluster, clips, tiny_model, tmp_path, pq):
    """SIGKILL the model actor while it scores a batch: Ray starts another that scores the batch again,
    and every input ends with exactly one row."""
    from benchmarks.faults.kills import kill_actor_mid_batch
    manifest = write_csv(clips / "m_kill.csv", [("c0.mp4", "", ""), ("c1.mp4", "", ""), ("notmedia.mp4", "", ""),
                                                ("c2.mp4", "", "")])
    done, killed = threading.Event(), []
    killer = threading.Thread(target=lambda: killed.append(
        kill_actor_mid_batch(os.getpid(), 0.1, lambda: not done.is_set(), timeout=120)))
    killer.start()
    try:
        s = run_ray_batch(manifest, tmp_path / "scores", tiny_model, batch_size=1, progress=False)
    finally:
        done.set()
        killer.join()
    assert killed[0] > 0 and (s.total, s.ok, s.failed) == (4, 3, 1)
    rows = pq.read_table(shard_paths(tmp_path / "scores")[0]).to_pylist()
    assert Counter(r["path"].rsplit("/", 1)[-1] for r in rows) == Counter(["c0.mp4", "c1.mp4", "notmedia.mp4", "c2.mp4"])
    pids = {r["worker"].rsplit(":", 1)[1] for r in rows if r["status"] == "ok"}
    assert pids - {str(killed[0])}  # the replacement actor scored the batch the killed one had
