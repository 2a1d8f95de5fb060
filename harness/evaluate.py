"""Score one trained run on the synthetic suite: ``python -m harness.evaluate RUN_DIR``.

Two backends give the same numbers on the same checkpoint and items:

* ``native``: in-process; every test item's four option letters are scored by log-likelihood after the
  prompt (or, with ``eval.mode: generate``, the model generates and the first option letter counts).
* ``lmms_eval``: lmms-eval itself on the ``tasks/`` YAMLs through the ``mambamia`` plugin
  (:mod:`harness.lmms_plugin`), either as the real ``lmms-eval`` CLI in a subprocess
  (``eval.lmms_eval_launch: cli``) or through its Python evaluator (``inprocess``).

:func:`evaluate_run` returns ``{"metrics": [{"task", "metric", "value", "n"}], "tokens": {...},
"extra": {...}}``: accuracy per family task (``mia_<family>``), per group (``mia_long``,
``mia_dense``) and overall (``mia_all``); ``n`` is the number of scored items. Items whose video
failed to decode are counted in ``extra.n_failed`` and left out.
"""

from __future__ import annotations

import argparse
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

from harness.config import RunConfig
from harness.store import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parent.parent
TASKS_DIR = REPO_ROOT / "tasks"
PROMPT_SUFFIX = "Answer with the option's letter from the given choices directly."


def format_prompt(item: dict[str, Any]) -> str:
    """The prompt of a multiple-choice item (training, native scoring and the mia lmms-eval tasks):
    ``<video>`` placeholder, question, lettered options, instruction; the answer follows as " A"."""
    from harness.data import synthetic

    fmt = getattr(synthetic, "format_prompt", None)  # the suite's own formatter, when it has one
    if fmt is not None:
        return fmt(item)
    letters = "ABCDEFGH"
    opts = "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(item["options"]))
    return f"<video>\n{item['question']}\n{opts}\n{PROMPT_SUFFIX}"


def task_families(tasks: Sequence[str]) -> list[str]:
    """Families covered by lmms-eval task/group names: ``mia_long`` / ``mia_dense`` (groups),
    ``mia_<family>``, ``mia_all``. Unknown names raise ValueError listing the known ones."""
    from harness.data.synthetic import FAMILIES, GROUPS

    fams: list[str] = []
    for t in tasks:
        t = t[: -len("_gen")] if t.endswith("_gen") else t
        name = t[4:] if t.startswith("mia_") else t
        if name == "all":
            new = list(FAMILIES)
        elif name in GROUPS:
            new = GROUPS[name]
        elif name in FAMILIES:
            new = [name]
        else:
            known = ["mia_all"] + [f"mia_{g}" for g in GROUPS] + [f"mia_{f}" for f in FAMILIES]
            raise ValueError(f"eval.tasks: unknown task {t!r}; known: {', '.join(known)}")
        fams += [f for f in new if f not in fams]
    return fams


def accuracy_metrics(correct: dict[str, list[bool]]) -> list[dict[str, Any]]:
    """Per-family results ``{family: [correct?...]}`` -> metric rows per family, group and overall."""
    from harness.data.synthetic import FAMILIES

    rows = []
    for fam in sorted(correct):
        c = correct[fam]
        rows.append({"task": f"mia_{fam}", "metric": "acc", "value": sum(c) / len(c) if c else float("nan"),
                     "n": len(c)})
    groups: dict[str, list[bool]] = defaultdict(list)
    for fam, c in correct.items():
        groups[FAMILIES[fam]] += c
    for g in sorted(groups):
        c = groups[g]
        rows.append({"task": f"mia_{g}", "metric": "acc", "value": sum(c) / len(c) if c else float("nan"),
                     "n": len(c)})
    allc = [x for c in correct.values() for x in c]
    rows.append({"task": "mia_all", "metric": "acc", "value": sum(allc) / len(allc) if allc else float("nan"),
                 "n": len(allc)})
    return rows


def _limit_per_family(examples: list, limit: int) -> list:
    if not limit:
        return examples
    seen: dict[str, int] = defaultdict(int)
    out = []
    for e in examples:
        if seen[e.family] < limit:
            seen[e.family] += 1
            out.append(e)
    return out


# ------------------------------------------------------------------------------------------ native
@torch.no_grad()
def score_native(model: Any, examples: list, mode: str = "loglik", batch_size: int = 16,
                 progress: bool = True) -> list[dict[str, Any]]:
    """Predictions for ``examples`` (harness.train.Example): ``[{id, family, pred, answer, correct}]``."""
    from tqdm import tqdm

    from harness.model.lmm import LETTERS, parse_letter

    model.eval()
    out = []
    for i in tqdm(range(0, len(examples), batch_size), desc=f"score ({mode})", disable=not progress,
                  unit="batch"):
        batch = examples[i: i + batch_size]
        vis = model.encode_videos([e.feats.float() for e in batch])
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


