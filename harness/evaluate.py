"""Score one trained run: ``python -m harness.evaluate RUN_DIR [eval.tasks=[videomme]] ...``.

Two backends give the same numbers on the same checkpoint and items:

* ``native``: in-process; every test item's four option letters are scored by log-likelihood after the
  prompt (or, with ``eval.mode: generate``, the model generates and the first option letter counts).
* ``lmms_eval``: lmms-eval itself on the ``tasks/`` YAMLs through the ``mambamia`` plugin
  (:mod:`harness.lmms_plugin`), either as the real ``lmms-eval`` CLI in a subprocess
  (``eval.lmms_eval_launch: cli``) or through its Python evaluator (``inprocess``).

:func:`evaluate_run` returns ``{"metrics": [row...], "tokens": {...}, "extra": {...}}`` with one row
``{task, metric, value, stderr, n, n_failed, group, higher_is_better[, filter, input_tokens]}`` per task and
metric: for the synthetic ``mia_*`` tasks accuracy per family, group (``mia_long``, ``mia_dense``) and
overall (``mia_all``); for any other lmms-eval task (``videomme``, ``mlvu_dev`` ...) lmms-eval's own rows,
its metric names and its higher-is-better. A video that cannot be read is a wrong answer: it counts in
``n`` and in ``n_failed``, and ``extra.failed`` lists every one with its file and reason. Outputs of one
evaluation stay in ``<run>/eval/<backend>/<suite_key>/`` (``result.json``, predictions or lmms-eval's
results and ``--log_samples`` files, the plugin's stats), so scoring another suite never overwrites them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from harness.config import ConfigError, RunConfig, build, to_dict
from harness.data.examples import load_examples
from harness.data.prompts import PROMPT_SUFFIX, format_prompt  # noqa: F401  (re-exported)
from harness.data.synthetic import FAMILIES, load_items
from harness.identity import read_config_document
from harness.metrics import accuracy_metrics, median_ms, saliency_label, task_families  # noqa: F401  (re-exported)
from harness.model.compressors.base import TokenMeter
from harness.model.lmm import LETTERS, parse_letter
from harness.model.registry import compressor_facts
from harness.model.taa import taa_trace
from harness.model_io import checkpoint_config, load_model, weights_hash
from harness.overrides import apply_overrides, blame
from harness.store import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parent.parent
TASKS_DIR = REPO_ROOT / "tasks"
def _limit_per_family(items: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` items of each family (suite order, as lmms-eval's ``--limit`` per task)."""
    if not limit:
        return items
    seen: dict[str, int] = defaultdict(int)
    out = []
    for it in items:
        if seen[it["family"]] < limit:
            seen[it["family"]] += 1
            out.append(it)
    return out


def suite_key(cfg: RunConfig) -> str:
    """Folder name of one suite's evaluation outputs under ``<run>/eval/<backend>/``: split, mode and the
    task names (hashed when long), so scoring another suite or split never overwrites this one."""
    name = "+".join(cfg.eval.tasks)
    if len(name) > 64 or not all(c.isalnum() or c in "_+-." for c in name):
        name = f"{name[:40]}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"
    extra = f"_limit{cfg.eval.limit}" if cfg.eval.limit else ""
    return f"{cfg.eval.split}_{cfg.eval.mode}{extra}_{name}"


def eval_dir(cfg: RunConfig, run_dir: Path) -> Path:
    """Where one evaluation of ``run_dir`` keeps its outputs: ``<run>/eval/<backend>/<suite_key>``."""
    return Path(run_dir) / "eval" / cfg.eval.backend / suite_key(cfg)


# ------------------------------------------------------------------------------------------ native
@torch.no_grad()
def score_native(model: Any, examples: list, mode: str = "loglik", batch_size: int = 16,
                 progress: bool = True) -> list[dict[str, Any]]:
    """Predictions for ``examples`` (harness.train.Example): ``[{id, family, pred, answer, correct}]``."""
    model.eval()
    out = []
    for i in tqdm(range(0, len(examples), batch_size), desc=f"score ({mode})", disable=not progress,
                  unit="batch"):
        batch = examples[i: i + batch_size]
        vis = model.encode_videos([e.feats.float() for e in batch],
                                  [None if e.saliency is None else e.saliency.float() for e in batch])
        prompts = [e.prompt for e in batch]
        if mode == "loglik":
            n_opt = max(e.n_options for e in batch)
            lp = model.option_logprobs(vis, prompts, n_options=n_opt)
            preds = [LETTERS[int(lp[j, : e.n_options].argmax())] for j, e in enumerate(batch)]
        else:
            texts = model.generate(vis, prompts, max_new_tokens=4)
            preds = [parse_letter(t, e.n_options) for t, e in zip(texts, batch)]
        for e, p in zip(batch, preds):
            ans = e.answer.strip()
            out.append({"id": e.id, "family": e.family, "pred": p, "answer": ans, "correct": p == ans})
    return out


