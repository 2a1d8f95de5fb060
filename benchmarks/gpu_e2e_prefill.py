"""Time to first token of a 7B-shaped LLM fed uncompressed vs compressed video tokens, in one run.

The LLM is Qwen2-7B-shaped (hidden 3584, 28 layers, 28 heads, 4 KV heads, intermediate 18944, vocabulary
152064) with random bf16 weights built from a config (nothing is downloaded), SDPA attention. A "video" is
T frames of SigLIP-like features (729 patches x 1152). Pipelines, all bf16 on one GPU:

    vanilla     features -> 2-layer GELU projector (1152 -> 3584) -> LLM   (T * 729 visual tokens)
    bi_ssm      features -> compressor (bi-Mamba-1 on mamba-ssm, D=1152, a query every 27 patches: 27 tokens
                per frame, weighted pooling) -> projector -> LLM           (T * 27 visual tokens)
    transformer the same compressor with a Transformer block (SDPA, 16 heads)

plus 64 text tokens after the video. Time to first token = compressor + projector + prefill (KV cache
built, logits of the last position only) + argmax, between CUDA events, median of ``--repeat`` after a
warm-up. Peak memory is the maximum allocated during one call (weights included). An out-of-memory is
recorded as a result.

    python benchmarks/gpu_e2e_prefill.py                      # 32, 64, 128 frames
    python benchmarks/gpu_e2e_prefill.py --frames 32 --layers 4   # a quick look with a shallower LLM

Writes results/benchmarks/gpu_e2e_prefill.json. Target (issue 8): >= 10x lower time to first token at 64
frames with compression, compressor time included.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402

from harness.model.registry import build_compressor  # noqa: E402

D_ENC, PATCHES, PERIOD, N_TEXT = 1152, 729, 27, 64


def build_llm(layers: int) -> nn.Module:
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(hidden_size=3584, num_hidden_layers=layers, num_attention_heads=28, num_key_value_heads=4,
                      intermediate_size=18944, vocab_size=152064, max_position_embeddings=262144,
                      rope_theta=1e6, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    with torch.device("cuda"):
        try:
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
        except TypeError:  # transformers < 4.56 spells it torch_dtype
            model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16, attn_implementation="sdpa")
    return model.eval()


def projector(d_out: int = 3584) -> nn.Module:
    return nn.Sequential(nn.Linear(D_ENC, d_out), nn.GELU(), nn.Linear(d_out, d_out)).cuda().to(torch.bfloat16)


def compressor(block: str) -> nn.Module:
    torch.manual_seed(0)
    return build_compressor({"d_in": D_ENC, "d_model": D_ENC, "d_out": D_ENC, "block": block, "n_heads": 16,
                             "pooling": "weighted", "spatial": {"period": PERIOD, "n_layers": 1}}
                            ).cuda().to(torch.bfloat16).eval()


def ttft(llm: nn.Module, proj: nn.Module, comp: nn.Module | None, feats: torch.Tensor,
         text: torch.Tensor) -> tuple[torch.Tensor, int]:
    """One time-to-first-token pass. feats: (1, T, P, 1152) bf16; text: (1, N_TEXT, 3584). Returns the
    first token id (1,) and the number of visual tokens."""
    vis = comp(feats).tokens if comp is not None else feats.flatten(1, 2)  # (1, N, 1152)
    emb = torch.cat([proj(vis), text], dim=1)
    out = llm(inputs_embeds=emb, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].argmax(-1), vis.shape[1]


def measure(llm, proj, comp, T: int, repeat: int) -> dict[str, Any]:
    g = torch.Generator(device="cuda").manual_seed(T)
    feats = torch.randn(1, T, PATCHES, D_ENC, generator=g, device="cuda").to(torch.bfloat16)
    text = torch.randn(1, N_TEXT, 3584, generator=g, device="cuda").to(torch.bfloat16) * 0.02
    row: dict[str, Any] = {}
    try:
        with torch.inference_mode():
            _, n = ttft(llm, proj, comp, feats, text)  # warm-up
            row["visual_tokens"] = n
            row["llm_tokens"] = n + N_TEXT
            times, comp_times = [], []
            for _ in range(repeat):
                ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
                ev[0].record()
                if comp is not None:
                    comp(feats)
                ev[1].record()
                ttft(llm, proj, comp, feats, text)
                ev[2].record()
                ev[2].synchronize()
                comp_times.append(ev[0].elapsed_time(ev[1]))
                times.append(ev[1].elapsed_time(ev[2]))
            row["ttft_ms"] = statistics.median(times)
            if comp is not None:
                row["compressor_ms"] = statistics.median(comp_times)
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            ttft(llm, proj, comp, feats, text)
            torch.cuda.synchronize()
            row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    except torch.OutOfMemoryError:
        row["error"] = "OOM"
        row.setdefault("visual_tokens", T * PATCHES if comp is None else T * PATCHES // PERIOD)
    del feats, text
    torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--layers", type=int, default=28, help="LLM layers (28 = Qwen2-7B)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pipelines", nargs="+", default=["vanilla", "bi_ssm", "transformer"],
                    choices=["vanilla", "bi_ssm", "transformer"])
    ap.add_argument("--out", default="results/benchmarks", help="folder for the JSON")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_e2e_prefill.py: no CUDA device")
    info = machine()
    print(f"machine: {info}")
    llm = build_llm(args.layers)
    weights_gib = sum(p.numel() * p.element_size() for p in llm.parameters()) / 2**30
    print(f"LLM: {sum(p.numel() for p in llm.parameters()) / 1e9:.2f}B params, {weights_gib:.1f} GiB")
    proj = projector()
    comps = {"vanilla": None, **{b: compressor(b) for b in ("bi_ssm", "transformer") if b in args.pipelines}}
    rows = []
    for T in args.frames:
        for p in args.pipelines:
            r = {"pipeline": p, "frames": T, **measure(llm, proj, comps[p], T, args.repeat)}
            rows.append(r)
            print(f"  {p:12s} T={T:4d}: {r}", flush=True)
    ratios = []
    by = {(r["pipeline"], r["frames"]): r for r in rows}
    for T in args.frames:
        v = by.get(("vanilla", T))
        for p in ("bi_ssm", "transformer"):
            c = by.get((p, T))
            if not c or "ttft_ms" not in c:
                continue
            entry = {"pipeline": p, "frames": T, "compressed_ttft_ms": c["ttft_ms"]}
            if v and "ttft_ms" in v:
                entry.update(vanilla_ttft_ms=v["ttft_ms"], ttft_x=v["ttft_ms"] / c["ttft_ms"],
                             mem_x=v["peak_gib"] / c["peak_gib"])
            else:
                entry["vanilla"] = v.get("error") if v else "not run"
            ratios.append(entry)
    print("\n## Time to first token, Qwen2-7B-shaped LLM (random bf16 weights), batch 1")
    print_table(rows, ["pipeline", "frames", "visual_tokens", "compressor_ms", "ttft_ms", "peak_gib", "error"])
    print("\n## Vanilla / compressed")
    print_table(ratios, ["pipeline", "frames", "vanilla_ttft_ms", "compressed_ttft_ms", "ttft_x", "mem_x", "vanilla"])
    at64 = next((r.get("ttft_x") for r in ratios if r["pipeline"] == "bi_ssm" and r["frames"] == 64), None)
    target = {"bi_ssm_ttft_x_at_64": at64, "target_x": 10.0}
    print(f"target: {target}")
    write_json("gpu_e2e_prefill", {
        "machine": info,
        "llm": {"shape": "Qwen2-7B", "layers": args.layers, "weights_gib": weights_gib,
                                 "attn": "sdpa", "dtype": "bfloat16", "text_tokens": N_TEXT},
        "compressor": {"d_model": D_ENC, "period": PERIOD, "tokens_per_frame": PATCHES // PERIOD,
                       "n_layers": 1, "pooling": "weighted", "dtype": "bfloat16"},
        "rows": rows, "ratios": ratios, "target": target}, Path(args.out))


if __name__ == "__main__":
    main()
