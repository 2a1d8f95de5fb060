"""lmms-eval model ``mambamia``: a checkpoint written by ``harness.train``, scored by lmms-eval.

Registration: lmms-eval 0.7.3 builds its model registry from the Python entry-point group
``lmms_eval.models``; each entry point must load to a ``ModelManifest`` (or an iterable of them, or a
callable returning one). pyproject.toml declares::

    [project.entry-points."lmms_eval.models"]
    mambamia = "harness.lmms_plugin:manifest"

so after ``pip install -e .`` (no environment variables)::

    lmms-eval --model mambamia --model_args checkpoint=results/runs/tiny \\
        --tasks mia_long --include_path tasks --output_path results/lmms_eval

Model args: ``checkpoint`` (run dir or its ``model/``), ``batch_size`` (requests per forward, default
16), ``device`` (default cuda if available), ``mode`` (informational: the task decides loglikelihood vs
generation), ``max_new_tokens`` (default 8), ``cache_dir`` (feature cache; default the run's
``data.cache_dir``). Videos are read by the project's reader (:mod:`harness.data.video`) and encoded by
the run's frozen encoder through the project's feature cache (:mod:`harness.data.features`), so a
video scored natively or by lmms-eval gets identical features. Under ``accelerate launch`` /
``torchrun`` lmms-eval hands each rank its share of the docs; this model binds ``LOCAL_RANK``'s GPU and
reports ``RANK`` / ``WORLD_SIZE``.

``loglikelihood`` returns ``(loss, is_greedy)`` per request with loss = the continuation's negative
log-likelihood (summed over its tokens; lower is better), as lmms-eval's video models (LLaVA & co.)
do and as ``tasks/mia``'s scorer expects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from harness.store import atomic_write_text

MODEL_ID = "mambamia"


def manifest():
    """Entry-point payload: lmms-eval's registry calls this (see the module docstring). Imported
    lazily: ``lmms_eval.models`` loads the entry points while it initialises, and this module may be
    the one that triggered that initialisation."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path="harness.lmms_plugin.MambaMiaLMM")


