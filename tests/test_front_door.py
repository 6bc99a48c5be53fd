"""What a new user hits at the front door (CLI and API): typed errors before any work, outputs that say
where they went, exports that answer as their source, and answers that say when they rest on nothing."""
import importlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from sync_sdk.cli.main import EXIT_BROKEN_PIPE, EXIT_MODEL, EXIT_OK, EXIT_USAGE, main
from sync_sdk.errors import InputError, MissingDependencyError, SilentAudioWarning

REPO = Path(__file__).resolve().parents[1]
BUNDLED = ["--model", "synthetic-tiny", "--threads", "1"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 5.2-s synthetic clip whose audio leads by 0.6 s, as `sync-sdk demo --save` writes it."""
    from sync_sdk.synthetic import generate_clip, write_clip
    path = tmp_path_factory.mktemp("front") / "clip.mp4"
    write_clip(generate_clip(0, offset_sec=0.6, duration_sec=5.2), path)
    return path


@pytest.fixture(scope="module")
def engine():
    from sync_sdk import SyncEngine
    return SyncEngine.from_pretrained("synthetic-tiny", threads=1)


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_export_without_its_extra_names_the_install_and_exits_3(tmp_path):
    """Item 1: no raw ModuleNotFoundError when onnx is missing; the message names the extra."""
    code = ("import sys; sys.modules['onnx'] = None; from sync_sdk.cli.main import main; "
            f"sys.exit(main(['export', 'synthetic-tiny', {str(tmp_path / 'e')!r}]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == EXIT_MODEL, out.stderr
    assert "Traceback" not in out.stderr
    assert "MissingDependencyError" in out.stderr and "pip install 'sync-sdk[export]'" in out.stderr


def test_missing_extra_is_a_typed_import_error():
    from sync_sdk.extras import require_module
    with pytest.raises(MissingDependencyError, match=r"pip install 'sync-sdk\[plot\]'") as e:
        require_module("no_such_module_xyz", "plot", "plotting")
    assert isinstance(e.value, ImportError)


def test_export_answers_as_its_source(clip, tmp_path, capsys):
    """Item 2: the export carries inference.json (the three views), so it gives the source's answer."""
    pytest.importorskip("onnx")
    out_dir = tmp_path / "exp"
    code, _, err = run(["export", "synthetic-tiny", out_dir], capsys)
    assert code == EXIT_OK, err
    assert json.loads((out_dir / "inference.json").read_text()) == \
        json.loads((REPO / "sync_sdk/models/synthetic-tiny/inference.json").read_text())
    answers = []
    for model in ("synthetic-tiny", out_dir):
        code, out, _ = run(["predict", clip, "--json", "--model", model, "--threads", "1"], capsys)
        assert code == EXIT_OK
        answers.append(json.loads(out)["result"])
    assert len(answers[0]["views"]) == 3 and answers[1]["views"] == answers[0]["views"]
    assert answers[1]["class_index"] == answers[0]["class_index"]
    np.testing.assert_allclose(answers[1]["probs"], answers[0]["probs"], atol=2e-5)


def test_results_name_the_views_they_combined(clip, engine):
    """Item 3: at the file's start predict moves the video for the -0.2 view, scan leaves it out;
    each answer says which views it used."""
    first = engine.scan(clip)[0]
    pred = engine.predict(clip, start_sec=0.0)
    assert pred.views == ((-0.2, 0.2), (0.0, 0.0), (0.2, 0.0))
    assert first.views == ((0.0, 0.0), (0.2, 0.0))
    row = first.to_dict()
    assert [v["shift_sec"] for v in row["views"]] == [0.0, 0.2]
    assert engine.scan(clip).rows()[0]["views"] == "+0.0 +0.2"


def test_shift_views_take_a_leading_minus(clip, capsys):
    """Item 4: the help's own example, --shift-views -0.2,0,0.2, parses."""
    code, out, err = run(["predict", clip, *BUNDLED, "--shift-views", "-0.2,0", "--json"], capsys)
    assert code == EXIT_OK, err
    assert [v["shift_sec"] for v in json.loads(out)["result"]["views"]] == [-0.2, 0.0]


def test_plot_without_matplotlib_fails_before_the_scan(clip, tmp_path, capsys, monkeypatch):
    """Item 5: exit 2 before any model is loaded."""
    import sync_sdk.cli.args as cli_args
    cli_main = importlib.import_module("sync_sdk.cli.main")  # sync_sdk.cli.main is also the function
    monkeypatch.setattr(cli_args, "has_module", lambda name: name != "matplotlib")
    monkeypatch.setattr(cli_main, "_engine", lambda args: pytest.fail("the model was loaded"))
    code, _, err = run(["scan", clip, *BUNDLED, "--plot", tmp_path / "t.png"], capsys)
    assert code == EXIT_USAGE and "pip install 'sync-sdk[plot]'" in err


@pytest.mark.parametrize("option, value", [("--plot", "adir/"), ("--plot", "adir"), ("--out", "adir"),
                                           ("--plot", "missing/t.png"), ("--plot", "t.txt")])
def test_scan_outputs_are_checked_before_the_work(clip, tmp_path, capsys, monkeypatch, option, value):
    """Items 6, 7: a folder, a missing folder or a wrong suffix is an input error up front."""
    cli_main = importlib.import_module("sync_sdk.cli.main")  # sync_sdk.cli.main is also the function
    (tmp_path / "adir").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_main, "_engine", lambda args: pytest.fail("the model was loaded"))
    code, _, err = run(["scan", clip, *BUNDLED, option, value], capsys)
    assert code == EXIT_USAGE and "Traceback" not in err and value.rstrip("/") in err
    assert not (tmp_path / "adir.png").exists()


