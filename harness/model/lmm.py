"""The video LMM: frozen-encoder features -> compressor -> projector -> a transformers causal LLM.

The encoder is not part of this module: training and native scoring read its features from the
feature cache (:mod:`harness.data.features`); the lmms-eval plugin computes missing ones through the
same cache. One forward pass:

1. ``compressor(feats (B, T, P, d_in))`` -> tokens (B, N, d_out) (``enabled=False``: N = T * P)
2. ``projector`` -> visual embeddings (B, N, H), H = the LLM's hidden size; with
   ``model.visual_pos: time_slot`` plus learned time-bucket and in-frame-slot embeddings
3. the prompt's text is split at the literal placeholder ``<video>`` (no placeholder: the video goes
   first, LLaVA style, or with ``video_position: before_last_line`` after the question and options,
   where a causal LLM lets the visual tokens attend to the question); the visual embeddings are
   spliced between the two parts' token embeddings:
   ``[bos] + text_before + visual + text_after + continuation``; rows are right-padded.
4. the LLM's decoder runs on ``inputs_embeds``; the LM head is applied only where a loss or a score is
   needed (a 150k vocabulary over thousands of visual positions would dominate memory otherwise).

Multiple-choice answering: by option log-likelihood (:meth:`VideoLMM.score_continuations`, e.g. of
" A" .. " D") or by greedy generation (:meth:`VideoLMM.generate`, then :func:`parse_letter`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import ModelConfig
from harness.model.compressors.base import CompressorOutput
from harness.model.projector import build_projector
from harness.model.registry import build_compressor
from harness.model.tokenizer import VIDEO_PLACEHOLDER

LETTERS = "ABCDEFGH"
_LETTER_RE = re.compile(r"\b([A-H])\b")


def parse_letter(text: str, n_options: int = 4) -> str | None:
    """First standalone option letter (A.. up to ``n_options``) in a generated answer, else None."""
    allowed = LETTERS[:n_options]
    for m in _LETTER_RE.finditer(text):
        if m.group(1) in allowed:
            return m.group(1)
    s = text.strip()
    return s[0] if s and s[0] in allowed else None


class VideoLMM(nn.Module):
    """Compressor + projector + LLM, with visual tokens spliced into the prompt's embeddings.

    Args:
        cfg: the ModelConfig (encoder, compressor, llm, projector).
        llm: a transformers causal LM (``get_decoder()`` / ``get_output_embeddings()`` are used).
        tokenizer: its tokenizer (a transformers tokenizer).
    """

    def __init__(self, cfg: ModelConfig, llm: nn.Module, tokenizer: Any):
        super().__init__()
        self.cfg = cfg
        self.compressor = build_compressor(cfg.compressor)
        self.llm = llm
        self.tokenizer = tokenizer
        hidden = llm.config.hidden_size
        self.projector = build_projector(cfg.projector, cfg.compressor.d_out, hidden, cfg.visual_pos)
        self.projector.to(dtype=next(llm.parameters()).dtype)
        self._id_cache: dict[str, list[int]] = {}

    # ------------------------------------------------------------------------------ modules
    @property
    def device(self) -> torch.device:
        return next(self.llm.parameters()).device

    def submodules(self) -> dict[str, nn.Module]:
        """The trainable parts by name (``train.train_modules`` names)."""
        return {"compressor": self.compressor, "projector": self.projector, "llm": self.llm}

    def count_visual_tokens(self, T: int, P: int) -> int:
        """Visual tokens the LLM sees for a (T, P) feature grid, without running anything."""
        return self.compressor.count_tokens(T, P)

    # ------------------------------------------------------------------------------ visual path
    def encode_video(self, feats: torch.Tensor, saliency: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, CompressorOutput]:
        """feats (B, T, P, d_in) -> visual embeddings (B, N, H) in the LLM's dtype, and the compressor
        output (token count, frame index, aux). ``saliency`` (B, T, P): the encoder's attention over the
        patches, for training-free reducers (MambaMia ignores it)."""
        if feats.dim() != 4:
            raise ValueError(f"expected encoder features (B, T, P, d_in), got shape {tuple(feats.shape)}")
        if feats.shape[-1] != self.cfg.compressor.d_in:
            raise ValueError(f"features have d_in={feats.shape[-1]} but model.compressor.d_in="
                             f"{self.cfg.compressor.d_in}: the encoder and compressor configs disagree")
        p = next(self.compressor.parameters(), None)
        feats = feats.to(self.device, dtype=p.dtype if p is not None else feats.dtype)
        out = self.compressor(feats) if saliency is None else self.compressor(feats, saliency.to(feats.device))
        emb = self.projector(out.tokens.to(next(self.projector.parameters()).dtype), out.frame_index,
                             feats.shape[1])
        return emb, out

    def encode_videos(self, feats: Sequence[torch.Tensor], saliency: Sequence[torch.Tensor | None] | None = None
                      ) -> list[torch.Tensor]:
        """A list of per-video features (T_i, P, d_in) -> list of visual embeddings (N_i, H). Videos of
        the same shape run as one batch. ``saliency``: per video (T_i, P) or None (see :meth:`encode_video`);
        a batch gets it only when every one of its videos has it."""
        out: list[torch.Tensor | None] = [None] * len(feats)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(feats):
            groups.setdefault(tuple(f.shape), []).append(i)
        for idx in groups.values():
            sal = [saliency[i] for i in idx] if saliency is not None else []
            emb, _ = self.encode_video(torch.stack([feats[i] for i in idx]),
                                       torch.stack(sal) if sal and all(t is not None for t in sal) else None)
            for j, i in enumerate(idx):
                out[i] = emb[j]
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------------------ text path
    def text_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (memoised: prompts repeat across options)."""
        ids = self._id_cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(self._id_cache) < 100_000:
                self._id_cache[text] = ids
        return ids

    def _prompt_parts(self, context: str) -> tuple[list[int], list[int]]:
        if VIDEO_PLACEHOLDER in context:
            before, after = context.split(VIDEO_PLACEHOLDER, 1)
        elif self.cfg.video_position == "before_last_line" and "\n" in context.rstrip("\n"):
            cut = context.rstrip("\n").rindex("\n")
            before, after = context[:cut], context[cut:]
        else:
            before, after = "", context
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        return bos + self.text_ids(before), self.text_ids(after)

    def assemble(self, visuals: Sequence[torch.Tensor], contexts: Sequence[str],
                 continuations: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Build right-padded ``inputs_embeds`` (B, L, H) and ``attention_mask`` (B, L) for rows
        ``[bos] + before + visual_i + after + continuation_i``; returns also each row's start index of
        its continuation (= its full length minus the continuation's)."""
        emb_layer = self.llm.get_input_embeddings()
        rows, starts = [], []
        for vis, ctx, cont in zip(visuals, contexts, continuations, strict=True):
            before, after = self._prompt_parts(ctx)
            ids_b = torch.tensor(before, dtype=torch.long, device=self.device)
            ids_a = torch.tensor(after + list(cont), dtype=torch.long, device=self.device)
            row = torch.cat([emb_layer(ids_b), vis.to(emb_layer.weight.dtype), emb_layer(ids_a)], 0)
            rows.append(row)
            starts.append(row.shape[0] - len(cont))
        L = max(r.shape[0] for r in rows)
        H = rows[0].shape[1]
        embeds = rows[0].new_zeros(len(rows), L, H)
        mask = torch.zeros(len(rows), L, dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            embeds[i, : r.shape[0]] = r
            mask[i, : r.shape[0]] = 1
        return embeds, mask, starts

    def hidden_states(self, embeds: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The LLM decoder's last hidden states (B, L, H) for right-padded rows (``mask`` None: no
        padding, known to the caller without reading the mask back from the GPU)."""
        if mask is not None and bool(mask.all()):  # no padding: SDPA's causal fast path, no (L, L) mask
            mask = None
        out = self.llm.get_decoder()(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    def _target_logits(self, visuals, contexts, targets: Sequence[list[int]]):
        embeds, mask, starts = self.assemble(visuals, contexts, targets)
        h = self.hidden_states(embeds, mask)
        rows = torch.cat([torch.full((len(t),), i, dtype=torch.long) for i, t in enumerate(targets)])
        cols = torch.cat([torch.arange(s - 1, s - 1 + len(t)) for s, t in zip(starts, targets)])
        logits = self.llm.get_output_embeddings()(h[rows.to(h.device), cols.to(h.device)]).float()
        tgt = torch.tensor([x for t in targets for x in t], dtype=torch.long, device=logits.device)
        return logits, tgt, rows

    # ------------------------------------------------------------------------------ training
    def loss(self, visuals: Sequence[torch.Tensor], contexts: Sequence[str], answers: Sequence[str],
             add_eos: bool = True) -> torch.Tensor:
        """Mean next-token cross-entropy over the answer tokens (plus EOS) of each row; the prompt and
        the visual tokens carry no loss. visuals: list of (N_i, H) (see :meth:`encode_videos`)."""
        eos = [self.tokenizer.eos_token_id] if add_eos and self.tokenizer.eos_token_id is not None else []
        targets = [self.text_ids(a) + eos for a in answers]
        if any(not t for t in targets):
            raise ValueError(f"an answer tokenises to nothing: {answers!r}")
        logits, tgt, _ = self._target_logits(visuals, contexts, targets)
        return F.cross_entropy(logits, tgt)

    def sft_loss(self, visuals: Sequence[torch.Tensor], before: Sequence[list[int]], after: Sequence[list[int]],
                 labels: Sequence[list[int]]) -> torch.Tensor:
        """Mean next-token cross-entropy over the labelled tokens of rows ``before_i + visual_i +
        after_i`` (``labels_i`` one per ``after_i`` id, -100: no loss; see
        :mod:`harness.data.conversation`). visuals: list of (N_i, H). With one answer per row this is
        exactly :meth:`loss` (the same rows, positions and reduction)."""
        emb_layer = self.llm.get_input_embeddings()
        ids, lens, r_idx, c_idx, tgt = [], [], [], [], []
        for i, (vis, b, a, lab) in enumerate(zip(visuals, before, after, labels, strict=True)):
            ids += [*b, *a]
            off = len(b) + vis.shape[0]
            lens.append(off + len(a))
            for j, t in enumerate(lab):
                if t != -100:
                    r_idx.append(i)
                    c_idx.append(off + j - 1)  # the position that predicts after[j]
                    tgt.append(t)
        if not tgt:
            raise ValueError("no labelled token in the batch (every assistant turn was cut?)")
        L = max(lens)
        # every index the step needs crosses to the device in one page-locked, non-blocking copy (a
        # torch.tensor(..., device=cuda) per row would wait for the GPU each time: no host run-ahead)
        n, m = len(ids), len(tgt)
        host = torch.tensor(ids + r_idx + c_idx + tgt, dtype=torch.long)
        dev = self.device
        if dev.type == "cuda":
            host = host.pin_memory()
        idx = host.to(dev, non_blocking=True)
        tok = emb_layer(idx[:n])
        ri, ci, tg = idx[n:n + m], idx[n + m:n + 2 * m], idx[n + 2 * m:]
        rows, o = [], 0
        for vis, b, a in zip(visuals, before, after):
            rows.append(torch.cat([tok[o:o + len(b)], vis.to(emb_layer.weight.dtype),
                                   tok[o + len(b):o + len(b) + len(a)]], 0))
            o += len(b) + len(a)
        embeds = rows[0].new_zeros(len(rows), L, rows[0].shape[1])
        mask = None
        if any(n_i != L for n_i in lens):  # padded rows: the mask built from the host-side lengths
            mask = (torch.arange(L)[None, :] < torch.tensor(lens)[:, None]).long()
            mask = (mask.pin_memory() if dev.type == "cuda" else mask).to(dev, non_blocking=True)
        for i, r in enumerate(rows):
            embeds[i, : r.shape[0]] = r
        h = self.hidden_states(embeds, mask)
        logits = self.llm.get_output_embeddings()(h[ri, ci]).float()
        return F.cross_entropy(logits, tg)

    def forward(self, feats: torch.Tensor, before: Sequence[Any], after: Sequence[Any],
                labels: Sequence[list[int]] | None = None) -> torch.Tensor:
        """Training forward (what DDP/FSDP wrap): feats (B, T, P, d_in) and B token rows (``before``,
        ``after``, ``labels``: :meth:`sft_loss`) -> scalar loss. Without ``labels``, ``before`` /
        ``after`` are B prompts and B answers (e.g. " A"): :meth:`loss`."""
        vis, _ = self.encode_video(feats)
        if labels is None:
            return self.loss(list(vis), before, after)
        return self.sft_loss(list(vis), before, after, labels)

    # ------------------------------------------------------------------------------ scoring
    @torch.no_grad()
    def score_continuations(self, visuals: Sequence[torch.Tensor], contexts: Sequence[str],
                            continuations: Sequence[str]) -> list[tuple[float, bool]]:
        """lmms-eval's ``loglikelihood``: for each row, log p(continuation | visual, context) summed over
        its tokens, and whether greedy decoding would produce exactly it. Rows sharing the same visual
        tensor object and context share one forward pass when their continuations are one token long
        (the usual " A" .. " D" case; mathematically the same as scoring them separately)."""
        conts = [self.text_ids(c) for c in continuations]
        results: list[tuple[float, bool] | None] = [None] * len(conts)
        single: dict[tuple[int, str], list[int]] = {}
        multi: list[int] = []
        for i, c in enumerate(conts):
            if len(c) == 1:
                single.setdefault((id(visuals[i]), contexts[i]), []).append(i)
            elif c:
                multi.append(i)
            else:
                results[i] = (0.0, True)
        if single:
            groups = list(single.values())
            first = [g[0] for g in groups]
            embeds, mask, starts = self.assemble([visuals[i] for i in first], [contexts[i] for i in first],
                                                 [[] for _ in first])
            h = self.hidden_states(embeds, mask)
            idx = torch.tensor(starts, device=h.device) - 1
            logp = F.log_softmax(self.llm.get_output_embeddings()(h[torch.arange(len(first)), idx]).float(), -1)
            top = logp.argmax(-1)
            for r, g in enumerate(groups):
                for i in g:
                    tok = conts[i][0]
                    results[i] = (float(logp[r, tok]), bool(top[r] == tok))
        if multi:
            logits, tgt, rows = self._target_logits([visuals[i] for i in multi], [contexts[i] for i in multi],
                                                    [conts[i] for i in multi])
            logp = F.log_softmax(logits, -1)
            tok_lp = logp.gather(1, tgt[:, None])[:, 0]
            greedy = logp.argmax(-1) == tgt
            rows = rows.to(logp.device)
            for r, i in enumerate(multi):
                sel = rows == r
                results[i] = (float(tok_lp[sel].sum()), bool(greedy[sel].all()))
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def option_logprobs(self, visuals: Sequence[torch.Tensor], contexts: Sequence[str],
                        n_options: int = 4, prefix: str = " ") -> torch.Tensor:
        """(B, n_options) log-likelihoods of the option letters ``prefix + "A"`` .. after each prompt."""
        vis, ctx, conts = [], [], []
        for v, c in zip(visuals, contexts, strict=True):
            for k in range(n_options):
                vis.append(v)
                ctx.append(c)
                conts.append(prefix + LETTERS[k])
        scores = self.score_continuations(vis, ctx, conts)
        return torch.tensor([s for s, _ in scores]).view(len(contexts), n_options)

    @torch.no_grad()
    def generate(self, visuals: Sequence[torch.Tensor], contexts: Sequence[str], max_new_tokens: int = 8,
                 until: Sequence[str] = ()) -> list[str]:
        """Greedy decoding with a KV cache from each (visual, context); stops at EOS, after
        ``max_new_tokens``, or at the first of the ``until`` strings (which is cut off)."""
        embeds, mask, starts = self.assemble(visuals, contexts, [[] for _ in contexts])
        B = embeds.shape[0]
        lengths = torch.tensor(starts, device=embeds.device)
        # right-padded rows: each row's first new token comes from its own last prompt position
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=True,
                       logits_to_keep=0)
        past = out.past_key_values
        next_tok = out.logits[torch.arange(B), lengths - 1].argmax(-1)
        eos = self.tokenizer.eos_token_id
        tokens: list[list[int]] = [[] for _ in range(B)]
        done = torch.zeros(B, dtype=torch.bool, device=embeds.device)
        cur_mask = mask
        cur_len = lengths.clone()
        emb_layer = self.llm.get_input_embeddings()
        for step in range(max_new_tokens):
            for b in range(B):
                if not done[b]:
                    if eos is not None and int(next_tok[b]) == eos:
                        done[b] = True
                    else:
                        tokens[b].append(int(next_tok[b]))
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            # the new token goes to column L + step in every row; padding columns stay masked out and
            # each row's positions continue from its own length
            cur_mask = torch.cat([cur_mask, torch.ones(B, 1, dtype=cur_mask.dtype, device=cur_mask.device)], 1)
            out = self.llm(inputs_embeds=emb_layer(next_tok[:, None]), attention_mask=cur_mask,
                           position_ids=cur_len[:, None], past_key_values=past, use_cache=True)
            past = out.past_key_values
            cur_len = cur_len + 1
            next_tok = out.logits[:, -1].argmax(-1)
        texts = []
        for t in tokens:
            s = self.tokenizer.decode(t, skip_special_tokens=True)
            for u in until:
                if u and u in s:
                    s = s[: s.index(u)]
            texts.append(s)
        return texts
