"""lmms-eval model ``mambamia``: a checkpoint written by ``harness.train``, scored by lmms-eval.

Registration: lmms-eval 0.7.3 builds its model registry from the Python entry-point group
``lmms_eval.models``; each entry point must load to a ``ModelManifest``. pyproject.toml declares::

    [project.entry-points."lmms_eval.models"]
    mambamia = "harness.lmms_plugin:manifest"

so after ``pip install -e .`` (no environment variables)::

    lmms-eval --model mambamia --model_args checkpoint=results/runs/tiny,max_frames_num=32 \\
        --tasks videomme --output_path results/lmms_eval --log_samples

Model args (anything else is rejected with this list, see :data:`MODEL_ARGS`):

* ``checkpoint`` (required): run dir or its ``model/``; ``weights``: the checkpoint's weights hash as
  :func:`~harness.model_io.weights_hash` computes it. lmms-eval's response cache (``--use_cache``) keys a
  model by its name and model_args, so the harness passes ``weights=`` and a retrained checkpoint gets new cache keys; a
  ``weights`` that does not match the files is an error (a stale command line, not a silent mix).
* ``max_frames_num`` / ``fps``: frames sampled per video (default the run's ``data.n_frames``); with ``fps``
  frames are taken at that rate, at most ``max_frames_num``.
* ``chat_template``: ``auto`` (default: the tokenizer's own chat template when it has one), ``none``.
* ``max_new_tokens``: cap on generated tokens (the task's own ``max_new_tokens`` is used when smaller).
* ``taa_threshold`` / ``taa_max_frames``: the v2 time-axis aggregator's delta threshold and frame cap
  (evaluation-time; an error on a model without the aggregator).
* ``compressor``: swap a compressor in at test time, by registry name (``fastvid``, its defaults and the
  checkpoint's widths) or as a JSON file of a compressor config (what an evaluation-only sweep run
  writes); with ``visual_tokens=N`` it is set to pass exactly N tokens per video (a reducer by its ratio).
  The checkpoint's compressor must be token-wise (the vanilla LMM), as the swapped one (a reducer): the
  field's evaluation of a training-free reducer on an already trained LMM, e.g.
  ``--model_args checkpoint=results/runs/<vanilla>,compressor=fastvid,visual_tokens=64``.
* ``batch_size``, ``device``, ``cache_dir`` (feature cache; default the run's ``data.cache_dir``),
  ``max_cached_videos`` (features kept in memory, default 64: bounded memory), ``output_dir`` (where
  ``plugin_stats.json`` goes; default ``<run>/eval``), ``mode`` (informational).

Videos are read by the project's reader (:mod:`harness.data.video`) and encoded by the run's frozen
encoder through the project's feature cache, so a video scored natively or by lmms-eval gets identical
features. A video that cannot be read is never scored by accident: ``loglikelihood`` returns an infinite
loss for each option (the ``mia_*`` scorer counts such a doc wrong) and ``generate_until`` an empty answer;
every failure is listed whole in ``plugin_stats.json`` (task, doc id, file, reason).

``generate_until`` returns lmms-eval ``GenerationResult``s whose ``TokenCounts.input_tokens`` is the LLM's
real input length (text + visual tokens), so ``--log_samples`` rows carry the token budget.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from tqdm import tqdm

from harness.config import PLUGIN_EVAL_ARGS
from harness.data.cache import FeatureCache
from harness.data.encoders import build_encoder
from harness.data.features import video_inputs
from harness.data.video import VideoDecodeError
from harness.model.compressors.base import TokenMeter
from harness.model.registry import CompressorConfigBase, build_config, wants_saliency
from harness.model.tokenizer import VIDEO_PLACEHOLDER
from harness.model_io import checkpoint_config, load_model, model_dir, weights_hash
from harness.store import atomic_write_text

MODEL_ID = "mambamia"
#: every model arg the plugin takes; lmms-eval itself passes batch_size / max_batch_size / device
MODEL_ARGS = ("checkpoint", "weights", "batch_size", "max_batch_size", "device", "mode", "output_dir",
              "compressor", "visual_tokens", *PLUGIN_EVAL_ARGS)
CHAT_TEMPLATES = ("auto", "none")


def manifest():
    """Entry-point payload: lmms-eval's registry calls this (see the module docstring). Imported
    lazily: ``lmms_eval.models`` loads the entry points while it initialises, and this module may be
    the one that triggered that initialisation."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path="harness.lmms_plugin.MambaMiaLMM")


