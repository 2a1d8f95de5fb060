"""Fit and score one probe run (``protocol: probe``): the compressor of ``cfg`` under a fixed read-out.

Training uses ``cfg.train``'s steps, batch size, lr, warm-up and seed (AdamW, linear warm-up, cosine
decay, gradient clipping at 1), cross-entropy over the four fixed options of each item, on the cached
encoder features of ``data.suite``. Scoring is accuracy on ``eval.split`` for the families of
``eval.tasks``; an item whose video failed counts as wrong. ``train.batch_size`` items per step are drawn
from a seeded permutation per epoch, so a run is reproducible from its config.

Run directory, written as the run goes: ``config.json`` (first), ``metrics.jsonl`` (a line per
``train.log_every`` steps: loss, lr, items/s, tokens/s, tokens seen; also to the trackers of
``train.report_to``), ``checkpoint.pt`` (every ``train.checkpoint_every`` steps: a killed run resumes from
it), ``probe.pt`` (weights, written atomically when training ends; a rerun with it present only scores),
``eval/probe_predictions.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from harness import trackers
from harness.config import RunConfig, config_hash, to_dict
from harness.data.synthetic import FAMILIES, expand_families
from harness.identity import stamp
from harness.metrics import accuracy_metrics, median_ms, metrics_upto, saliency_label, task_families
from harness.model.registry import compressor_facts
from harness.model.taa import taa_trace
from harness.probe.data import load_probe_items
from harness.probe.model import ProbeModel
from harness.store import atomic_write_text

WEIGHTS = "probe.pt"
CHECKPOINT = "checkpoint.pt"  # the training state while it trains (removed once probe.pt is written)


def probe_families(cfg: RunConfig) -> list[str]:
    """The families the probe trains and scores: those of ``eval.tasks``, in suite order."""
    want = set(task_families(cfg.eval.tasks))
    if cfg.data.families:
        want &= expand_families(cfg.data.families)
    return [f for f in FAMILIES if f in want]


def _lr(cfg: RunConfig, step: int) -> float:
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    frac = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    return t.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def _save(obj: Any, path: Path) -> None:
    """torch.save through ``<file>.tmp<pid>`` and os.replace (the sweep removes such files a kill left)."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_checkpoint(cfg: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """The training state a killed fit left (``checkpoint.pt``), or None; refuses another config's."""
    p = run_dir / CHECKPOINT
    if not p.is_file():
        return None
    state = torch.load(p, map_location="cpu", weights_only=True)
    if state.get("config_hash") != config_hash(cfg):
        raise ValueError(f"{p}: checkpoint belongs to config {state.get('config_hash')}, not {config_hash(cfg)}; "
                         "use another run dir")
    return state


