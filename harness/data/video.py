"""Read frames from real encoded video files (PyAV) and write them back (used by the synthetic suite).

``read_video(path, n_frames)`` returns exactly ``n_frames`` RGB frames as a ``torch.uint8`` tensor of shape
``(T, H, W, 3)``:

* ``sampling="uniform"``: the video is cut into ``n_frames`` equal segments and the middle frame of each
  segment is taken (a video shorter than ``n_frames`` repeats frames).
* ``sampling="fps"``: one frame every ``1 / fps`` seconds (starting at t=0); if that gives more than
  ``n_frames`` frames they are thinned uniformly, if fewer they are repeated (nearest neighbour in time),
  so that batches stay rectangular.

Frames are found by seeking for long files (``seek=None``: when wanted frames lie more than
:data:`SEEK_MIN_GAP` frames apart, jump to the keyframe before each and decode up to it), so decode time
is flat in the video's length for a fixed frame count; short files are decoded from the start.

Every failure is a :class:`VideoDecodeError` (a ``RuntimeError``) whose message starts with the file
path: missing file, empty file, a container FFmpeg cannot open, no video stream, a stream that decodes to
no frames, a truncated stream (far fewer frames than the container announces) and decoder errors.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

try:  # PyAV is a hard dependency; keep the import error readable.
    import av
except ImportError as e:  # pragma: no cover
    raise ImportError("harness.data.video needs PyAV: pip install av") from e

SAMPLING_MODES = ("uniform", "fps")
# A decoded stream may be this much shorter than the container announces (rounded durations, dropped
# trailing B-frames) before it is called truncated.
_TRUNCATION_TOLERANCE = 0.05


class VideoDecodeError(RuntimeError):
    """A video could not be read. ``path`` is the file, ``reason`` a short machine-friendly tag
    (``missing``, ``empty``, ``unopenable``, ``no_video_stream``, ``no_frames``, ``truncated``,
    ``decode_error``, ``bad_argument``)."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str):
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{self.path}: {reason}: {detail}")


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the first video stream (``n_frames`` may be estimated from the
    duration when the container has no frame count, e.g. WebM)."""

    path: str
    n_frames: int
    fps: float
    width: int
    height: int
    duration: float  # seconds
    codec: str


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoDecodeError(path, "missing", "file does not exist")
    if not path.is_file():
        raise VideoDecodeError(path, "missing", "not a regular file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "empty", "file has 0 bytes")


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except Exception as e:  # av.error.* (InvalidDataError, EOFError...), OSError
        raise VideoDecodeError(path, "unopenable", f"FFmpeg cannot open it ({type(e).__name__}: {e})") from e


def _stream_info(path: Path, container: av.container.InputContainer) -> VideoInfo:
    if not container.streams.video:
        raise VideoDecodeError(path, "no_video_stream", "the container has no video stream")
    s = container.streams.video[0]
    fps = float(s.average_rate or s.guessed_rate or 0.0) or 0.0
    duration = 0.0
    if s.duration is not None and s.time_base is not None:
        duration = float(s.duration * s.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    n = int(s.frames or 0)
    if n <= 0 and duration > 0 and fps > 0:
        n = int(round(duration * fps))
    return VideoInfo(str(path), n, fps, int(s.codec_context.width or 0), int(s.codec_context.height or 0),
                     duration, s.codec_context.name)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Container metadata of ``path`` without decoding frames (raises :class:`VideoDecodeError`)."""
    p = Path(path)
    _check_file(p)
    container = _open(p)
    try:
        info = _stream_info(p, container)
        if info.n_frames <= 0:  # no count and no duration: count packets (demux only, no decode)
            try:
                n = sum(1 for pk in container.demux(container.streams.video[0]) if pk.size > 0)
            except Exception as e:
                raise VideoDecodeError(p, "decode_error", f"demuxing failed ({type(e).__name__}: {e})") from e
            info = VideoInfo(info.path, n, info.fps, info.width, info.height,
                             n / info.fps if info.fps else 0.0, info.codec)
        return info
    finally:
        container.close()