class MambaMiaLMM(lmms):
    """lmms-eval "simple" model wrapping :class:`harness.model.lmm.VideoLMM` (args: module docstring)."""

    is_simple = True

    def __init__(self, checkpoint: str = "", **kwargs: Any) -> None:
        super().__init__()
        unknown = sorted(set(kwargs) - set(MODEL_ARGS))
        if unknown:
            raise ValueError(f"mambamia: unknown model_args {', '.join(unknown)}; allowed: {', '.join(MODEL_ARGS)}")
        if not checkpoint:
            raise ValueError("mambamia: model_args needs checkpoint=<run dir written by harness.train>")
        a = dict(kwargs)
        self._rank = int(os.environ.get("RANK", 0))
        self._world_size = int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_RANK", 0))
        device = a.get("device") or (f"cuda:{local}" if torch.cuda.is_available() else "cpu")
        self._device = torch.device(device)
        self.checkpoint = Path(checkpoint)
        self.weights = weights_hash(checkpoint)
        if a.get("weights") not in (None, "") and str(a["weights"]) != self.weights:
            raise ValueError(f"mambamia: weights={a['weights']} but {model_dir(checkpoint)} hashes to "
                             f"{self.weights}: the checkpoint changed since this command line was made")
        self.model, self.cfg = load_model(checkpoint, self._device, compressor=self._swap(checkpoint, a))
        self.meter = TokenMeter(self.model.compressor)
        self.batch_size_per_gpu = int(a.get("batch_size") or 16)
        self.mode = str(a.get("mode", "loglik"))
        self.max_new_tokens = int(a.get("max_new_tokens", 16))
        self.chat_template = str(a.get("chat_template", "auto"))
        if self.chat_template not in CHAT_TEMPLATES:
            raise ValueError(f"mambamia: chat_template={self.chat_template!r}; allowed: {', '.join(CHAT_TEMPLATES)}")
        self.use_chat = self.chat_template == "auto" and bool(getattr(self.model.tokenizer, "chat_template", None))
        self.max_cached = int(a.get("max_cached_videos", 64))
        self.output_dir = Path(a["output_dir"]) if a.get("output_dir") else self.checkpoint / "eval"
        self.data_cfg = self.cfg.data
        if a.get("max_frames_num") not in (None, ""):
            self.data_cfg = replace(self.data_cfg, n_frames=int(a["max_frames_num"]))
        if a.get("fps") not in (None, ""):
            self.data_cfg = replace(self.data_cfg, sampling="fps", fps=float(a["fps"]))
        if a.get("cache_dir"):
            self.data_cfg = replace(self.data_cfg, cache_dir=str(a["cache_dir"]))
        self._set_taa(a.get("taa_threshold"), a.get("taa_max_frames"))
        self.encoder = build_encoder(self.cfg.model.encoder)
        self.cache = FeatureCache(self.data_cfg.cache_dir)
        self._feats: OrderedDict[str, Any] = OrderedDict()  # path -> ((T, P, D) features, (T, P) saliency | None)
        self.failed: list[dict[str, Any]] = []
        self._failed_paths: dict[str, str] = {}
        self._tokens: dict[str, list[int]] = {}
        self._prompts: dict[str, str] = {}
        self._unk: dict[str, int] = {}
        self._stats: dict[str, Any] = {"visual_in": None, "llm_visual": None}
        self.model_args = {"weights": self.weights, "n_frames": self.data_cfg.n_frames,
                           "sampling": self.data_cfg.sampling, "fps": self.data_cfg.fps,
                           "chat_template": "tokenizer" if self.use_chat else "none",
                           "max_new_tokens": self.max_new_tokens, **self._taa_args}

    @staticmethod
    def _swap(checkpoint: str, a: dict[str, Any]) -> CompressorConfigBase | None:
        """The compressor named by ``compressor=`` (registry name or JSON file), met to ``visual_tokens=``."""
        spec, budget = a.get("compressor"), a.get("visual_tokens")
        if spec in (None, ""):
            if budget not in (None, ""):
                raise ValueError("mambamia: visual_tokens= needs compressor= (the compressor to swap in)")
            return None
        _, _, own = checkpoint_config(checkpoint)
        c = own.model.compressor
        if str(spec).endswith(".json"):
            d = json.loads(Path(spec).read_text())
        else:
            d = {"name": str(spec), "d_in": c.d_in, "d_model": c.d_model, "d_out": c.d_out}
        cfg = build_config(d)
        if budget not in (None, ""):
            frames = int(a.get("max_frames_num") or own.data.n_frames)
            cfg = cfg.meet_budget(int(budget), frames, own.model.encoder.patches_per_frame, own.model.budget_by)
        return cfg

    def _set_taa(self, threshold: Any, max_frames: Any) -> None:
        taa = getattr(self.model.compressor, "taa", None)
        self._taa_args: dict[str, Any] = {}
        if threshold in (None, "") and max_frames in (None, ""):
            return
        if taa is None:
            raise ValueError("mambamia: taa_threshold / taa_max_frames given but the model has no time-axis "
                             "aggregator (model.compressor.taa.enabled is false)")
        t = taa.cfg
        if threshold not in (None, ""):
            t = replace(t, threshold=float(threshold))
        if max_frames not in (None, ""):
            t = replace(t, max_frames=int(max_frames))
        taa.cfg = t
        self._taa_args = {"taa_threshold": t.threshold, "taa_max_frames": t.max_frames}

    # lmms-eval reads these
    @property
    def device(self):
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    # ---------------------------------------------------------------- visuals
    def _video_feats(self, path: str):
        """((T, P, D) features, (T, P) encoder saliency or None) of one video through the project's reader
        + cache, the saliency only when the compressor reads it; None if the video failed. At most
        ``max_cached_videos`` are kept in memory (least recently used dropped first)."""
        if path in self._feats:
            self._feats.move_to_end(path)
            return self._feats[path]
        if path in self._failed_paths:
            return None
        try:
            f, _, sal = video_inputs(path, self.data_cfg, self.encoder, self.cache,
                                     saliency=wants_saliency(self.model.compressor.cfg))
            f = f.float()
            if self._stats["visual_in"] is None:
                T, P = f.shape[:2]
                self._stats = {"visual_in": int(T * P), "llm_visual": int(self.model.count_visual_tokens(T, P)),
                               "compressor": self.cfg.model.compressor.name}
        except (VideoDecodeError, OSError) as e:
            self._failed_paths[path] = str(e)
            return None
        self._feats[path] = f, sal
        while len(self._feats) > self.max_cached:
            self._feats.popitem(last=False)
        return f, sal

    def _doc_visual(self, doc_to_visual, task: str, split: str, doc_id: int) -> str:
        doc = self.task_dict[task][split][doc_id]
        visuals = doc_to_visual(doc)
        if not visuals:
            raise ValueError(f"mambamia: task {task} doc {doc_id} has no video")
        path = visuals[0] if isinstance(visuals, (list, tuple)) else visuals
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"mambamia: task {task} doc_to_visual must return video paths, got {type(path)}")
        return str(path)

    def _prompt(self, task: str, context: str) -> str:
        """The text the LLM sees: the task's prompt, inside the tokenizer's chat template when used.
        The video goes where ``<video>`` stands; without one, where the model's ``video_position`` puts it
        (first in the user turn with a chat template)."""
        text = context
        if self.use_chat:
            if VIDEO_PLACEHOLDER not in text:
                text = f"{VIDEO_PLACEHOLDER}\n{text}"
            text = self.model.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                            tokenize=False, add_generation_prompt=True)
        if task not in self._prompts:
            self._prompts[task] = text
            unk = self.model.tokenizer.unk_token_id
            if unk is not None:
                n = sum(1 for i in self.model.text_ids(text) if i == unk)
                self._unk[task] = n
                if n:
                    from loguru import logger

                    logger.warning(f"mambamia: {n} tokens of the {task} prompt are <unk> for this tokenizer: "
                                   f"the model does not see those words")
        return text

    def _input_tokens(self, prompt: str, emb) -> int:
        before, after = self.model._prompt_parts(prompt)
        return len(before) + int(emb.shape[0]) + len(after)

    def _encode_chunk(self, requests: list[Instance]):
        """Request args, video paths, {path: visual embeddings or None if the video failed}, the indices
        of the requests whose video encoded; failures are logged once per (task, doc)."""
        chunk = [r.args for r in requests]
        paths = [self._doc_visual(a[2], a[4], a[5], a[3]) for a in chunk]
        uniq = list(dict.fromkeys(paths))
        feats = {p: self._video_feats(p) for p in uniq}
        ok = [p for p in uniq if feats[p] is not None]
        embs: dict[str, Any] = {p: None for p in uniq}
        if ok:
            embs.update(zip(ok, self.model.encode_videos([feats[p][0] for p in ok], [feats[p][1] for p in ok])))
        seen = {(f["task"], f["doc_id"]) for f in self.failed}
        for a, p in zip(chunk, paths):
            if embs[p] is None and (a[4], a[3]) not in seen:
                seen.add((a[4], a[3]))
                reason = self._failed_paths.get(p, "unknown")
                self.failed.append({"task": a[4], "split": a[5], "doc_id": int(a[3]), "file": p, "reason": reason})
        rows = [j for j, p in enumerate(paths) if embs[p] is not None]
        return chunk, paths, embs, rows

    def _write_stats(self) -> None:
        if self._rank != 0:
            return
        tokens = {t: {"mean_input_tokens": sum(v) / len(v), "n": len(v)} for t, v in self._tokens.items() if v}
        rec = {**self._stats, **self.meter.summary(), "saliency": sorted(self.meter.saliency),
               "model_args": self.model_args, "n_failed": len(self.failed), "failed": self.failed,
               "input_tokens": tokens, "prompts": self._prompts, "unk_tokens": self._unk}
        atomic_write_text(self.output_dir / "plugin_stats.json", json.dumps(rec, indent=2))

    # ---------------------------------------------------------------- lmms API
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        res: list[tuple[float, bool]] = []
        bs = self.batch_size_per_gpu * 4  # requests of one doc share one forward (4 options)
        pbar = tqdm(total=len(requests), disable=self._rank != 0, desc="mambamia loglikelihood")
        with torch.no_grad():
            for i in range(0, len(requests), bs):
                chunk, paths, embs, rows = self._encode_chunk(requests[i: i + bs])
                scores: dict[int, tuple[float, bool]] = {}
                if rows:
                    conts, prompts = [], []
                    for j in rows:
                        cont = chunk[j][1]
                        if not isinstance(cont, str):
                            doc = self.task_dict[chunk[j][4]][chunk[j][5]][chunk[j][3]]
                            cont = cont(doc)
                        conts.append(cont)
                        prompts.append(self._prompt(chunk[j][4], chunk[j][0]))
                    out = self.model.score_continuations([embs[paths[j]] for j in rows], prompts, conts)
                    for j, p, (lp, greedy) in zip(rows, prompts, out):
                        scores[j] = (-lp, greedy)
                        self._tokens.setdefault(chunk[j][4], []).append(self._input_tokens(p, embs[paths[j]]))
                for j in range(len(chunk)):
                    res.append(scores.get(j, (float("inf"), False)))  # failed video: the task scores it wrong
                pbar.update(len(chunk))
        pbar.close()
        self._write_stats()
        return res

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        res: list[GenerationResult] = []
        bs = self.batch_size_per_gpu
        pbar = tqdm(total=len(requests), disable=self._rank != 0, desc="mambamia generate")
        with torch.no_grad():
            for i in range(0, len(requests), bs):
                chunk, paths, embs, rows = self._encode_chunk(requests[i: i + bs])
                texts: dict[int, GenerationResult] = {}
                groups: dict[str, list[int]] = {}  # rows with the same generation kwargs go together
                for j in rows:
                    groups.setdefault(json.dumps(chunk[j][1], sort_keys=True, default=str), []).append(j)
                for key, idx in groups.items():
                    kw = json.loads(key)
                    until = kw.get("until") or []
                    if isinstance(until, str):
                        until = [until]
                    n_new = min(int(kw.get("max_new_tokens", self.max_new_tokens)), self.max_new_tokens)
                    prompts = [self._prompt(chunk[j][4], chunk[j][0]) for j in idx]
                    out = self.model.generate([embs[paths[j]] for j in idx], prompts, max_new_tokens=n_new,
                                              until=until)
                    for j, p, t in zip(idx, prompts, out):
                        n_in = self._input_tokens(p, embs[paths[j]])
                        self._tokens.setdefault(chunk[j][4], []).append(n_in)
                        texts[j] = GenerationResult(text=t, token_counts=TokenCounts(
                            input_tokens=n_in, output_tokens=len(self.model.text_ids(t))))
                res += [texts.get(j, GenerationResult(text="")) for j in range(len(chunk))]
                pbar.update(len(chunk))
        pbar.close()
        self._write_stats()
        return res

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("mambamia answers single-turn multiple-choice tasks only")
