"""benchmarks/accuracy.py on a few held-out clips: the JSON keys the issue asks for, and the one-view
figures of a run with views equal to those of a one-view run on the same clips."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy.py"


def _accuracy():
    spec = importlib.util.spec_from_file_location("accuracy_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_views_run_reports_the_single_view_too(tmp_path):
    acc = _accuracy()
    out = tmp_path / "views.json"
    res = acc.main(["--n", "3", "--n-neg", "2", "--json", str(out), "--threads", "1"])
    saved = json.loads(out.read_text())
    assert saved["shift_views_sec"] == [-0.2, 0.0, 0.2]
    for key in ("acc1", "acc1_pm1", "sync_acc", "sync_auc"):
        assert 0.0 <= saved[key] <= 1.0
    plain = acc.main(["--n", "3", "--n-neg", "2", "--shift-views", "0", "--threads", "1"])
    assert "single_view" not in plain
    single = {k: v for k, v in res["single_view"].items() if k != "seconds"}
    assert single == {k: v for k, v in plain.items() if k not in ("seconds", "seed", "model", "shift_views_sec")}


def test_csv_rows_score_the_offset_the_preprocessing_applies(tmp_path):
    from sync_sdk.geometry import offset_to_class
    from sync_sdk.synthetic import generate_clip, write_clip
    write_clip(generate_clip(900_000_010, duration_sec=5.6), tmp_path / "a.mp4")
    (tmp_path / "list.csv").write_text("path,offset_sec,start_sec\na.mp4,0.4,0.2\n")
    res = _accuracy().main(["--csv", str(tmp_path / "list.csv"), "--threads", "1"])
    (row,) = res["rows"]
    assert row["target"] == offset_to_class(0.4) and row["start_sec"] == 0.2
    assert res["n"] == 1 and res["acc1"] in (0.0, 1.0) and isinstance(row["pred_single"], int)
    assert np.isclose(res["acc1"], float(row["pred"] == row["target"]))