def fit(cfg: RunConfig, run_dir: Path, progress: bool = False) -> tuple[ProbeModel, dict[str, Any]]:
    """Train (or load, when ``probe.pt`` exists) the probe of ``cfg``. Returns the model and a summary.

    Writes as it goes: ``config.json`` first, a ``metrics.jsonl`` line every ``train.log_every`` steps (and
    to the run's trackers), ``checkpoint.pt`` every ``train.checkpoint_every`` steps; a fit killed after a
    checkpoint resumes from it at the same step with the same batches (the checkpoint holds the weights,
    the optimizer, the batch order and the RNG), and its metrics keep the steps up to the checkpoint once."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", json.dumps(stamp(to_dict(cfg)), indent=1))
    fams = probe_families(cfg)
    torch.manual_seed(cfg.seed)
    model = ProbeModel(cfg, fams)
    wpath = run_dir / WEIGHTS
    train = None
    if not wpath.is_file():
        train = load_probe_items(cfg, "train", fams, progress)
    model.eval()
    with torch.no_grad():  # materialise the read-out's lazy layers (their size is N x D of these features)
        T, P = (train.feats.shape[1:3] if train is not None
                else (cfg.data.n_frames, (cfg.model.encoder.image_size // cfg.model.encoder.patch_size) ** 2))
        model(torch.zeros(1, T, P, cfg.model.compressor.d_in), torch.zeros(1, dtype=torch.long))
    if train is None:
        state = torch.load(wpath, weights_only=True)
        model.load_state_dict(state["model"])
        return model, dict(state["summary"])
    if cfg.data.max_train_items:
        keep = torch.randperm(len(train.ids), generator=torch.Generator().manual_seed(cfg.seed))
        keep = keep[: cfg.data.max_train_items]
        train.feats, train.family_id, train.answer = train.feats[keep], train.family_id[keep], train.answer[keep]
        if train.saliency is not None:
            train.saliency = train.saliency[keep]
    t = cfg.train
    n, bs = len(train.answer), t.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    perm, pos = torch.randperm(n, generator=g), 0
    start, tokens_seen, last_loss = 0, 0, None
    ckpt = _load_checkpoint(cfg, run_dir)
    if ckpt is not None:  # a killed fit: on from its last checkpoint
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        g.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["rng"])
        perm, pos, start = ckpt["perm"], int(ckpt["pos"]), int(ckpt["step"])
        tokens_seen, last_loss = int(ckpt.get("tokens_seen", 0)), ckpt.get("last_loss")
    metrics_path = run_dir / "metrics.jsonl"
    if metrics_path.exists():  # steps after the checkpoint are trained again: their lines go
        atomic_write_text(metrics_path, "".join(ln + "\n" for ln in metrics_upto(metrics_path, start)))
    per_item = int(T * P)  # visual tokens the compressor reads per item
    t0 = win_t = time.time()
    win_items = 0
    model.train()
    for step in range(start, t.steps):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos: pos + bs]
        pos += bs
        lr = _lr(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        sal = train.saliency[idx] if train.saliency is not None else None
        loss = F.cross_entropy(model(train.feats[idx], train.family_id[idx], sal), train.answer[idx])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{run_dir}: probe loss {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done, last_loss = step + 1, round(loss.item(), 6)
        win_items += len(idx)
        tokens_seen += len(idx) * per_item
        if done % t.log_every == 0 or done == t.steps:
            dt = max(1e-9, time.time() - win_t)
            rec = {"step": done, "loss": last_loss, "lr": lr, "items_per_s": win_items / dt,
                   "tokens_per_s": win_items * per_item / dt, "tokens_seen": tokens_seen,
                   "elapsed_s": round(time.time() - t0, 3)}
            with open(metrics_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            trackers.log_train(done, rec)
            win_t, win_items = time.time(), 0
        if done % t.checkpoint_every == 0 and done < t.steps:
            _save({"format": 1, "protocol": "probe", "step": done, "model": model.state_dict(),
                   "optimizer": opt.state_dict(), "generator": g.get_state(), "rng": torch.get_rng_state(),
                   "perm": perm, "pos": pos, "tokens_seen": tokens_seen, "last_loss": last_loss,
                   "config_hash": config_hash(cfg)}, run_dir / CHECKPOINT)
    dt = time.time() - t0
    summary = {"protocol": "probe", "steps": t.steps, "final_loss": last_loss, "resumed_from": start,
               "train_time_s": dt, "items_per_s": (t.steps - start) * bs / max(dt, 1e-9), "n_train": n,
               "families": fams}
    _save({"model": model.state_dict(), "summary": summary}, wpath)
    (run_dir / CHECKPOINT).unlink(missing_ok=True)  # probe.pt is the run's state from here on
    return model, summary


@torch.no_grad()
def score(cfg: RunConfig, model: ProbeModel, run_dir: Path, progress: bool = False) -> dict[str, Any]:
    """Accuracy of ``model`` on ``eval.split``: ``{"metrics", "tokens", "extra"}`` as harness.evaluate."""
    t0 = time.time()
    test = load_probe_items(cfg, cfg.eval.split, model.families, progress)
    model.eval()
    preds, n_tokens = [], []
    saliency: set[str] = set()
    bs = cfg.eval.batch_size
    for i in range(0, len(test.answer), bs):
        sal = test.saliency[i: i + bs] if test.saliency is not None else None
        logits, out = model.logits_and_output(test.feats[i: i + bs], test.family_id[i: i + bs], sal)
        preds.append(logits.argmax(-1))
        n_tokens.append(model.kept_tokens(out))
        if "saliency" in out.aux:
            saliency.add(str(out.aux["saliency"]))
    pred = torch.cat(preds)
    correct: dict[str, list[bool]] = defaultdict(list)
    rows = []
    for j, item_id in enumerate(test.ids):
        ok = bool(pred[j] == test.answer[j])
        correct[test.families[j]].append(ok)
        rows.append({"id": item_id, "family": test.families[j], "pred": int(pred[j]),
                     "answer": int(test.answer[j]), "correct": ok})
    for fam in test.failed_families:  # a failed video is a wrong answer, never a skipped one
        correct[fam].append(False)
    out_dir = run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "probe_predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    T, P = test.feats.shape[1:3]
    extra = {"protocol": "probe", "backend": "probe", "split": cfg.eval.split, "chance": 0.25,
             "n_failed": len(test.failed), "failed": dict(list(test.failed.items())[:20]),
             "eval_time_s": time.time() - t0}
    if len(test.answer):  # batch-1 compressor latency on one test video, as the LMM protocol measures it
        extra["compressor_ms"] = median_ms(lambda: model.compressor(test.feats[:1]), test.feats.device)
        trace = taa_trace(model.compressor, test.feats[0], test.ids[0])
        if trace is not None:
            extra["taa_trace"] = trace
    extra.update(compressor_facts(cfg.model.compressor))
    if saliency:  # a training-free reducer: where its attention-like scores came from
        extra["saliency"] = saliency_label(saliency, cfg.model.encoder.name)
    tokens: dict[str, Any] = {"visual_in": int(T * P), "llm_visual": model.count_visual_tokens(T, P)}
    if n_tokens:  # measured per test video
        per = torch.cat(n_tokens).float()
        tokens.update(llm_visual=round(float(per.mean()), 2), llm_visual_min=int(per.min()),
                      llm_visual_max=int(per.max()))
    return {"metrics": accuracy_metrics(correct), "tokens": tokens, "extra": extra}


def train_and_evaluate(cfg: RunConfig, run_dir: Path, progress: bool = False) -> dict[str, Any]:
    """fit + score; the training summary goes to ``extra.train_*`` as the LMM job body does."""
    model, summary = fit(cfg, Path(run_dir), progress)
    out = score(cfg, model, Path(run_dir), progress)
    for k, v in summary.items():
        if isinstance(v, (int, float, str, bool)):
            out["extra"][f"train_{k}"] = v
    return out