def sample_indices(n_total: int, n_frames: int, sampling: str = "uniform", fps: float | None = None,
                   video_fps: float | None = None) -> np.ndarray:
    """Frame indices (int64, shape ``(n_frames,)``, non-decreasing, in ``[0, n_total)``) to take from a
    video of ``n_total`` frames. See the module docstring for the two modes."""
    if n_total < 1:
        raise ValueError(f"n_total must be >= 1, got {n_total}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if sampling == "uniform":
        idx = np.floor((np.arange(n_frames) + 0.5) * n_total / n_frames)
    elif sampling == "fps":
        if not fps or fps <= 0:
            raise ValueError(f"sampling='fps' needs fps > 0, got {fps!r}")
        if not video_fps or video_fps <= 0:
            raise ValueError("sampling='fps' needs the video's frame rate")
        step = video_fps / fps  # source frames between two samples
        grid = np.arange(0.0, n_total, step)
        grid = grid[np.floor(grid) < n_total]
        pick = np.floor((np.arange(n_frames) + 0.5) * len(grid) / n_frames).astype(np.int64)
        idx = np.floor(grid[pick])
    else:
        raise ValueError(f"unknown sampling {sampling!r}; allowed: {', '.join(SAMPLING_MODES)}")
    return np.clip(idx.astype(np.int64), 0, n_total - 1)


def _resolve_size(size: int | Sequence[int] | None, width: int, height: int) -> tuple[int, int] | None:
    """``size`` -> (height, width): int means square; None keeps the source size."""
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


#: read_video(seek=None) seeks when the next wanted frame is more than this many frames ahead: closer
#: than that, decoding on is cheaper than a seek (which restarts at the previous keyframe)
SEEK_MIN_GAP = 48


def read_video(path: str | os.PathLike, n_frames: int, sampling: str = "uniform", fps: float | None = None,
               size: int | Sequence[int] | None = None, seek: bool | None = None) -> torch.Tensor:
    """Decode ``n_frames`` RGB frames from ``path``.

    Args:
        path: an encoded video file (mp4/H.264, webm/VP8/VP9, anything FFmpeg reads).
        n_frames: number of frames to return (T).
        sampling: ``"uniform"`` or ``"fps"`` (then ``fps`` is required).
        fps: target sampling rate for ``sampling="fps"``.
        size: output size; int ``s`` -> ``(s, s)``, or ``(H, W)``; None keeps the source resolution.
        seek: jump to each wanted frame (``container.seek`` to the keyframe before it, then decode up to it)
            instead of decoding every frame up to the last one wanted. None (default): seek when wanted
            frames are more than :data:`SEEK_MIN_GAP` frames apart, so an hour-long video costs about
            ``n_frames`` GOPs of decoding, not the whole stream. Frame ``i`` is the one shown at
            ``i / fps`` (the same frame sequential decoding counts to, for constant frame rate).

    Returns:
        ``torch.uint8`` tensor ``(T, H, W, 3)``.

    Raises:
        VideoDecodeError: missing / empty / unopenable / truncated / undecodable file (message names it).
    """
    p = Path(path)
    if sampling not in SAMPLING_MODES:
        raise VideoDecodeError(p, "bad_argument", f"unknown sampling {sampling!r}; allowed: {SAMPLING_MODES}")
    if n_frames < 1:
        raise VideoDecodeError(p, "bad_argument", f"n_frames must be >= 1, got {n_frames}")
    if sampling == "fps" and (fps is None or fps <= 0):
        raise VideoDecodeError(p, "bad_argument", f"sampling='fps' needs fps > 0, got {fps!r}")
    info = probe_video(p)
    if info.n_frames <= 0:
        raise VideoDecodeError(p, "no_frames", "the video stream has no frames")
    wanted = sample_indices(info.n_frames, n_frames, sampling, fps, info.fps or None)
    hw = _resolve_size(size, info.width, info.height)
    uniq = sorted(set(wanted.tolist()))
    gaps = np.diff([0, *uniq])
    if seek is None:
        seek = info.fps > 0 and bool(len(gaps)) and float(gaps.max()) > SEEK_MIN_GAP
    elif seek and info.fps <= 0:
        seek = False  # no frame rate: no index -> time mapping; decode on
    got = _decode_seek(p, info, uniq, hw) if seek else _decode_sequential(p, info, uniq, hw)
    return torch.from_numpy(np.stack([got[int(i)] for i in wanted]))


def _decode_error(p: Path, n_decoded: int, expected: int, e: Exception) -> VideoDecodeError:
    if n_decoded == 0:
        return VideoDecodeError(p, "decode_error", f"no frame decodes ({type(e).__name__}: {e})")
    return VideoDecodeError(p, "decode_error", f"decoder failed after {n_decoded} of {expected} frames "
                                               f"({type(e).__name__}: {e})")


def _check_short(p: Path, last_index: int, expected: int) -> None:
    """The stream ended at frame ``last_index`` before a wanted one: a little short is metadata rounding,
    a lot is a truncated file."""
    n_decoded = last_index + 1
    if n_decoded < expected * (1 - _TRUNCATION_TOLERANCE) - 1:
        raise VideoDecodeError(p, "truncated",
                               f"the container announces {expected} frames but only {n_decoded} decode")


def _decode_sequential(p: Path, info: VideoInfo, wanted: list[int], hw) -> dict[int, np.ndarray]:
    """Decode from the start up to the last wanted frame, counting frames."""
    wanted_set, last_needed = set(wanted), wanted[-1]
    got: dict[int, np.ndarray] = {}
    last_frame = None
    n_decoded = 0
    container = _open(p)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                i = n_decoded
                n_decoded += 1
                last_frame = frame
                if i in wanted_set:
                    got[i] = _to_rgb(frame, hw)
                if i >= last_needed:
                    break
        except Exception as e:  # av.error.* mid-stream
            raise _decode_error(p, n_decoded, info.n_frames, e) from e
    finally:
        container.close()
    if n_decoded == 0:
        raise VideoDecodeError(p, "no_frames", "the video stream decodes to 0 frames")
    if n_decoded <= last_needed:
        _check_short(p, n_decoded - 1, info.n_frames)
        tail = _to_rgb(last_frame, hw)
        for i in wanted_set:
            if i >= n_decoded:
                got[i] = tail
    return got


def _decode_seek(p: Path, info: VideoInfo, wanted: list[int], hw) -> dict[int, np.ndarray]:
    """Seek to the keyframe before each far-away wanted frame, then decode up to it. Frame ``i`` is the one
    on screen at ``i / fps``: the last decoded frame whose timestamp index is <= ``i``."""
    got: dict[int, np.ndarray] = {}
    container = _open(p)
    n_decoded = 0
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base)
        start = stream.start_time or 0

        def index_of(frame) -> int:
            t = (frame.pts - start) * tb if frame.pts is not None else float(frame.time or 0.0)
            return int(round(t * info.fps))

        frames = None
        last = buf = None  # (index, frame): the latest frame at or before the target, one decoded past it
        for target in wanted:
            cur = buf[0] if buf else (last[0] if last else None)
            if frames is None or cur is None or target - cur > SEEK_MIN_GAP:
                try:
                    container.seek(start + int(target / info.fps / tb), stream=stream, backward=True,
                                   any_frame=False)
                except Exception as e:
                    raise _decode_error(p, n_decoded, info.n_frames, e) from e
                frames = container.decode(stream)
                last = buf = None
            while True:
                if buf is None:
                    try:
                        fr = next(frames, None)
                    except Exception as e:  # av.error.* mid-stream
                        raise _decode_error(p, n_decoded, info.n_frames, e) from e
                    if fr is None:
                        break
                    n_decoded += 1
                    buf = (index_of(fr), fr)
                if buf[0] > target:
                    break  # keep it for the next target
                last, buf = buf, None
                if last[0] == target:
                    break
            if last is not None and (last[0] == target or buf is not None):
                got[target] = _to_rgb(last[1], hw)
            elif buf is not None:  # the seek landed past the target (no earlier keyframe): nearest frame
                got[target] = _to_rgb(buf[1], hw)
            elif last is None:  # nothing decodes from here on: let decoding from the start say why
                container.close()
                return _decode_sequential(p, info, wanted, hw)
            else:  # the stream ended before the target
                _check_short(p, last[0], info.n_frames)
                tail = _to_rgb(last[1], hw)
                for t in wanted:
                    if t >= target:
                        got[t] = tail
                break
    finally:
        container.close()
    return got