class MambaMiaLMM(lmms):
    """lmms-eval "simple" model wrapping :class:`harness.model.lmm.VideoLMM`."""

    is_simple = True

    def __init__(self, checkpoint: str = "", batch_size: int | str = 16, device: str | None = None,
                 mode: str = "loglik", max_new_tokens: int | str = 8, cache_dir: str = "",
                 **kwargs: Any) -> None:
        super().__init__()
        import torch

        from harness.data.cache import FeatureCache
        from harness.data.encoders import build_encoder
        from harness.train import load_model

        if not checkpoint:
            raise ValueError("mambamia: model_args needs checkpoint=<run dir written by harness.train>")
        self._rank = int(os.environ.get("RANK", 0))
        self._world_size = int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_RANK", 0))
        if device is None or device == "":
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        self.model, self.cfg = load_model(checkpoint, self._device)
        self.checkpoint = Path(checkpoint)
        self.batch_size_per_gpu = int(batch_size)
        self.mode = mode
        self.max_new_tokens = int(max_new_tokens)
        enc_cfg = self.cfg.model.encoder
        self.encoder = build_encoder(enc_cfg)
        self.data_cfg = self.cfg.data
        if cache_dir:
            from dataclasses import replace

            self.data_cfg = replace(self.data_cfg, cache_dir=cache_dir)
        self.cache = FeatureCache(self.data_cfg.cache_dir)
        self._feats: dict[str, Any] = {}
        self.failed: dict[str, str] = {}
        self._stats = {"visual_in": None, "llm_visual": None}
        self._ignored_args = sorted(kwargs)

    # lmms-eval reads these
    @property
    def device(self):
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    # ---------------------------------------------------------------- visuals
    def _video_feats(self, path: str):
        """(T, P, D) features of one video through the project's reader + cache; None if it failed."""
        from harness.data.features import video_features
        from harness.data.video import VideoDecodeError

        if path in self._feats:
            return self._feats[path]
        try:
            f, _ = video_features(path, self.data_cfg, self.encoder, self.cache)
            f = f.float()
            if self._stats["visual_in"] is None:
                T, P = f.shape[:2]
                self._stats = {"visual_in": int(T * P), "llm_visual": int(self.model.count_visual_tokens(T, P))}
        except (VideoDecodeError, FileNotFoundError) as e:
            self.failed[path] = str(e)
            f = None
        if len(self._feats) > 4096:
            self._feats.clear()
        self._feats[path] = f
        return f

    def _doc_visual(self, doc_to_visual, task: str, split: str, doc_id: int):
        doc = self.task_dict[task][split][doc_id]
        visuals = doc_to_visual(doc)
        if not visuals:
            raise ValueError(f"mambamia: task {task} doc {doc_id} has no video")
        path = visuals[0] if isinstance(visuals, (list, tuple)) else visuals
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"mambamia: task {task} doc_to_visual must return video paths, got {type(path)}")
        return str(path)

    def _encode(self, paths: list[str]):
        """Unique paths -> {path: visual embeddings (N, H) or None}; batched through the compressor."""
        uniq = list(dict.fromkeys(paths))
        feats = {p: self._video_feats(p) for p in uniq}
        ok = [p for p in uniq if feats[p] is not None]
        embs = self.model.encode_videos([feats[p] for p in ok]) if ok else []
        out: dict[str, Any] = {p: None for p in uniq}
        out.update(dict(zip(ok, embs)))
        return out

    def _write_stats(self) -> None:
        if self._rank != 0:
            return
        out = self.checkpoint / "eval"
        try:
            out.mkdir(parents=True, exist_ok=True)
            rec = {**self._stats, "n_failed": len(self.failed), "failed": dict(list(self.failed.items())[:20])}
            atomic_write_text(out / "lmms_eval_plugin_stats.json", json.dumps(rec, indent=2))
        except OSError:
            pass

    def _encode_chunk(self, requests: list[Instance]):
        """Request args, video paths, {path: visual embeddings or None if the video failed}, and the
        indices of the requests whose video encoded."""
        chunk = [r.args for r in requests]
        paths = [self._doc_visual(a[2], a[4], a[5], a[3]) for a in chunk]
        embs = self._encode(paths)
        rows = [j for j, p in enumerate(paths) if embs[p] is not None]
        return chunk, paths, embs, rows

    # ---------------------------------------------------------------- lmms API
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        import torch
        from tqdm import tqdm

        res: list[tuple[float, bool]] = []
        bs = self.batch_size_per_gpu * 4  # requests of one doc share one forward (4 options)
        pbar = tqdm(total=len(requests), disable=self._rank != 0, desc="mambamia loglikelihood")
        with torch.no_grad():
            for i in range(0, len(requests), bs):
                chunk, paths, embs, rows = self._encode_chunk(requests[i: i + bs])
                scores: dict[int, tuple[float, bool]] = {}
                if rows:
                    conts = []
                    for j in rows:
                        cont = chunk[j][1]
                        if not isinstance(cont, str):
                            doc = self.task_dict[chunk[j][4]][chunk[j][5]][chunk[j][3]]
                            cont = cont(doc)
                        conts.append(cont)
                    out = self.model.score_continuations([embs[paths[j]] for j in rows],
                                                         [chunk[j][0] for j in rows], conts)
                    for j, (lp, greedy) in zip(rows, out):
                        scores[j] = (-lp, greedy)
                for j in range(len(chunk)):
                    res.append(scores.get(j, (float("inf"), False)))  # failed video: worst loss
                pbar.update(len(chunk))
        pbar.close()
        self._write_stats()
        return res

    def generate_until(self, requests: list[Instance]) -> list[str]:
        import torch
        from tqdm import tqdm

        res: list[str] = []
        bs = self.batch_size_per_gpu
        pbar = tqdm(total=len(requests), disable=self._rank != 0, desc="mambamia generate")
        with torch.no_grad():
            for i in range(0, len(requests), bs):
                chunk, paths, embs, rows = self._encode_chunk(requests[i: i + bs])
                texts: dict[int, str] = {}
                # rows with the same generation kwargs go together
                groups: dict[str, list[int]] = {}
                for j in rows:
                    groups.setdefault(json.dumps(chunk[j][1], sort_keys=True, default=str), []).append(j)
                for key, idx in groups.items():
                    kw = json.loads(key)
                    until = kw.get("until") or []
                    if isinstance(until, str):
                        until = [until]
                    out = self.model.generate([embs[paths[j]] for j in idx], [chunk[j][0] for j in idx],
                                              max_new_tokens=int(kw.get("max_new_tokens", self.max_new_tokens)),
                                              until=until)
                    texts.update(dict(zip(idx, out)))
                res += [texts.get(j, "") for j in range(len(chunk))]
                pbar.update(len(chunk))
        pbar.close()
        self._write_stats()
        return res

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("mambamia answers single-turn multiple-choice tasks only")
