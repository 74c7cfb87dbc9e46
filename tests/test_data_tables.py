"""Table-level pieces of the data pipeline: manifest formats, strict config, filters, captions, buckets,
export and the CLI. No video decoding here (fast)."""

from __future__ import annotations

import http.server
import json
import os
import threading
from pathlib import Path

import pytest
import yaml

from cinegen.config import ConfigError
from cinegen.data.bucket import assign_bucket, bucket_records, bucket_size, frames_for, nearest_ratio
from cinegen.data.caption import caption_item, clean_caption, filename_caption
from cinegen.data.cli import main as data_main
from cinegen.data.config import BucketConfig, CaptionConfig, DataConfig, FilterConfig, load_config, to_dict
from cinegen.data.export import export_records
from cinegen.data.filters import check_thresholds, filter_records
from cinegen.data.manifest import ClipRecord, parse_bucket, read_manifest, write_manifest
from cinegen.fsutil import atomic_write

REPO = Path(__file__).resolve().parents[1]


def _clip(i: int, **kw) -> ClipRecord:
    base = dict(
        path=f"clips/c{i}.mp4",
        width=128,
        height=96,
        num_frames=40,
        fps=10.0,
        start=0.0,
        end=4.0,
        id=f"c{i}",
        scores={
            "motion": 0.01,
            "text_area": 0.0,
            "brightness": 0.5,
            "contrast": 0.1,
            "frozen_ratio": 0.0,
            "border_ratio": 0.0,
            "camera": "static",
            "phash": f"{i * 0x1111111111111:016x}" * 3,
        },
    )
    base.update(kw)
    return ClipRecord(**base)


