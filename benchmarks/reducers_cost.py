"""Cost of every registered compressor per video: the training-free reducers beside the trained compressors,
at a matched token budget, and (on a GPU) the LLM prefill time that the removed tokens would have cost.

    python benchmarks/reducers_cost.py                  # CPU, the default study's shape (8 x 64 x 64, 32 tokens)
    python benchmarks/reducers_cost.py --gpu            # GPU, 64 frames x 729 patches x 1152 channels, budget
                                                        # 10 %, beside a Qwen2-7B-shaped prefill (random weights)

For each compressor: the median forward time of one video (batch 1; torch.no_grad; the reducer's rule plus
its token-wise maps, the trained compressors' whole forward) and of a batch. On ``--gpu`` it also times one
prefill of a 7B-shaped LLM (Qwen2-7B's widths, ``--llm-layers`` of its 28 layers, bf16, SDPA attention,
random weights; the time is scaled to 28 layers and the per-layer time is reported too) over the
uncompressed visual tokens and over the budget, so a reducer's own cost reads against the prefill it saves.
The alternatives are measured in the same run. Prints a table and writes
results/benchmarks/reducers_cost_{cpu,gpu}.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, timeit, write_json  # noqa: E402

from harness.model.registry import COMPRESSORS, build_compressor, build_config, compressor_names  # noqa: E402

TRAINED = {  # the trained designs of ablations/reducers.yaml, with the token-budget knob left to meet_budget
    "bi_ssm": {"name": "mambamia_v2", "n_heads": 1, "spatial": {"n_layers": 1}, "ssm": {"version": 1}},
    "transformer": {"name": "self_attention", "n_heads": 1, "spatial": {"n_layers": 1}},
    "mean_pool": {"name": "mambamia", "block": "identity", "pooling": "mean", "spatial": {"n_layers": 0}},
}


def variants(widths: dict[str, int], gpu: bool) -> dict[str, dict[str, Any]]:
    out = {}
    for name, cfg in TRAINED.items():
        cfg = {**cfg, **widths}
        if gpu and name == "bi_ssm":
            cfg["ssm"] = {"version": 2}  # Mamba-2 (mamba-ssm's SSD kernel) where it is installed
        out[name] = cfg
    for name in compressor_names():
        if COMPRESSORS[name].training_free:
            out[name] = {"name": name, **widths}
    return out


def prefill_ms(n_tokens: int, layers: int, device: str, repeat: int) -> float | None:
    """One prefill of ``n_tokens`` through ``layers`` Qwen2-7B-shaped decoder layers (bf16, random weights)."""
    try:
        from transformers import Qwen2Config, Qwen2Model
    except ImportError:
        return None
    cfg = Qwen2Config(hidden_size=3584, intermediate_size=18944, num_hidden_layers=layers, num_attention_heads=28,
                      num_key_value_heads=4, vocab_size=1024, max_position_embeddings=max(32768, n_tokens + 8),
                      attn_implementation="sdpa")
    model = Qwen2Model(cfg).to(device, torch.bfloat16).eval()
    x = torch.randn(1, n_tokens, 3584, device=device, dtype=torch.bfloat16)
    with torch.no_grad():
        ms = timeit(lambda m=model, e=x: m(inputs_embeds=e, use_cache=False), repeat=repeat, warmup=1,
                    sync=device == "cuda") * 1000
    model = x = None
    if device == "cuda":
        torch.cuda.empty_cache()
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="the paper's shape on CUDA (default: the CPU study's)")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--patches", type=int, default=None)
    ap.add_argument("--dim", type=int, default=None)
    ap.add_argument("--budget", type=int, default=None, help="tokens per video (default: 1/16 CPU, ~10 %% GPU)")
    ap.add_argument("--batch", type=int, default=None, help="videos per batched call (default 16 CPU, 4 GPU)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--llm-layers", type=int, default=4, help="decoder layers timed (scaled to 28), --gpu")
    ap.add_argument("--out", default="results/benchmarks", help="folder for the JSON")
    a = ap.parse_args()
    device = "cuda" if a.gpu else "cpu"
    if a.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu: no CUDA device")
    T = a.frames or (64 if a.gpu else 8)
    P = a.patches or (729 if a.gpu else 64)
    D = a.dim or (1152 if a.gpu else 64)
    B = a.budget or (T * 73 if a.gpu else T * P // 16)  # GPU: 73 of 729 per frame, 10 %
    batch = a.batch or (4 if a.gpu else 16)
    widths = {"d_in": D, "d_model": 1024 if a.gpu else 32, "d_out": 1024 if a.gpu else 32}
    g = torch.Generator(device="cpu").manual_seed(0)
    feats = torch.randn(batch, T, P, D, generator=g).to(device)
    rows: list[dict[str, Any]] = []
    for name, spec in variants(widths, a.gpu).items():
        try:
            cfg = build_config(spec).meet_budget(B, T, P, "period")
        except Exception as e:  # noqa: BLE001 - a design that cannot meet this budget is a row that says why
            rows.append({"compressor": name, "error": f"{type(e).__name__}: {e}"[:200]})
            continue
        try:
            model = build_compressor(cfg).to(device).eval()
            with torch.no_grad():
                one = timeit(lambda m=model: m(feats[:1]), repeat=a.repeat, warmup=2, sync=a.gpu) * 1000
                many = timeit(lambda m=model: m(feats), repeat=a.repeat, warmup=1, sync=a.gpu) * 1000
                n = model(feats[:1]).n_tokens
        except Exception as e:  # noqa: BLE001 - e.g. out of memory: recorded, the others still run
            rows.append({"compressor": name, "error": f"{type(e).__name__}: {e}"[:200]})
            continue
        kind = "training-free" if COMPRESSORS[cfg.name].training_free else "trained"
        rows.append({"compressor": name, "kind": kind, "tokens": n, "ms_per_video": round(one, 3),
                     f"ms_batch{batch}": round(many, 3), "ms_per_video_batched": round(many / batch, 3)})
        print(f"  {name:<14} {kind:<14} {n:>6} tokens  {one:9.3f} ms/video  {many / batch:9.3f} ms/video batched",
              flush=True)
        del model
    payload: dict[str, Any] = {"machine": machine(), "device": device, "shape": {"T": T, "P": P, "D": D},
                               "budget": B, "batch": batch, "rows": rows}
    if a.gpu:
        full = prefill_ms(T * P, a.llm_layers, device, a.repeat)
        cut = prefill_ms(B, a.llm_layers, device, a.repeat)
        if full is not None and cut is not None:
            scale = 28 / a.llm_layers
            payload["llm_prefill"] = {"shape": "Qwen2-7B (3584 wide, 28 heads, 4 KV heads), bf16, SDPA",
                                      "layers_timed": a.llm_layers, "tokens_full": T * P, "tokens_budget": B,
                                      "ms_full_28_layers": round(full * scale, 2),
                                      "ms_budget_28_layers": round(cut * scale, 2),
                                      "ms_saved_28_layers": round((full - cut) * scale, 2)}
            print(f"  LLM prefill (7B shape, scaled from {a.llm_layers} layers): {T * P} tokens {full * scale:.1f} ms, "
                  f"{B} tokens {cut * scale:.1f} ms: the budget saves {(full - cut) * scale:.1f} ms per video")
    print_table(rows, ["compressor", "kind", "tokens", "ms_per_video", "ms_per_video_batched", "error"])
    write_json(f"reducers_cost_{device}", payload, Path(a.out))


if __name__ == "__main__":
    main()