def evaluate_native(cfg: RunConfig, run_dir: Path, model: Any | None = None, progress: bool = True
                    ) -> dict[str, Any]:
    from harness.train import load_examples, load_model

    t0 = time.time()
    if model is None:
        model, _ = load_model(run_dir, "cuda" if torch.cuda.is_available() else "cpu")
    fams = set(task_families(cfg.eval.tasks))
    examples, failed = load_examples(cfg, cfg.eval.split, progress=progress)
    examples = _limit_per_family([e for e in examples if e.family in fams], cfg.eval.limit)
    if not examples:
        raise ValueError(f"no {cfg.eval.split} items for tasks {cfg.eval.tasks} in {cfg.data.suite}")
    preds = score_native(model, examples, cfg.eval.mode, cfg.eval.batch_size, progress)
    correct: dict[str, list[bool]] = defaultdict(list)
    for p in preds:
        correct[p["family"]].append(p["correct"])
    out_dir = run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"native_{cfg.eval.mode}_predictions.jsonl", "w") as fh:
        fh.writelines(json.dumps(p) + "\n" for p in preds)
    T, P = examples[0].feats.shape[:2]
    extra = {"backend": "native", "mode": cfg.eval.mode, "split": cfg.eval.split,
             "n_failed": len(failed), "failed": dict(list(failed.items())[:20]),
             "eval_time_s": time.time() - t0, "chance": 0.25}
    extra.update(measure_costs(model, examples[0].feats.float(), examples[0].prompt))
    from harness.model.taa import taa_trace

    trace = taa_trace(model.compressor, examples[0].feats.float().to(model.device), examples[0].id)
    if trace is not None:
        extra["taa_trace"] = trace
    return {"metrics": accuracy_metrics(correct),
            "tokens": {"visual_in": int(T * P), "llm_visual": int(model.count_visual_tokens(T, P))},
            "extra": extra}