def evaluate_native(cfg: RunConfig, run_dir: Path, model: Any | None = None, progress: bool = True,
                    checkpoint: Path | None = None) -> dict[str, Any]:
    """In-process scoring of ``cfg.eval.tasks`` on the synthetic suite. A failed video is scored wrong
    (counted in ``n`` and in ``n_failed``) and listed whole in ``extra.failed`` with its file and reason.
    ``checkpoint`` (default ``run_dir``): the trained model; an evaluation-only run (``eval.parent``)
    loads its parent's with ``cfg.model.compressor`` swapped in."""
    t0 = time.time()
    if model is None:
        model, _ = load_model(checkpoint or run_dir, "cuda" if torch.cuda.is_available() else "cpu",
                              compressor=cfg.model.compressor if cfg.eval.parent else None)
    fams = task_families(cfg.eval.tasks)
    examples, failed = load_examples(cfg, cfg.eval.split, progress=progress)
    by_id = {e.id: e for e in examples}
    items = [it for it in load_items(cfg.data.suite, cfg.eval.split, fams)
             if it["id"] in by_id or it["id"] in failed]
    items = _limit_per_family(items, cfg.eval.limit)
    examples = [by_id[it["id"]] for it in items if it["id"] in by_id]
    failed_items = [{"id": it["id"], "family": it["family"], "file": it.get("video"), "reason": failed[it["id"]]}
                    for it in items if it["id"] in failed]
    if not examples and not failed_items:
        raise ValueError(f"no {cfg.eval.split} items for tasks {cfg.eval.tasks} in {cfg.data.suite}")
    meter = TokenMeter(model.compressor)
    try:
        preds = score_native(model, examples, cfg.eval.mode, cfg.eval.batch_size, progress) if examples else []
    finally:
        meter.close()
    correct: dict[str, list[bool]] = defaultdict(list)
    n_failed: dict[str, int] = defaultdict(int)
    for p in preds:
        correct[p["family"]].append(p["correct"])
    for f in failed_items:
        correct[f["family"]].append(False)
        n_failed[f["family"]] += 1
        preds.append({"id": f["id"], "family": f["family"], "pred": None, "answer": None, "correct": False,
                      "failed": f["reason"]})
    out_dir = eval_dir(cfg, run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "predictions.jsonl", "".join(json.dumps(p) + "\n" for p in preds))
    extra: dict[str, Any] = {"backend": "native", "mode": cfg.eval.mode, "split": cfg.eval.split,
                             "suite": suite_key(cfg), "outputs": str(out_dir.relative_to(run_dir)),
                             "n_failed": len(failed_items), "failed": failed_items,
                             "eval_time_s": time.time() - t0, "chance": 0.25}
    if meter.saliency:  # a training-free reducer: where its attention-like scores came from
        extra["saliency"] = saliency_label(meter.saliency, cfg.model.encoder.name)
    tokens: dict[str, Any] = {"visual_in": None, "llm_visual": None}
    if examples:
        T, P = examples[0].feats.shape[:2]
        tokens = {"visual_in": int(T * P), "llm_visual": int(model.count_visual_tokens(T, P)), **meter.summary()}
        extra.update(measure_costs(model, examples[0].feats.float(), examples[0].prompt))
        trace = taa_trace(model.compressor, examples[0].feats.float().to(model.device), examples[0].id)
        if trace is not None:
            extra["taa_trace"] = trace
    return {"metrics": accuracy_metrics(correct, n_failed), "tokens": tokens, "extra": extra}