def test_scan_says_where_it_wrote(clip, tmp_path, capsys):
    """Item 6: every output is named on stderr; the summary names its probability for what it is (12)."""
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "t.csv", tmp_path / "t.png"
    code, _, err = run(["scan", clip, *BUNDLED, "--out", out, "--plot", png, "--quiet"], capsys)
    assert code == EXIT_OK
    assert f"written to {out}" in err and f"written to {png}" in err and out.is_file() and png.is_file()
    assert "averaged over the windows" in err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "abc"])
def test_start_must_be_a_finite_number(clip, capsys, value):
    """Item 7: no ValueError / OverflowError traceback."""
    with pytest.raises(SystemExit) as e:
        main(["predict", str(clip), *BUNDLED, f"--start={value}"])
    assert e.value.code == EXIT_USAGE
    assert "number of seconds" in capsys.readouterr().err


def test_closed_pipe_exits_quietly(clip):
    """Item 7: `predict --json | head -1` gives no BrokenPipeError traceback."""
    files = " ".join([str(clip)] * 60)
    cmd = (f"{sys.executable} -m sync_sdk.cli.main predict {files} --json --model synthetic-tiny "
           "--shift-views 0 --threads 1 | head -c 10; exit ${PIPESTATUS[0]}")
    out = subprocess.run(["bash", "-c", cmd], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == EXIT_BROKEN_PIPE and "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr


def test_api_front_door_gives_typed_errors(clip, engine):
    """Item 9: wrong types and values are InputErrors that name the argument."""
    from sync_sdk import SyncEngine
    with pytest.raises(InputError, match="start_sec must be a number of seconds"):
        engine.predict(clip, start_sec="1.0")
    with pytest.raises(InputError, match="finite"):
        engine.predict(clip, start_sec=float("nan"))
    with pytest.raises(InputError, match="source must be"):
        engine.predict(123)
    with pytest.raises(InputError, match="list of sources"):
        engine.predict_batch(str(clip))
    with pytest.raises(InputError, match="hop_sec must be a finite"):
        engine.scan(clip, hop_sec=float("inf"))
    with pytest.raises(InputError, match="unknown option.*foo.*expected any of.*shift_views"):
        SyncEngine.from_pretrained("synthetic-tiny", foo=1)
    assert engine.predict(clip, start_sec=np.float32(0.0)).offset_sec == 0.6


def test_no_evidence_in_one_stream_is_flagged(engine):
    """Item 10: silent audio or a still picture: flagged in the result, its JSON, scan and stream."""
    from sync_sdk.synthetic import generate_clip
    c = generate_clip(3, offset_sec=0.4, duration_sec=6.0)
    silent = (c.frames, c.fps, np.zeros_like(c.audio), c.sample_rate)
    still = (np.repeat(c.frames[:1], len(c.frames), 0), c.fps, c.audio, c.sample_rate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SilentAudioWarning)
        res = engine.predict(silent)
        timeline = engine.scan(silent)
        stream = engine.stream()
        pushed = stream.push_video(c.frames) + stream.push_audio(np.zeros_like(c.audio))
    assert res.flags == ("silent_audio",) and not res.has_evidence
    assert res.to_dict()["has_evidence"] is False and res.to_dict()["flags"] == ["silent_audio"]
    assert all(w.flags == ("silent_audio",) for w in timeline) and len(pushed) >= 2
    assert [w.flags for w in pushed] == [w.flags for w in timeline[:len(pushed)]]  # the last waits for audio
    assert timeline.summary()["offset_sec"] is None and timeline.summary()["n_flagged"] == len(timeline)
    assert engine.predict(still).flags == ("static_video",)
    normal = engine.predict((c.frames, c.fps, c.audio, c.sample_rate))
    assert normal.flags == () and normal.has_evidence


def test_silent_audio_is_said_at_the_cli(tmp_path, capsys):
    from sync_sdk.synthetic import generate_clip, write_clip
    c = generate_clip(3, duration_sec=5.2)
    c.audio[:] = 0
    write_clip(c, tmp_path / "silent.mp4")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SilentAudioWarning)
        code, out, _ = run(["predict", tmp_path / "silent.mp4", *BUNDLED], capsys)
    assert code == EXIT_OK and "no evidence (silent audio)" in out


