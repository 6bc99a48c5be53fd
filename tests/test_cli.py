"""`sync-sdk` CLI: outputs, exit codes, batch JSONL with failures and --resume, demo, info, convert."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sync_sdk.cli.main import EXIT_MODEL, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, main

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny checkpoint and two short mp4 files (8.2 s and 5.4 s)."""
    from tiny_engine import tiny_state_dict

    from sync_sdk.synthetic import generate_clip, write_clip
    from sync_sdk.weights.checkpoint import save_checkpoint
    d = tmp_path_factory.mktemp("cli")
    sd, config = tiny_state_dict()
    save_checkpoint(d / "tiny.safetensors", sd, config)
    np.savez(d / "tiny_sd.npz", **sd)
    write_clip(generate_clip(1, duration_sec=8.2), d / "a.mp4")
    write_clip(generate_clip(2, offset_sec=0.4, duration_sec=5.4), d / "b.mp4")
    (d / "not_media.mp4").write_bytes(b"this is not a video")
    return d


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def model(work):
    return ["--model", work / "tiny.safetensors", "--threads", "1"]


def test_help_explains_units_sign_and_exit_codes():
    out = subprocess.run([sys.executable, "-m", "sync_sdk.cli.main", "--help"], cwd=REPO, capture_output=True,
                         text=True)
    assert out.returncode == 0
    assert "POSITIVE = the audio LEADS the video" in out.stdout and "seconds" in out.stdout
    assert "2  usage or input error" in out.stdout and "multiple of 0.32" in out.stdout


def test_usage_errors_exit_2(capsys, work):
    with pytest.raises(SystemExit) as e:
        main(["predict"])
    assert e.value.code == EXIT_USAGE
    code, _, err = run(["predict", work / "missing.mp4", *model(work)], capsys)
    assert code == EXIT_USAGE and "missing.mp4" in err
    code, _, err = run(["scan", work / "a.mp4", "--hop", "0.5", *model(work)], capsys)
    assert code == EXIT_USAGE and "0.32" in err


def test_model_errors_exit_3(capsys, work):
    code, _, err = run(["predict", work / "a.mp4", "--model", work / "nope.safetensors"], capsys)
    assert code == EXIT_MODEL and "nope.safetensors" in err


def test_predict_json(capsys, work):
    code, out, _ = run(["predict", work / "a.mp4", "--start", "1.0", "--json", *model(work)], capsys)
    assert code == EXIT_OK
    rec = json.loads(out)
    assert rec["status"] == "ok" and rec["result"]["start_sec"] == 1.0 and len(rec["result"]["probs"]) == 21
    code, out, _ = run(["predict", work / "a.mp4", *model(work)], capsys)
    assert code == EXIT_OK and "offset" in out and "s (" in out


def test_predict_with_a_synchronizability_model(capsys, work, tmp_path):
    from tiny_engine import tiny_state_dict

    from sync_sdk.weights.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "syncability.safetensors", *tiny_state_dict("synchronizability"))
    code, out, _ = run(["predict", work / "a.mp4", "--json", "--model", tmp_path / "syncability.safetensors"],
                       capsys)
    assert code == EXIT_OK and 0.0 <= json.loads(out)["synchronizability"] <= 1.0


def test_predict_several_files_with_one_failure_exits_1(capsys, work):
    code, out, err = run(["predict", work / "a.mp4", work / "not_media.mp4", "--json", *model(work)], capsys)
    assert code == EXIT_SOME_FAILED
    recs = json.loads(out)
    assert [r["status"] for r in recs] == ["ok", "error"]