def measure_costs(model: Any, feats: torch.Tensor, prompt: str, repeats: int = 5) -> dict[str, Any]:
    """Batch-1 inference costs of one video (T, P, D): ``compressor_ms``, ``ttft_ms`` (compress + project +
    prefill + first token), ``peak_mem_mb`` on a GPU, and ``oom`` (out of memory is a result, not a crash)."""
    dev = model.device
    cuda = dev.type == "cuda"

    def timed(fn) -> float:
        fn()
        if cuda:
            torch.cuda.synchronize(dev)
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize(dev)
            ts.append(1e3 * (time.perf_counter() - t))
        return sorted(ts)[len(ts) // 2]

    x = feats.unsqueeze(0).to(dev)
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        with torch.no_grad():
            out = {"compressor_ms": timed(lambda: model.compressor(x)),
                   "ttft_ms": timed(lambda: model.generate(model.encode_videos([feats]), [prompt], max_new_tokens=1)),
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
    """``eval.tasks`` as lmms-eval task names: ``mode: generate`` uses the ``*_gen`` variants."""
    if cfg.eval.mode == "generate":
        return [t if t.endswith("_gen") else f"{t}_gen" for t in cfg.eval.tasks]
    return list(cfg.eval.tasks)


def lmms_eval_command(run_dir: Path, cfg: RunConfig, output_path: Path) -> list[str]:
    """The ``lmms-eval`` command line that scores ``run_dir`` on ``cfg.eval.tasks``."""
    exe = Path(sys.executable).with_name("lmms-eval")
    margs = f"checkpoint={run_dir},mode={cfg.eval.mode}"
    cmd = [str(exe) if exe.exists() else "lmms-eval", "--model", "mambamia", "--model_args", margs,
           "--tasks", ",".join(lmms_task_names(cfg)), "--include_path", str(TASKS_DIR),
           "--batch_size", str(cfg.eval.batch_size), "--output_path", str(output_path)]
    if cfg.eval.limit:
        cmd += ["--limit", str(cfg.eval.limit)]
    return cmd


def find_results_json(output_path: Path) -> Path:
    """The newest ``*results*.json`` lmms-eval wrote under ``output_path``."""
    found = sorted(output_path.rglob("*results*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"{output_path}: lmms-eval wrote no results JSON")
    return found[-1]


def parse_lmms_results(results: dict[str, Any]) -> dict[str, list[bool] | tuple[float, int]]:
    """lmms-eval results JSON -> ``{family: (acc, n)}`` for every ``mia_<family>`` task in it."""
    from harness.data.synthetic import FAMILIES

    out: dict[str, Any] = {}
    n_samples = results.get("n-samples", {})
    for task, res in results.get("results", {}).items():
        name = task[: -len("_gen")] if task.endswith("_gen") else task
        fam = name[4:] if name.startswith("mia_") else None
        if fam not in FAMILIES:
            continue
        acc = next((v for k, v in res.items() if k.split(",")[0] == "acc" and isinstance(v, (int, float))), None)
        if acc is None:
            continue
        n = n_samples.get(task, {}).get("effective") or res.get("samples") or 0
        out[fam] = (float(acc), int(n))
    return out


def evaluate_lmms_eval(cfg: RunConfig, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    t0 = time.time()
    output_path = run_dir / "eval" / "lmms_eval"
    output_path.mkdir(parents=True, exist_ok=True)
    if cfg.eval.split != "test":
        raise ValueError("eval.backend=lmms_eval scores the tasks' test split; use backend native for "
                         f"split {cfg.eval.split!r}")
    if cfg.eval.lmms_eval_launch == "cli":
        cmd = lmms_eval_command(run_dir, cfg, output_path)
        env = dict(os.environ)
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env["MIA_SUITE_DIR"] = str(Path(cfg.data.suite).resolve())
        proc = subprocess.run(cmd, env=env, capture_output=not progress, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or "")[-3000:] if not progress else ""
            raise RuntimeError(f"lmms-eval failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
        results = json.loads(find_results_json(output_path).read_text())
    else:
        from lmms_eval.evaluator import simple_evaluate
        from lmms_eval.tasks import TaskManager

        os.environ["MIA_SUITE_DIR"] = str(Path(cfg.data.suite).resolve())

        tm = TaskManager(include_path=str(TASKS_DIR))
        results = simple_evaluate(
            model="mambamia",
            model_args=f"checkpoint={run_dir},mode={cfg.eval.mode}",
            tasks=lmms_task_names(cfg), batch_size=cfg.eval.batch_size, limit=cfg.eval.limit or None,
            task_manager=tm, log_samples=False)
        if results is None:
            raise RuntimeError("lmms-eval returned no results (non-zero rank?)")
        results = json.loads(json.dumps(results, default=str))
        atomic_write_text(output_path / "inprocess_results.json", json.dumps(results, indent=2))
    per_fam = parse_lmms_results(results)
    if not per_fam:
        raise RuntimeError(f"lmms-eval results hold no mia_<family> accuracy: {list(results.get('results', {}))}")
    correct = {f: [True] * round(a * n) + [False] * (n - round(a * n)) for f, (a, n) in per_fam.items()}
    stats_path = run_dir / "eval" / "lmms_eval_plugin_stats.json"  # written by the plugin (rank 0)
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    return {"metrics": accuracy_metrics(correct),
            "tokens": {"visual_in": stats.get("visual_in"), "llm_visual": stats.get("llm_visual")},
            "extra": {"backend": "lmms_eval", "launch": cfg.eval.lmms_eval_launch, "mode": cfg.eval.mode,
                      "eval_time_s": time.time() - t0, "chance": 0.25, "n_failed": stats.get("n_failed", 0),
                      "failed": stats.get("failed", {}), "lmms_eval_version": results.get("lmms_eval_version")}}


# ------------------------------------------------------------------------------------------ API / CLI
def evaluate_run(cfg: RunConfig, run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Score the model trained into ``run_dir`` with ``cfg.eval`` (see the module docstring)."""
    run_dir = Path(run_dir)
    if cfg.eval.backend == "native":
        res = evaluate_native(cfg, run_dir, progress=progress)
    else:
        res = evaluate_lmms_eval(cfg, run_dir, progress=progress)
    out = run_dir / "eval" / f"{cfg.eval.backend}_{cfg.eval.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(res, indent=2))
    return res


def format_metrics(res: dict[str, Any]) -> str:
    """A small text table of the metric rows."""
    lines = [f"{'task':<18} {'acc':>7} {'n':>6}"]
    for m in res["metrics"]:
        lines.append(f"{m['task']:<18} {m['value']:>7.3f} {m['n']:>6}")
    t = res.get("tokens", {})
    lines.append(f"visual tokens: {t.get('visual_in')} encoder -> {t.get('llm_visual')} LLM "
                 f"| backend {res['extra'].get('backend')} ({res['extra'].get('mode')}), "
                 f"failed videos: {res['extra'].get('n_failed')}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from harness.config import ConfigError, build
    from harness.identity import read_config_document
    from harness.overrides import apply_overrides, blame

    ap = argparse.ArgumentParser(
        prog="python -m harness.evaluate",
        description="Score a run trained by harness.train on the synthetic suite.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m harness.evaluate results/runs/tiny_bi_ssm\n"
               "  python -m harness.evaluate results/runs/tiny_bi_ssm eval.backend=lmms_eval\n"
               "  python -m harness.evaluate results/runs/tiny_bi_ssm eval.mode=generate eval.limit=20",
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