def measure_costs(model: Any, feats: torch.Tensor, prompt: str, repeats: int = 5) -> dict[str, Any]:
    """Batch-1 inference costs of one video (T, P, D): ``compressor_ms``, ``ttft_ms`` (compress + project +
    prefill + first token), ``peak_mem_mb`` on a GPU, and ``oom`` (out of memory is a result, not a crash)."""
    dev = model.device
    cuda = dev.type == "cuda"
    x = feats.unsqueeze(0).to(dev)
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        with torch.no_grad():
            out = {"compressor_ms": median_ms(lambda: model.compressor(x), dev, repeats),
                   "ttft_ms": median_ms(lambda: model.generate(model.encode_videos([feats]), [prompt],
                                                               max_new_tokens=1), dev, repeats),
                   "oom": False}
        if cuda:
            out["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        return out
    except torch.OutOfMemoryError as e:
        if cuda:
            torch.cuda.empty_cache()
        return {"oom": True, "oom_reason": str(e)[:200]}


# ------------------------------------------------------------------------------------------ lmms-eval
def lmms_task_names(cfg: RunConfig) -> list[str]:
    """``eval.tasks`` as lmms-eval task names: ``mode: generate`` uses the ``mia_*_gen`` variants (real
    benchmarks are generation tasks already and keep their names)."""
    if cfg.eval.mode == "generate":
        return [f"{t}_gen" if t.startswith("mia_") and not t.endswith("_gen") else t for t in cfg.eval.tasks]
    return list(cfg.eval.tasks)


def plugin_model_args(cfg: RunConfig, run_dir: Path, out_dir: Path, checkpoint: Path | None = None) -> str:
    """``--model_args`` of the ``mambamia`` plugin: checkpoint, its weights hash (so lmms-eval's response
    cache never serves answers of an older checkpoint at the same path), where to write the plugin's
    stats, and ``eval.model_args``. An evaluation-only run scores ``checkpoint`` (its parent's) with its
    own compressor, written to ``<run>/compressor.json`` and passed as ``compressor=``."""
    ckpt = Path(checkpoint or run_dir)
    args = {"checkpoint": str(ckpt), "mode": cfg.eval.mode, "weights": weights_hash(ckpt),
            "output_dir": str(out_dir), **cfg.eval.model_args}
    if cfg.eval.parent:
        spec = Path(run_dir) / "compressor.json"
        atomic_write_text(spec, json.dumps(to_dict(cfg.model.compressor), indent=1))
        args["compressor"] = str(spec)
    for k, v in args.items():
        if "," in str(v) or "=" in str(v):
            raise ValueError(f"eval.model_args.{k}: {v!r} cannot go into lmms-eval's key=value,... model_args")
    return ",".join(f"{k}={v}" for k, v in args.items())


def lmms_eval_command(run_dir: Path, cfg: RunConfig, output_path: Path, model_args: str | None = None) -> list[str]:
    """The ``lmms-eval`` command line that scores ``run_dir`` on ``cfg.eval.tasks`` (``--log_samples``:
    the per-sample answers, prompts and token counts stay with the run)."""
    exe = Path(sys.executable).with_name("lmms-eval")
    margs = model_args or plugin_model_args(cfg, run_dir, output_path)
    cmd = [str(exe) if exe.exists() else "lmms-eval", "--model", "mambamia", "--model_args", margs,
           "--tasks", ",".join(lmms_task_names(cfg)), "--include_path", str(TASKS_DIR),
           "--batch_size", str(cfg.eval.batch_size), "--output_path", str(output_path), "--log_samples"]
    if cfg.eval.limit:
        cmd += ["--limit", str(cfg.eval.limit)]
    return cmd


def find_results_json(output_path: Path, since: float = 0.0) -> Path:
    """The newest ``*results*.json`` lmms-eval wrote under ``output_path`` (at or after ``since``, a
    ``time.time()``: a rerun never picks up the previous run's file)."""
    found = sorted((p for p in output_path.rglob("*results*.json") if p.stat().st_mtime >= since - 1),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"{output_path}: lmms-eval wrote no results JSON")
    return found[-1]


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def lmms_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """lmms-eval's results JSON -> one row per (task or group, metric, filter), lmms-eval's own numbers:
    ``{task, metric, filter, value, stderr, n, group, higher_is_better}``. ``group`` is the group the task
    belongs to (``group_subtasks``); a group's ``n`` is the sum over its leaf tasks."""
    res = results.get("results") or {}
    hib = results.get("higher_is_better") or {}
    n_samples = results.get("n-samples") or {}
    subtasks = results.get("group_subtasks") or {}
    parent = {t: g for g, subs in subtasks.items() for t in subs}

    def n_of(task: str) -> int:
        if task in subtasks and subtasks[task]:
            return sum(n_of(t) for t in subtasks[task])
        ns = n_samples.get(task) or {}
        return int(ns.get("effective") or (res.get(task) or {}).get("samples") or 0)

    rows = []
    for task, vals in res.items():
        for key, v in vals.items():
            metric, _, filt = key.partition(",")
            if metric in ("alias", "samples", "name") or "_stderr" in metric or _num(v) is None:
                continue  # <metric>_stderr, _stderr_clt, _stderr_clustered: lmms-eval's error estimates
            se = _num(vals.get(f"{metric}_stderr,{filt}"))
            rows.append({"task": task, "metric": metric, "filter": filt or "none", "value": float(v),
                         "stderr": se if se is not None else _num(vals.get(f"{metric}_stderr_clt,{filt}")),
                         "n": n_of(task),
                         "group": parent.get(task), "higher_is_better": (hib.get(task) or {}).get(metric)})
    return rows


def _mia_family(task: str) -> str | None:
    name = task[: -len("_gen")] if task.endswith("_gen") else task
    fam = name[4:] if name.startswith("mia_") else None
    return fam if fam in FAMILIES else None


def parse_lmms_results(results: dict[str, Any]) -> dict[str, tuple[float, int]]:
    """lmms-eval results JSON -> ``{family: (acc, n)}`` for every ``mia_<family>`` task in it."""
    out: dict[str, tuple[float, int]] = {}
    for r in lmms_rows(results):
        fam = _mia_family(r["task"])
        if fam and r["metric"] == "acc":
            out[fam] = (r["value"], r["n"])
    return out


def _samples(out_dir: Path, since: float) -> dict[str, Path]:
    """``{task: samples jsonl}`` lmms-eval wrote under ``out_dir`` for this evaluation (newest per task)."""
    found: dict[str, Path] = {}
    for p in sorted(out_dir.rglob("*_samples_*.jsonl"), key=lambda q: q.stat().st_mtime):
        if p.stat().st_mtime >= since - 1:
            found[p.stem.split("_samples_", 1)[1]] = p
    return found


def _sample_tokens(path: Path) -> tuple[float | None, int]:
    """Mean ``token_counts[0].input_tokens`` over a samples file's rows (None when none reports it)."""
    vals = []
    with open(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            for tc in json.loads(line).get("token_counts") or []:
                if isinstance(tc, dict) and isinstance(tc.get("input_tokens"), int):
                    vals.append(tc["input_tokens"])
                    break
    return (sum(vals) / len(vals) if vals else None), len(vals)


def _sample_correct(row: dict[str, Any], metric: str) -> bool | None:
    """Whether a ``--log_samples`` row counts as right under ``metric`` (number, bool, or the dicts the
    benchmarks' process_results return: ``score``, or a prediction compared with an answer)."""
    v = row.get(metric)
    if isinstance(v, (bool, int, float)):
        return bool(v)
    if isinstance(v, dict):
        if isinstance(v.get("score"), (bool, int, float)):
            return bool(v["score"])
        pred = next((v[k] for k in ("pred_answer", "parsed_pred", "pred") if k in v), None)
        ans = next((v[k] for k in ("answer", "ground_truth", "gt_answer") if k in v), None)
        if pred is not None and ans is not None:
            return str(pred).strip().lower() == str(ans).strip().lower()
    return None


def _failed_right(path: Path, metric: str, doc_ids: set[int]) -> int:
    """How many of ``doc_ids`` (failed videos) the benchmark's own parser still counted right: LongVideoBench,
    EgoSchema and NExT-QA answer an unparseable (here: empty) response with a random letter."""
    n = 0
    with open(path) as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                if row.get("doc_id") in doc_ids and _sample_correct(row, metric):
                    n += 1
    return n


def evaluate_lmms_eval(cfg: RunConfig, run_dir: Path, progress: bool = True, checkpoint: Path | None = None
                       ) -> dict[str, Any]:
    """Score ``cfg.eval.tasks`` with lmms-eval through the ``mambamia`` plugin. Every task's own metrics
    come back as lmms-eval computed them; ``mia_*`` families are regrouped as the native scorer groups them
    (``mia_long``, ``mia_dense``, ``mia_all``), which lmms-eval's size-weighted groups equal."""
    t0 = time.time()
    out_dir = eval_dir(cfg, run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.eval.split != "test":
        raise ValueError("eval.backend=lmms_eval scores each task's own evaluation split; use backend native "
                         f"for split {cfg.eval.split!r}")
    margs = plugin_model_args(cfg, run_dir, out_dir, checkpoint)
    env_suite = str(Path(cfg.data.suite).resolve())
    if cfg.eval.lmms_eval_launch == "cli":
        cmd = lmms_eval_command(run_dir, cfg, out_dir, margs)
        env = dict(os.environ)
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env["MIA_SUITE_DIR"] = env_suite
        proc = subprocess.run(cmd, env=env, capture_output=not progress, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or "")[-3000:] if not progress else ""
            raise RuntimeError(f"lmms-eval failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
        try:
            results_path = find_results_json(out_dir, since=t0)
        except FileNotFoundError as e:  # lmms-eval 0.7.3 exits 0 when a task fails to load (e.g. an import)
            tail = (proc.stderr or "")[-3000:] if not progress else "(its output is above)"
            raise RuntimeError(f"{e}: lmms-eval exited 0 without results: {' '.join(cmd)}\n{tail}") from e
        results = json.loads(results_path.read_text())
    else:
        from lmms_eval.evaluator import simple_evaluate
        from lmms_eval.tasks import TaskManager

        os.environ["MIA_SUITE_DIR"] = env_suite
        tm = TaskManager(include_path=str(TASKS_DIR))
        results = simple_evaluate(model="mambamia", model_args=margs, tasks=lmms_task_names(cfg),
                                  batch_size=cfg.eval.batch_size, limit=cfg.eval.limit or None,
                                  task_manager=tm, log_samples=True)
        if results is None:
            raise RuntimeError("lmms-eval returned no results (non-zero rank?)")
        results = json.loads(json.dumps(results, default=str))
        for task, rows in (results.pop("samples", None) or {}).items():
            atomic_write_text(out_dir / f"inprocess_samples_{task}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        results_path = out_dir / "inprocess_results.json"
        atomic_write_text(results_path, json.dumps(results, indent=2))
    stats_path = out_dir / "plugin_stats.json"  # written by the plugin (rank 0) during this evaluation
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() and stats_path.stat().st_mtime >= t0 - 1 else {}
    failed = list(stats.get("failed") or [])
    failed_by_task: dict[str, int] = defaultdict(int)
    for f in failed:
        failed_by_task[f["task"]] += 1
    rows = lmms_rows(results)
    if not rows:
        raise RuntimeError(f"{results_path}: lmms-eval results hold no metric: {list(results.get('results', {}))}")
    samples = _samples(out_dir, t0)
    subtasks = results.get("group_subtasks") or {}

    def leaves(task: str) -> list[str]:
        subs = subtasks.get(task) or []
        return [x for s in subs for x in leaves(s)] if subs else [task]

    metrics: list[dict[str, Any]] = []
    per_fam: dict[str, tuple[float, int]] = {}
    for r in rows:
        fam = _mia_family(r["task"])
        if fam is not None and r["metric"] == "acc":
            per_fam[fam] = (r["value"], r["n"])
        if r["task"].startswith("mia_"):
            continue  # regrouped below, as the native scorer does
        r["n_failed"] = sum(failed_by_task.get(t, 0) for t in leaves(r["task"]))
        if r["n_failed"]:  # a failed video gets an empty answer; some benchmarks' parsers then guess
            r["n_failed_right"] = sum(
                _failed_right(samples[t], r["metric"], {f["doc_id"] for f in failed if f["task"] == t})
                for t in leaves(r["task"]) if t in samples and failed_by_task.get(t))
        tok = [_sample_tokens(samples[t]) for t in leaves(r["task"]) if t in samples]
        tok = [(m, n) for m, n in tok if m is not None]
        r["input_tokens"] = sum(m * n for m, n in tok) / sum(n for _, n in tok) if tok else None
        metrics.append(r)
    if per_fam:
        correct = {f: [True] * round(a * n) + [False] * (n - round(a * n)) for f, (a, n) in per_fam.items()}
        fam_failed = defaultdict(int)
        for t, k in failed_by_task.items():
            if _mia_family(t):
                fam_failed[_mia_family(t)] += k
        metrics = accuracy_metrics(correct, fam_failed) + metrics
    all_tok = [_sample_tokens(p) for p in samples.values()]
    all_tok = [(m, n) for m, n in all_tok if m is not None]
    tokens = {"visual_in": stats.get("visual_in"), "llm_visual": stats.get("llm_visual"),
              **{k: stats[k] for k in ("llm_visual_min", "llm_visual_max", "n_videos") if k in stats},
              "llm_input_mean": (sum(m * n for m, n in all_tok) / sum(n for _, n in all_tok)) if all_tok else None}
    rel = lambda p: str(Path(p).relative_to(run_dir)) if Path(p).is_relative_to(run_dir) else str(p)  # noqa: E731
    extra = {"backend": "lmms_eval", "launch": cfg.eval.lmms_eval_launch, "mode": cfg.eval.mode,
             "suite": suite_key(cfg), "outputs": rel(out_dir), "results_json": rel(results_path),
             "samples": {t: rel(p) for t, p in samples.items()}, "eval_time_s": time.time() - t0,
             "n_failed": len(failed), "failed": failed, "model_args": stats.get("model_args") or margs,
             "prompts": stats.get("prompts") or {}, "unk_tokens": stats.get("unk_tokens") or {},
             "lmms_eval_version": results.get("lmms_eval_version")}
    if stats.get("saliency"):  # a training-free reducer: where its attention-like scores came from
        extra["saliency"] = saliency_label(set(stats["saliency"]), cfg.model.encoder.name)
    if per_fam:
        extra["chance"] = 0.25
    return {"metrics": metrics, "tokens": tokens, "extra": extra}


# ------------------------------------------------------------------------------------------ API / CLI
def evaluate_run(cfg: RunConfig, run_dir: str | Path, progress: bool = True, checkpoint: str | Path | None = None
                 ) -> dict[str, Any]:
    """Score the model trained into ``run_dir`` (or ``checkpoint``: an evaluation-only run's parent) with
    ``cfg.eval`` (see the module docstring); the result is also written to
    ``<run>/eval/<backend>/<suite_key>/result.json``."""
    run_dir = Path(run_dir)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None:
        checkpoint_config(ckpt)  # FileNotFoundError naming the folder when the parent wrote no model
    if cfg.eval.backend == "native":
        res = evaluate_native(cfg, run_dir, progress=progress, checkpoint=ckpt)
    else:
        res = evaluate_lmms_eval(cfg, run_dir, progress=progress, checkpoint=ckpt)
    res.setdefault("extra", {}).update(compressor_facts(cfg.model.compressor))
    atomic_write_text(eval_dir(cfg, run_dir) / "result.json", json.dumps(res, indent=2))
    return res


def format_metrics(res: dict[str, Any]) -> str:
    """A small text table of the metric rows."""
    lines = [f"{'task':<24} {'metric':<28} {'value':>9} {'n':>6} {'failed':>6} {'tokens':>7}"]
    for m in res["metrics"]:
        tok = m.get("input_tokens")
        lines.append(f"{m['task']:<24} {m['metric']:<28} {m['value']:>9.3f} {m['n']:>6} {m.get('n_failed', 0):>6} "
                     f"{'' if tok is None else f'{tok:.0f}':>7}")
    t = res.get("tokens", {})
    lines.append(f"visual tokens: {t.get('visual_in')} encoder -> {t.get('llm_visual')} LLM "
                 f"| backend {res['extra'].get('backend')} ({res['extra'].get('mode')}), "
                 f"failed videos: {res['extra'].get('n_failed')}")
    for f in res["extra"].get("failed") or []:
        lines.append(f"  failed: {f.get('task') or f.get('family')} {f.get('doc_id', f.get('id'))}: {f['reason']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.evaluate",
        description="Score a run trained by harness.train on the synthetic suite (native or lmms-eval) or on "
                    "real lmms-eval benchmarks (eval.backend=lmms_eval).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m harness.evaluate results/runs/tiny_bi_ssm\n"
               "  python -m harness.evaluate results/runs/tiny_bi_ssm eval.backend=lmms_eval\n"
               "  python -m harness.evaluate results/runs/tiny_bi_ssm eval.mode=generate eval.limit=20\n"
               "  HF_HOME=results/minibench python -m harness.evaluate results/runs/tiny_bi_ssm \\\n"
               "      eval.backend=lmms_eval 'eval.tasks=[videomme,mlvu_dev]' eval.model_args.max_frames_num=8",
    )
    ap.add_argument("run_dir", help="a run directory written by harness.train")
    ap.add_argument("overrides", nargs="*", help="key.path=value overrides of the run's config (eval.*, data.*)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_intermixed_args(argv)  # overrides may follow options
    if args.threads:
        torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        print(f"error: {cfg_path}: missing; is {run_dir} a run directory of harness.train?", file=sys.stderr)
        return 2
    try:
        data = apply_overrides(read_config_document(json.loads(cfg_path.read_text())), args.overrides)
        cfg = build(RunConfig, data)
    except ConfigError as e:
        err = blame(e, args.overrides)
        print(f"error: {err if err is not e else e.with_source(str(cfg_path))}", file=sys.stderr)
        return 2
    res = evaluate_run(cfg, run_dir, progress=not args.no_progress)
    print(format_metrics(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