def test_scan_csv_json_and_plot(capsys, work, tmp_path):
    code, out, _ = run(["scan", work / "a.mp4", "--hop", "0.96", "--quiet", *model(work)], capsys)
    assert code == EXIT_OK
    lines = out.strip().splitlines()
    assert lines[0].split(",")[:4] == ["window", "start_sec", "end_sec", "offset_sec"]
    assert [ln.split(",")[1] for ln in lines[1:]] == ["0.0", "0.96", "1.92", "2.88"]
    pytest.importorskip("matplotlib")
    code, _, _ = run(["scan", work / "a.mp4", "--out", tmp_path / "t.json", "--plot", tmp_path / "t.png",
                      "--quiet", *model(work)], capsys)
    assert code == EXIT_OK
    d = json.loads((tmp_path / "t.json").read_text())
    assert d["hop_sec"] == 0.32 and d["summary"]["n_windows"] == len(d["windows"]) == 11
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_batch_records_failures_and_resumes(capsys, work, tmp_path):
    lst = tmp_path / "files.txt"
    lst.write_text(f"# inputs\n{work / 'b.mp4'}\n\n{work / 'missing.mp4'}\n")
    out = tmp_path / "res.jsonl"
    code, _, _ = run(["batch", work / "a.mp4", work / "not_media.mp4", "--list", lst, "--out", out, "--quiet",
                      *model(work)], capsys)
    assert code == EXIT_SOME_FAILED
    recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [Path(r["file"]).name for r in recs] == ["a.mp4", "not_media.mp4", "b.mp4", "missing.mp4"]
    assert [r["status"] for r in recs] == ["ok", "error", "ok", "error"]
    assert recs[3]["error"] == "MediaNotFoundError" and "missing.mp4" in recs[3]["message"]
    assert recs[0]["result"]["offset_sec"] in [round(-2 + 0.2 * k, 1) for k in range(21)]
    # a cut last line goes; --resume skips every file with a line (exit 1: two of them are errors)
    with open(out, "a") as f:
        f.write('{"file": "trunc')
    argv = ["batch", work / "a.mp4", work / "not_media.mp4", "--list", lst, "--out", out, "--quiet", *model(work)]
    code, _, err = run([*argv, "--resume"], capsys)
    assert code == EXIT_SOME_FAILED and '"skipped": 4' in err and '"failed_before": 2' in err
    assert out.read_text().splitlines() == [json.dumps(r) for r in recs]
    # --retry-failed runs the two failed files again; their new lines replace the old ones
    code, _, err = run([*argv, "--retry-failed"], capsys)
    assert code == EXIT_SOME_FAILED and '"skipped": 2' in err and '"failed": 2' in err
    again = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [Path(r["file"]).name for r in again] == ["a.mp4", "b.mp4", "not_media.mp4", "missing.mp4"]
    assert again[:2] == [recs[0], recs[2]] and [r["status"] for r in again[2:]] == ["error", "error"]


def test_batch_without_inputs_is_a_usage_error(capsys, tmp_path):
    code, _, err = run(["batch", "--out", tmp_path / "x.jsonl"], capsys)
    assert code == EXIT_USAGE and "no input files" in err


def test_demo_json(capsys, work):
    code, out, _ = run(["demo", "--offset", "0.6", "--json", *model(work)], capsys)
    assert code == EXIT_OK
    rec = json.loads(out)
    assert rec["true_offset_sec"] == 0.6 and rec["predicted_offset_sec"] in [round(-2 + 0.2 * k, 1)
                                                                              for k in range(21)]
    assert rec["correct"] == (rec["predicted_offset_sec"] == 0.6)
    code, _, err = run(["demo", "--offset", "3", *model(work)], capsys)
    assert code == EXIT_USAGE and "[-2, 2]" in err


def test_info_json(capsys):
    code, out, _ = run(["info", "--json"], capsys)
    assert code == EXIT_OK
    info = json.loads(out)
    assert info["versions"]["numpy"] == np.__version__ and "CPUExecutionProvider" in info["onnxruntime_providers"]
    assert "dir" in info["checkpoint_cache"]


def test_convert(capsys, work, tmp_path):
    from sync_sdk.weights.checkpoint import load_checkpoint
    code, _, err = run(["convert", work / "tiny_sd.npz", tmp_path / "c.safetensors"], capsys)
    assert code == EXIT_MODEL and "config" in err  # tiny widths cannot be inferred from shapes
    code, out, _ = run(["convert", work / "tiny_sd.npz", tmp_path / "c.safetensors", "--config", "tiny"], capsys)
    assert code == EXIT_OK and "sync model" in out
    ck = load_checkpoint(tmp_path / "c.safetensors")
    assert ck.config.v_dim == 64


def test_export_hands_the_exporter_a_checkpoint(capsys, monkeypatch, work, tmp_path):
    import sync_sdk.export_onnx as exporter
    calls = []
    monkeypatch.setattr(exporter, "export_model", lambda model, out, **kw: calls.append((model, out, kw)))
    monkeypatch.setattr(exporter, "resolve_backend", lambda backend, precision: ("onnxruntime", "no TensorRT"))
    code, out, _ = run(["export", work / "tiny.safetensors", tmp_path / "exp", "--variants", "int8"], capsys)
    assert code == EXIT_OK and str(tmp_path / "exp") in out
    model, out_dir, kw = calls[0]
    assert model == str(work / "tiny.safetensors") and out_dir == tmp_path / "exp"
    assert kw["precision"] == "fp32" and kw["variants"] == ["int8"] and kw["backend"] == "auto"
