"""Three ceilings per family on the *uncompressed* features: chance, a linear read-out, the learned probe.

    python -m harness.probe.ceilings CONFIG [key=value ...] [--seeds 0 1 2] [--out results/probe/ceilings.json]

* chance: 1 / 4 (answers are balanced per family);
* linear: multinomial logistic regression (L2, LBFGS) on every family's train features flattened
  (T x P x D, standardised with train statistics), scored on ``eval.split``;
* learned: the probe protocol with ``model.compressor.enabled=false`` (every patch token reaches the
  read-out), one run per seed.

A family belongs in a default study only if the learned ceiling is well above chance: what a compressor
cannot beat uncompressed, it cannot show. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.config import RunConfig, config_hash
from harness.probe.data import load_probe_items
from harness.probe.run import fit, probe_families, score
from harness.train import load_run_config


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression (n, F) -> 4 classes, L2 ``l2``; returns (w (F, 4), b (4,))."""
    w = torch.zeros(x.shape[1], 4, requires_grad=True)
    b = torch.zeros(4, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + l2 * w.square().sum() / len(y)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def linear_ceiling(cfg: RunConfig, families: list[str], l2: float = 1e-2, iters: int = 200) -> dict[str, float]:
    """Test accuracy per family of an L2 logistic regression on flattened, standardised features."""
    tr = load_probe_items(cfg, "train", families)
    te = load_probe_items(cfg, cfg.eval.split, families)
    out = {}
    for i, fam in enumerate(families):
        xa, ya = tr.feats[tr.family_id == i].flatten(1), tr.answer[tr.family_id == i]
        xb, yb = te.feats[te.family_id == i].flatten(1), te.answer[te.family_id == i]
        mu, sd = xa.mean(0), xa.std(0).clamp_min(1e-4)
        xa, xb = (xa - mu) / sd, (xb - mu) / sd
        w, b = _fit_logistic(xa, ya, l2, iters)
        with torch.no_grad():
            acc = ((xb @ w + b).argmax(-1) == yb).float().mean().item()
        # failed test videos count as wrong
        n_fail = sum(f == fam for f in te.failed_families)
        out[fam] = acc * len(yb) / (len(yb) + n_fail)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.probe.ceilings", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="YAML of RunConfig overrides or a preset (the study's base)")
    ap.add_argument("overrides", nargs="*", help="key.path=value overrides")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the learned ceiling")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads")
    ap.add_argument("--out", default="results/probe/ceilings.json", help="JSON output")
    ap.add_argument("--runs", default="results/probe/ceiling_runs", help="run dirs of the learned ceiling")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_run_config(args.config, [*args.overrides, "protocol=probe", "model.compressor.enabled=false"])
    fams = probe_families(cfg)
    lin = linear_ceiling(cfg, fams)
    learned: dict[str, list[float]] = {f: [] for f in fams}
    for seed in args.seeds:
        c = load_run_config(args.config, [*args.overrides, "protocol=probe", "model.compressor.enabled=false",
                                          f"seed={seed}"])
        run_dir = Path(args.runs) / config_hash(c)
        model, _ = fit(c, run_dir)
        for row in score(c, model, run_dir)["metrics"]:
            if row["task"][4:] in learned:
                learned[row["task"][4:]].append(row["value"])
    rows = []
    print(f"{'family':<14}{'chance':>8}{'linear':>8}{'learned (mean, min..max over seeds)':>40}")
    for f in fams:
        v = learned[f]
        rows.append({"family": f, "chance": 0.25, "linear": lin[f], "learned_mean": statistics.mean(v),
                     "learned": v})
        print(f"{f:<14}{0.25:>8.3f}{lin[f]:>8.3f}{statistics.mean(v):>16.3f} ({min(v):.3f}..{max(v):.3f})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": args.config, "overrides": args.overrides, "seeds": args.seeds,
                               "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