# --------------------------------------------------------------------------------------------- manifest


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_manifest_round_trip(tmp_path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    recs = [
        _clip(1, crop=[0, 8, 128, 80], meta={"scene": 0, "rotation": 90, "vfr": False}, bucket="33x512x672"),
        _clip(2, text="a red disc, moving", scores={"motion": None, "camera": "pan_left", "phash": "00ff"}),
        ClipRecord(path="/x/broken.mp4", id="b").dropped("scan", "unreadable", "broken.mp4: invalid data", "error"),
        ClipRecord(path="img.png", type="image", width=64, height=64, num_frames=1, id="img"),
    ]
    path = write_manifest(recs, tmp_path / f"m.{fmt}")
    back = read_manifest(path)
    if fmt in ("jsonl", "json"):
        assert back == recs
    else:  # flat formats: missing score columns come back as None, the rest is identical
        for a, b in zip(back, recs, strict=True):
            assert {k: v for k, v in a.scores.items() if v is not None} == {
                k: v for k, v in b.scores.items() if v is not None
            }
            assert (a.path, a.type, a.text, a.width, a.height, a.crop, a.bucket, a.status, a.reason) == (
                b.path,
                b.type,
                b.text,
                b.width,
                b.height,
                b.crop,
                b.bucket,
                b.status,
                b.reason,
            )
            assert a.meta == b.meta
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_manifest_imports_opensora_csv_and_easyanimate_json(tmp_path: Path) -> None:
    (tmp_path / "os.csv").write_text(
        "path,text,num_frames,height,width,aspect_ratio,fps,aes,cmotion\na.mp4,a cat,49,480,720,0.667,24,5.5,pan left\n"
    )
    (r,) = read_manifest(tmp_path / "os.csv")
    assert (r.path, r.text, r.num_frames, r.height, r.width, r.fps) == ("a.mp4", "a cat", 49, 480, 720, 24.0)
    assert r.scores == {"aes": 5.5, "cmotion": "pan left"} and r.id == "a"
    (tmp_path / "ea.json").write_text(
        json.dumps([{"file_path": "v/b.mp4", "text": "a dog", "type": "video", "width": 640, "height": 360}])
    )
    (e,) = read_manifest(tmp_path / "ea.json")
    assert (e.path, e.text, e.type, e.width, e.height) == ("v/b.mp4", "a dog", "video", 640, 360)
    assert parse_bucket("49x480x720") == (49, 480, 720)
    with pytest.raises(ValueError):
        read_manifest(tmp_path / "m.txt")


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(p, "w") as f:
        f.write("half")
        raise RuntimeError("crash")
    assert p.read_text() == "old\n" and os.listdir(tmp_path) == ["t.jsonl"]


# ----------------------------------------------------------------------------------------------- config


def test_default_yaml_equals_builtin_defaults() -> None:
    data = yaml.safe_load((REPO / "configs" / "data" / "default.yaml").read_text())
    assert data == to_dict(DataConfig())
    assert load_config(REPO / "configs" / "data" / "default.yaml") == DataConfig()


def test_config_is_strict(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="filter"):
        load_config(None, ["filter.max_txt_area=0.1"])
    with pytest.raises(ConfigError, match="score.ocr"):
        load_config(None, ["score.ocr=maybe"])
    with pytest.raises(ValueError, match="split.mode"):
        load_config(None, ["split.mode=fast"])
    (tmp_path / "c.yaml").write_text("filter:\n  max_text_area: 0.05\nbucket:\n  frames: [17, 9]\n")
    cfg = load_config(tmp_path / "c.yaml", ["filter.min_motion=null", "engine.workers=3"])
    assert cfg.filter.max_text_area == 0.05 and cfg.filter.min_motion is None
    assert cfg.bucket.frames == (17, 9) and cfg.engine.workers == 3


def test_cli_dry_run_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert data_main(["run", str(tmp_path), "--dry-run", "--set", "score.motion_fps=2", "--workers", "1"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["score"]["motion_fps"] == 2.0 and resolved["input"] == str(tmp_path.resolve())
    assert data_main(["score", "--set", "nope=1"]) == 2
    assert data_main(["score", "--workdir", str(tmp_path / "empty")]) == 1  # no split table yet
    assert "run `cinegen data split` first" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- filters


def test_threshold_reasons_and_cascade() -> None:
    cfg = FilterConfig()
    assert check_thresholds(_clip(1), cfg).ok
    text = check_thresholds(_clip(2, scores={**_clip(2).scores, "text_area": 0.08}), cfg)
    assert (text.status, text.stage, text.reason) == ("dropped", "filter", "text")
    assert "text_area=0.08 > max_text_area=0.02" in text.detail
    # Static and frozen: the first failing check in cascade order is the reason, the detail lists both.
    still = check_thresholds(_clip(3, scores={**_clip(3).scores, "motion": 1e-5, "frozen_ratio": 1.0}), cfg)
    assert still.reason == "static" and "frozen_ratio" in still.detail
    # A skipped scorer (None) is not a failure; a disabled threshold (None) is not checked.
    assert check_thresholds(_clip(4, scores={**_clip(4).scores, "motion": None}), cfg).ok
    lenient = FilterConfig(max_text_area=None)
    assert check_thresholds(_clip(2, scores={**_clip(2).scores, "text_area": 0.08}), lenient).ok
    # Already dropped rows pass through untouched.
    gone = _clip(5).dropped("scan", "unreadable", "x", "error")
    assert check_thresholds(gone, cfg) is gone


def test_near_duplicates_keep_the_largest() -> None:
    h = "0123456789abcdef" * 3
    close = "0123456789abcdee" * 3  # 1 bit per frame away
    recs = [
        _clip(1, scores={**_clip(1).scores, "phash": h}),
        _clip(2, width=256, height=192, scores={**_clip(2).scores, "phash": close}),
        _clip(3),
        _clip(4, scores={**_clip(4).scores, "phash": h, "text_area": 0.5}),  # dropped before dedup
    ]
    out = filter_records(recs, FilterConfig())
    assert [(r.id, r.reason) for r in out] == [
        ("c1", "near_duplicate"),
        ("c2", None),
        ("c3", None),
        ("c4", "text"),
    ]
    assert "of c2" in out[0].detail
    assert all(r.ok for r in filter_records(recs[:3], FilterConfig(dedup_hamming=None)))


# --------------------------------------------------------------------------------------------- captions


def test_clean_caption() -> None:
    cfg = CaptionConfig()
    assert clean_caption("The video shows a red ball bouncing. ", cfg) == "A red ball bouncing."
    assert clean_caption("In this video, the video depicts a cat. A cat.  See https://x.y/z", cfg) == "A cat. See"
    assert clean_caption("a dog runs. A dog runs! Then it sleeps.", cfg) == "A dog runs. Then it sleeps."
    assert clean_caption("   ", cfg) == "" and clean_caption("The video shows", cfg) == ""
    assert clean_caption("one two three four", CaptionConfig(max_words=2)) == "One two"
    assert filename_caption("/raw/Red_ball-bouncing_02_final.mp4") == "red ball bouncing"
    assert filename_caption("/raw/IMG_0042.MOV") == "img"


def test_captioners_fall_back_in_order(tmp_path: Path) -> None:
    cfg = DataConfig()
    src = tmp_path / "a_green_square.mp4"
    src.write_bytes(b"")
    rec = _clip(1, source_path=str(src), scores={**_clip(1).scores, "camera": "pan_left", "motion": 0.03})
    (out,) = caption_item(rec, cfg, tmp_path)
    assert (out.text, out.meta["caption_source"]) == ("A green square", "filename")
    (tmp_path / "a_green_square.json").write_text(json.dumps({"caption": "The video shows a green square."}))
    (out,) = caption_item(rec, cfg, tmp_path)
    assert (out.text, out.meta["caption_source"]) == ("A green square.", "sidecar")
    tmpl = load_config(
        None,
        [
            "caption.captioners=[vlm, template]",
            "caption.vlm_path=/nonexistent",
            "caption.append=', {fps} fps'",
        ],
    )
    (out,) = caption_item(rec, tmpl, tmp_path)
    assert out.text == "A video, panning left camera, fast motion, 10 fps"
    assert out.meta["caption_source"] == "template"
    none = load_config(None, ["caption.captioners=[keep]"])
    (out,) = caption_item(rec, none, tmp_path)
    assert (out.status, out.reason) == ("dropped", "empty_caption")


class _FakeLLM(http.server.BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeLLM.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        text = body["messages"][0]["content"].split("Caption: ")[-1].upper()
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": f"The video shows {text}"}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(reply.encode())

    def log_message(self, *args: object) -> None:
        pass


def test_llm_recaption_through_an_openai_compatible_endpoint(tmp_path: Path, monkeypatch) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _FakeLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("MY_KEY", "sekret")
        url = f"http://127.0.0.1:{server.server_port}/v1"
        cfg = load_config(
            None, [f"caption.llm_base_url={url}", "caption.llm_model=tiny", "caption.llm_api_key_env=MY_KEY"]
        )
        (out,) = caption_item(_clip(1, text="a red disc"), cfg, tmp_path)
        assert out.text == "A RED DISC" and out.meta["caption_source"] == "keep+llm"
        assert out.meta["caption_original"] == "A red disc"
        req = _FakeLLM.seen[-1]
        assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sekret"
        assert req["body"]["model"] == "tiny"
    finally:
        server.shutdown()
    # Endpoint down: the caption is kept and the error noted, the run goes on.
    cfg = load_config(None, [f"caption.llm_base_url=http://127.0.0.1:{server.server_port}/v1", "caption.llm_timeout=2"])
    server.server_close()
    (out,) = caption_item(_clip(1, text="a red disc"), cfg, tmp_path)
    assert out.ok and out.text == "A red disc" and "caption_llm_error" in out.meta


# ---------------------------------------------------------------------------------------------- buckets


def test_bucket_geometry() -> None:
    for ratio in (16 / 9, 1.0, 9 / 16, 4 / 3):
        h, w = bucket_size(ratio, 480 * 720, 16)
        assert h % 16 == 0 and w % 16 == 0
        assert abs(w / h - ratio) / ratio < 0.05 and abs(h * w - 480 * 720) / (480 * 720) < 0.05
    assert bucket_size(1.5, 480 * 720, 16) == (480, 720)  # CogVideoX 2b/5b resolution
    assert nearest_ratio(1920, 1080, ("16:9", "4:3", "1:1")) == "16:9"
    assert nearest_ratio(1080, 1920, ("16:9", "1:1", "9:16")) == "9:16"
    frames = (49, 33, 25, 17, 9)
    assert frames_for(6.0, 8.0, frames) == 49 and frames_for(5.99, 8.0, frames) == 33
    assert frames_for(0.9, 8.0, frames) is None


def test_bucket_records_crop_images_and_small_buckets() -> None:
    cfg = BucketConfig()
    letterboxed = _clip(1, width=128, height=128, crop=[0, 28, 128, 72])  # 16:9 content in a square
    assert assign_bucket(letterboxed, cfg).bucket == "33x448x784"  # 16:9 at the 480x720 pixel budget
    img = ClipRecord(path="i.png", type="image", width=300, height=300, num_frames=1, id="i")
    assert assign_bucket(img, cfg).bucket == "1x592x592"
    short = assign_bucket(_clip(2, end=0.5), cfg)
    assert short.reason == "too_short_for_buckets"
    recs = [_clip(i) for i in range(3)] + [_clip(9, width=96, height=128)]
    out, hist, warnings = bucket_records(recs, BucketConfig(min_bucket_count=2, drop_small_buckets=True))
    assert hist == {"33x512x672": 3} and out[-1].reason == "small_bucket" and "fewer than 2" in warnings[0]


def test_export_writes_manifests_and_cogvideo_layout(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    recs = [
        _clip(1, text="A red disc.", bucket="33x512x672"),
        _clip(2, text="x").dropped("filter", "text"),
        _clip(3, text="Line one\nline two", bucket="33x512x672"),
    ]
    for r in recs:
        (tmp_path / r.path).write_bytes(b"mp4")
    cfg = load_config(None, ["export.paths=relative", "export.link=copy", "export.formats=[jsonl, csv]"]).export
    written = export_records(recs, tmp_path, cfg)
    out = tmp_path / "export"
    assert {p.name for p in written} == {"train.jsonl", "train.csv", "prompt.txt", "videos.txt"}
    train = read_manifest(out / "train.jsonl")
    assert [r.id for r in train] == ["c1", "c3"] and train[0].path == "../clips/c1.mp4"
    assert (out / "prompt.txt").read_text() == "A red disc.\nLine one line two\n"
    assert (out / "videos.txt").read_text() == "videos/c1.mp4\nvideos/c3.mp4\n"
    assert (out / "videos" / "c3.mp4").read_bytes() == b"mp4"