def test_allow_unsafe_is_a_cli_option(clip, capsys, monkeypatch):
    """Item 11: the unsafe-checkpoint message's advice exists at the CLI."""
    cli_main = importlib.import_module("sync_sdk.cli.main")  # sync_sdk.cli.main is also the function
    seen = {}

    def fake(name, **kwargs):
        seen.update(kwargs)
        raise InputError("stop here")
    monkeypatch.setattr(cli_main.SyncEngine, "from_pretrained", staticmethod(fake))
    run(["predict", clip, "--model", "x.pt", "--allow-unsafe"], capsys)
    assert seen.get("allow_unsafe") is True


def test_attribute_shows_progress(clip, capsys):
    """Item 12: attribute reports its trials as they go."""
    code, _, err = run(["attribute", clip, *BUNDLED, "--trials", "4", "--families", "audio", "video"], capsys)
    assert code == EXIT_OK and "attribute" in err and "8/8" in err


def test_window_flags_from_segments_equal_flags_over_the_window():
    """Scan and stream compute each segment's flags once; a window's are those of all its segments,
    which must equal the flags computed over the whole window, whatever single frame or sample moves."""
    from sync_sdk.geometry import N_SEGMENTS, segment_frame, segment_sample
    from sync_sdk.inputs.window import SegmentFlags, span_flags
    from sync_sdk.media.span import MediaSpan
    rng = np.random.default_rng(0)
    n_frames, n_samples = segment_frame(N_SEGMENTS + 6) + 16, segment_sample(N_SEGMENTS + 6) + 10240
    for trial in range(40):
        frames = np.zeros((n_frames, 32, 32, 3), np.uint8)
        audio = np.zeros(n_samples, np.float32)
        if trial % 2:
            frames[rng.integers(n_frames):, rng.integers(32), rng.integers(32)] = 200  # one change
        if trial % 4 < 2:
            audio[rng.integers(n_samples)] = 0.5  # one click
        span = MediaSpan(frames, 0, audio, 0)
        flags = SegmentFlags()
        for j in range(6):
            flags.add(span, range(j, j + N_SEGMENTS))
            assert flags.window(j, N_SEGMENTS) == span_flags(span, j, N_SEGMENTS), (trial, j)