def _to_rgb(frame: av.VideoFrame, hw: tuple[int, int] | None) -> np.ndarray:
    if hw is None:
        return frame.to_ndarray(format="rgb24")
    h, w = hw
    return frame.reformat(width=w, height=h, format="rgb24", interpolation="BILINEAR").to_ndarray()


# mbtree=0: with macroblock-tree rate control libx264 15.x gave different bytes for identical input from
# run to run (seen on 32x32 clips); without it the output is reproducible, which the cache keys rely on.
_X264 = {"preset": "veryfast", "crf": "16", "x264-params": "mbtree=0"}
VIDEO_CODECS = {".mp4": ("libx264", _X264),
                ".mkv": ("libx264", _X264),
                ".webm": ("libvpx", {"deadline": "good", "cpu-used": "5", "crf": "6", "b:v": "2M"})}


def write_video(path: str | os.PathLike, frames: np.ndarray | torch.Tensor, fps: float = 8.0,
                codec: str | None = None, options: dict[str, str] | None = None) -> None:
    """Encode ``frames`` (uint8 ``(T, H, W, 3)``, H and W even) to ``path``; the container is chosen by
    the suffix (``.mp4``/``.mkv``: H.264, ``.webm``: VP8). Written to a temp name then renamed."""
    p = Path(path)
    arr = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{p}: frames must be uint8 (T, H, W, 3), got {arr.dtype} {tuple(arr.shape)}")
    t, h, w, _ = arr.shape
    if h % 2 or w % 2:
        raise ValueError(f"{p}: H and W must be even for yuv420p, got {h}x{w}")
    default_codec, default_opts = VIDEO_CODECS.get(p.suffix.lower(), (None, {}))
    codec = codec or default_codec
    if codec is None:
        raise ValueError(f"{p}: unknown video suffix {p.suffix!r}; use one of {sorted(VIDEO_CODECS)}")
    opts = dict(default_opts if codec == default_codec else {})
    opts.update(options or {})
    tmp = p.with_name(f".{p.stem}.{os.getpid()}.tmp{p.suffix}")
    rate = _as_fraction(fps)
    # bitexact: no random segment UID / dates / version strings in the container -> reproducible bytes
    with av.open(str(tmp), mode="w", options={"fflags": "+bitexact"}) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        threads = opts.pop("threads", None)
        if threads is not None:  # set on the codec context: the options dict alone leaves x264 threaded
            s.codec_context.thread_count = int(threads)
            s.codec_context.thread_type = "NONE" if int(threads) == 1 else "AUTO"
        s.options = opts
        for f in arr:
            for pk in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    os.replace(tmp, p)


def _as_fraction(fps: float):
    if float(fps).is_integer():
        return int(fps)
    return Fraction(fps).limit_denominator(1001)


def video_content_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of the file's bytes (memoised per process by path, size and mtime)."""
    p = Path(path)
    _check_file(p)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    hit = _HASH_MEMO.get(key)
    if hit is not None:
        return hit
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    digest = h.hexdigest()
    _HASH_MEMO[key] = digest
    return digest


_HASH_MEMO: dict[tuple[str, int, int], str] = {}

__all__ = ["VideoDecodeError", "VideoInfo", "probe_video", "read_video", "sample_indices", "write_video",
           "video_content_hash", "SAMPLING_MODES", "SEEK_MIN_GAP"]
