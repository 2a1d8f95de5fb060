"""The probe protocol's model: the compressor under test, then a small read-out in place of the LLM.

    feats (B, T, P, d_in) -> Compressor -> tokens (B, N, d_out) -> flatten (B, N * d_out), BatchNorm
    -> Linear -> GELU -> one 4-way head per family -> logits (B, n_options)

With a time-axis aggregator the kept time steps are placed in their time slots (``ProbeModel.slotted``).
The question of a fixed-target family only names the family (``harness.data.synthetic``: the compress
group), so the read-out needs no language: the family picks its head, and four logits score the fixed
options. Training is cross-entropy over the options. What the read-out can answer is bounded by what the
compressor kept, which is what a block study measures; the read-out is the same for every variant.
A first design (a learned query per family cross-attending over the tokens) stayed at chance for 300
steps even without compression: attention that starts uniform averages a one-token event away.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from harness.config import RunConfig
from harness.model.compressors.base import CompressorOutput, tokens_per_video
from harness.model.registry import build_compressor

N_OPTIONS = 4


class ProbeReadout(nn.Module):
    """(B, N, D) tokens and (B,) family ids -> (B, n_options) logits: the N x D values flattened (token order
    is the index, as the LLM's positions are) and standardised per feature over the batch (BatchNorm, no
    affine), one hidden layer shared by the families and one 4-way head per family. ``in_features`` is found
    on the first call (N x D). Standardising matters: most of every token is the same background on every
    video, and with a per-token LayerNorm instead the probe sat at chance at lr 3e-3 and at batch 8."""

    def __init__(self, d: int, n_families: int, hidden: int = 256, n_options: int = N_OPTIONS):
        super().__init__()
        self.n_options = n_options
        self.norm = nn.LazyBatchNorm1d(affine=False)
        self.hidden = nn.Sequential(nn.LazyLinear(hidden), nn.GELU())
        self.heads = nn.Linear(hidden, n_families * n_options)

    def forward(self, tokens: torch.Tensor, family: torch.Tensor) -> torch.Tensor:
        B = tokens.shape[0]
        h = self.hidden(self.norm(tokens.reshape(B, -1)))
        logits = self.heads(h).view(B, -1, self.n_options)  # (B, n_families, n_options)
        return logits[torch.arange(B, device=tokens.device), family]


class ProbeModel(nn.Module):
    """Compressor + read-out. ``families``: the family names in id order (the read-out's queries)."""

    def __init__(self, cfg: RunConfig, families: list[str]):
        super().__init__()
        self.families = list(families)
        comp = cfg.model.compressor
        if getattr(comp, "taa", None) is not None and comp.taa.enabled and comp.budget:
            raise ValueError("model.compressor.budget: the probe places the time-axis aggregator's kept steps in "
                             "their time slots, which a budget cut after it would scramble (use protocol: lmm)")
        self.compressor = build_compressor(cfg.model.compressor)
        self.readout = ProbeReadout(cfg.model.compressor.d_out, len(self.families))

    def forward(self, feats: torch.Tensor, family: torch.Tensor, saliency: torch.Tensor | None = None
                ) -> torch.Tensor:
        """feats (B, T, P, d_in), family (B,) long, saliency (B, T, P) or None (the encoder's attention,
        for training-free reducers) -> logits (B, n_options)."""
        return self.logits_and_output(feats, family, saliency)[0]

    def logits_and_output(self, feats: torch.Tensor, family: torch.Tensor, saliency: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, CompressorOutput]:
        """As ``forward``, with the compressor's output beside the logits (its token counts, for scoring)."""
        out = self.compressor(feats) if saliency is None else self.compressor(feats, saliency)
        return self.readout(self.slotted(out), family), out

    @staticmethod
    def slotted(out: CompressorOutput) -> torch.Tensor:
        """The tokens the read-out sees, (B, N, D). With a time-axis aggregator (v2), which keeps K of the S
        time steps (K depends on the videos), each kept step's Q tokens go to its own time slot of an
        (S x Q)-token layout and dropped steps are zeros: the read-out has a fixed size, and a kept token
        keeps its time, as the LLM knows it from the order of what it sees."""
        kept = out.aux.get("kept_steps")
        if kept is None:
            return out.tokens
        B, N, D = out.tokens.shape
        S, K = out.aux["step_frames"].shape[1], kept.shape[1]
        Q = N // K
        slots = out.tokens.new_zeros(B, S, Q, D)
        slots.scatter_(1, kept[:, :, None, None].expand(B, K, Q, D), out.tokens.view(B, K, Q, D))
        return slots.view(B, S * Q, D)

    @staticmethod
    def kept_tokens(out: CompressorOutput) -> torch.Tensor:
        """(B,) tokens each video really passes on (:func:`~harness.model.compressors.base.tokens_per_video`)."""
        return torch.tensor(tokens_per_video(out), dtype=torch.long)

    def count_visual_tokens(self, T: int, P: int) -> int:
        return self.compressor.count_tokens(T, P)
