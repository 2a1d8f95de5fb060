"""Video reading from real encoded files: sampling, resizing, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.data.video import (
    VideoDecodeError,
    probe_video,
    read_video,
    sample_indices,
    video_content_hash,
    write_video,
)

T_SRC, FPS = 32, 8.0


def _ramp(t: int = T_SRC, h: int = 48, w: int = 64) -> np.ndarray:
    """Frame i is a flat colour whose red channel encodes i (8 levels per frame: survives lossy codecs)."""
    f = np.zeros((t, h, w, 3), np.uint8)
    f[..., 0] = (np.arange(t) * 7 + 10)[:, None, None].astype(np.uint8)
    f[..., 1] = 128
    f[..., 2] = 40
    return f


def _frame_ids(frames: torch.Tensor) -> list[int]:
    red = frames[..., 0].float().mean(dim=(1, 2)).numpy()
    return [int(round((r - 10) / 7)) for r in red]


@pytest.fixture(scope="module", params=["mp4", "webm"])
def video(request, tmp_path_factory):
    p = tmp_path_factory.mktemp("vid") / f"ramp.{request.param}"
    write_video(p, _ramp(), fps=FPS)
    return p


def test_probe_reports_stream(video):
    info = probe_video(video)
    assert (info.width, info.height) == (64, 48)
    assert info.n_frames == T_SRC
    assert info.fps == pytest.approx(FPS)
    assert info.codec in ("h264", "vp8")


@pytest.mark.parametrize("n", [1, 4, 16, 32, 48])
def test_uniform_sampling_picks_segment_centres(video, n):
    frames = read_video(video, n)
    assert frames.dtype == torch.uint8 and tuple(frames.shape) == (n, 48, 64, 3)
    assert _frame_ids(frames) == sample_indices(T_SRC, n).tolist()
    assert _frame_ids(frames) == [int((i + 0.5) * T_SRC / n) for i in range(n)]


def test_fps_sampling(video):
    # 8 fps source, 2 fps target: one frame every 4 -> 0, 4, ..., 28 (8 frames over 4 s)
    assert _frame_ids(read_video(video, 8, sampling="fps", fps=2.0)) == list(range(0, 32, 4))
    # more than requested: thinned uniformly (segment centres) over that grid
    assert _frame_ids(read_video(video, 4, sampling="fps", fps=2.0)) == [4, 12, 20, 28]
    # fewer than requested: the grid is repeated so T stays n_frames
    ids = _frame_ids(read_video(video, 16, sampling="fps", fps=2.0))
    assert len(ids) == 16 and sorted(set(ids)) == list(range(0, 32, 4))


def test_resize(video):
    assert tuple(read_video(video, 3, size=32).shape) == (3, 32, 32, 3)
    out = read_video(video, 3, size=(20, 30))
    assert tuple(out.shape) == (3, 20, 30, 3)
    assert _frame_ids(out) == sample_indices(T_SRC, 3).tolist()  # flat colours survive resizing


def test_write_read_keeps_content(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.repeat(np.repeat(rng.integers(0, 256, (8, 8, 8, 3)), 8, 1), 8, 2).astype(np.uint8)
    p = tmp_path / "blocks.mp4"
    write_video(p, frames)
    back = read_video(p, 8).numpy().astype(int)
    assert np.abs(back - frames.astype(int)).mean() < 8  # H.264 crf 16 on flat 8x8 blocks


def test_content_hash_is_stable_and_content_based(tmp_path, video):
    a = video_content_hash(video)
    assert a == video_content_hash(video) and len(a) == 64
    other = tmp_path / f"copy{video.suffix}"
    other.write_bytes(video.read_bytes())
    assert video_content_hash(other) == a


# ------------------------------------------------------------------------------------- bad files
def _expect(path, reason: str, **kw) -> VideoDecodeError:
    with pytest.raises(VideoDecodeError) as ei:
        read_video(path, kw.pop("n", 8), **kw)
    e = ei.value
    assert isinstance(e, RuntimeError)
    assert str(path) in str(e), f"message does not name the file: {e}"
    assert e.path == str(path) and e.reason == reason, (e.reason, str(e))
    return e


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.mp4", "missing")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    _expect(p, "empty")


def test_garbage_and_text_files(tmp_path):
    p = tmp_path / "garbage.mp4"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _expect(p, "unopenable")
    q = tmp_path / "notes.webm"
    q.write_text("this is not a video\n" * 50)
    _expect(q, "unopenable")


def test_directory_is_not_a_video(tmp_path):
    _expect(tmp_path, "missing")


def test_truncated_mp4(tmp_path, video):
    if video.suffix != ".mp4":
        pytest.skip("mp4 case")
    p = tmp_path / "cut.mp4"
    p.write_bytes(video.read_bytes()[: video.stat().st_size // 2])  # moov atom at the end is lost
    _expect(p, "unopenable")


def test_truncated_webm(tmp_path, video):
    if video.suffix != ".webm":
        pytest.skip("webm case")
    p = tmp_path / "cut.webm"
    p.write_bytes(video.read_bytes()[: video.stat().st_size // 2])  # opens, but half the frames are gone
    e = _expect(p, "truncated")
    assert "32 frames" in str(e)


def test_corrupted_payload(tmp_path, video):
    b = bytearray(video.read_bytes())
    for i in range(200, len(b), 7):
        b[i] ^= 0x5A
    p = tmp_path / f"corrupt{video.suffix}"
    p.write_bytes(bytes(b))
    with pytest.raises(VideoDecodeError, match=str(p)):
        read_video(p, 8)


def test_bad_arguments_name_the_file(video):
    _expect(video, "bad_argument", sampling="random")
    _expect(video, "bad_argument", sampling="fps")  # no fps
    _expect(video, "bad_argument", n=0)


def test_sample_indices_edge_cases():
    assert sample_indices(10, 5).tolist() == [1, 3, 5, 7, 9]
    assert sample_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert sample_indices(1, 4).tolist() == [0, 0, 0, 0]
    assert sample_indices(100, 4, "fps", fps=1.0, video_fps=10.0).tolist() == [10, 30, 60, 80]
    with pytest.raises(ValueError):
        sample_indices(0, 4)
    with pytest.raises(ValueError):
        sample_indices(10, 4, "nearest")


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 7, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "a.gif", np.zeros((2, 8, 8, 3), np.uint8))


def test_truncated_faststart_mp4_fails_mid_stream(tmp_path):
    """moov atom first (faststart): the file opens, then the decoder runs out of data."""
    import av

    p = tmp_path / "fs.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (32, 64, 64, 3)).astype(np.uint8)
    with av.open(str(p), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for f in frames:
            for pk in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    cut = tmp_path / "fs_cut.mp4"
    cut.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    assert probe_video(cut).n_frames == 32  # the container still announces every frame
    with pytest.raises(VideoDecodeError, match=str(cut)) as ei:
        read_video(cut, 8)
    assert ei.value.reason in ("decode_error", "truncated")


@pytest.mark.parametrize("suffix,keyint", [("mp4", 25), ("mp4", 0), ("webm", 0)])
def test_seek_reads_the_same_frames_as_decoding_on(tmp_path, suffix, keyint):
    """Seek-based sampling (a long file's default) returns exactly the frames sequential decoding does,
    for uniform and fps sampling, short GOPs and the codec's default ones."""
    p = tmp_path / f"long.{suffix}"
    opts = {"x264-params": f"mbtree=0:keyint={keyint}"} if keyint else None
    write_video(p, _ramp(t=300, h=32, w=32), fps=25, options=opts)
    for kw in ({"n_frames": 8}, {"n_frames": 5}, {"n_frames": 6, "sampling": "fps", "fps": 1.0}):
        seq = read_video(p, seek=False, **kw)
        assert torch.equal(read_video(p, seek=True, **kw), seq), kw
        assert torch.equal(read_video(p, **kw), seq), kw  # seek=None picks seeking here (gaps > 48 frames)
    red = read_video(p, 4, seek=True)[..., 0].float().mean(dim=(1, 2))
    want = torch.tensor([float((int(i) * 7 + 10) % 256) for i in sample_indices(300, 4)])
    assert (red - want).abs().max() < 3, (red, want)  # the frames at the segment centres, not the first ones


def test_seek_on_a_truncated_long_file_says_truncated(tmp_path):
    import av

    p = tmp_path / "fs.mp4"
    frames = _ramp(t=400, h=32, w=32)
    frames[..., 2] = np.random.default_rng(0).integers(0, 255, frames.shape[:3]).astype(np.uint8)  # bulk
    with av.open(str(p), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        s.options = {"x264-params": "keyint=25"}
        for f in frames:
            for pk in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    cut = tmp_path / "fs_cut.mp4"
    cut.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(VideoDecodeError, match=str(cut)) as ei:
        read_video(cut, 8, seek=True)
    assert ei.value.reason in ("decode_error", "truncated")
