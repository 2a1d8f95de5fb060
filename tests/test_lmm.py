"""The LMM wrapper: tokenizer, projector, visual splicing, scoring, generation, presets (offline)."""

from __future__ import annotations

import pytest
import torch

from harness.config import ConfigError, LLMConfig, ModelConfig, build
from harness.model.lmm import VideoLMM, parse_letter
from harness.model.presets import build_llm, seven_b_config
from harness.model.projector import build_projector
from harness.model.tokenizer import build_word_tokenizer, load_tokenizer

TEXTS = ["which way did the red circle move ?\nA. left\nB. right\nC. up\nD. down"]
PROMPT = "which way did the red circle move ?\nA. left\nB. right\nC. up\nD. down\nAnswer with the letter."
SMALL = {"compressor": {"block": "conv", "spatial": {"period": 8, "n_layers": 1}, "d_in": 16, "d_model": 32,
                        "d_out": 32}}


def make_model(model_over: dict | None = None, seed: int = 0) -> VideoLMM:
    torch.manual_seed(seed)
    tok = build_word_tokenizer(TEXTS)
    cfg = build(ModelConfig, {**SMALL, **(model_over or {})})
    return VideoLMM(cfg, build_llm(cfg.llm, tok), tok).eval()


def test_tokenizer_roundtrip(tmp_path):
    tok = build_word_tokenizer(TEXTS)
    ids = tok("which way ? A", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok(" A", add_special_tokens=False)["input_ids"] == tok("A", add_special_tokens=False)["input_ids"]
    assert tok("zebra", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
    tok.save_pretrained(tmp_path)
    tok2 = load_tokenizer(tmp_path)
    assert tok2("which way ? A", add_special_tokens=False)["input_ids"] == ids
    assert (tok2.eos_token_id, tok2.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    # deterministic ids from the same texts
    assert build_word_tokenizer(TEXTS).get_vocab() == tok.get_vocab()


@pytest.mark.parametrize("kind", ["linear", "mlp2x_gelu"])
def test_projector_shapes(kind):
    assert build_projector(kind, 32, 48)(torch.randn(2, 5, 32)).shape == (2, 5, 48)
    with pytest.raises(ConfigError, match="projector: unknown value 'mlp3'"):
        build(ModelConfig, {"projector": "mlp3"})


def test_splice_and_loss_backward():
    m = make_model().train()
    feats = torch.randn(2, 4, 16, 16)
    vis, out = m.encode_video(feats)
    assert vis.shape == (2, m.count_visual_tokens(4, 16), 64) and out.n_tokens == 8
    embeds, mask, starts = m.assemble(list(vis), [PROMPT, "<video> up ?"], [[5], [6, 7]])
    n_prompt = len(m.text_ids(PROMPT))
    assert starts[0] == 1 + 8 + n_prompt  # bos + visual + prompt
    assert mask.sum(1).tolist() == [starts[0] + 1, starts[1] + 2]
    # visual embeddings sit right after BOS for a prompt without the <video> placeholder
    assert torch.allclose(embeds[0, 1:9], vis[0])
    loss = m(feats, [PROMPT, PROMPT], [" A", " C"])
    loss.backward()
    for name in ("compressor", "projector", "llm"):
        grads = [p.grad for p in m.submodules()[name].parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name
    with pytest.raises(ValueError, match="d_in"):
        m.encode_video(torch.randn(1, 4, 16, 15))


def test_scoring_consistency():
    m = make_model()
    vis = m.encode_videos([torch.randn(4, 16, 16), torch.randn(4, 16, 16), torch.randn(6, 16, 16)])
    assert vis[2].shape[0] == 12  # different T -> its own batch
    ctx = [PROMPT, "which way ?", PROMPT]
    batched = m.option_logprobs(vis, ctx)
    single = torch.cat([m.option_logprobs([v], [c]) for v, c in zip(vis, ctx)])
    assert torch.allclose(batched, single, atol=1e-4)
    # option scores are log-probabilities of the letters: they sum to <= 1 in probability
    assert (batched.exp().sum(1) <= 1 + 1e-5).all()
    # a two-token continuation = chain rule over the single-token ones
    (two, _), = m.score_continuations([vis[0]], [PROMPT], [" A B"])
    (a, _), = m.score_continuations([vis[0]], [PROMPT], [" A"])
    (b, _), = m.score_continuations([vis[0]], [PROMPT + " A"], [" B"])
    assert two == pytest.approx(a + b, abs=1e-4)
    # greedy generation agrees with the is_greedy flag of the scorer
    gen = m.generate([vis[0]], [PROMPT], max_new_tokens=1)[0]
    (_, is_greedy), = m.score_continuations([vis[0]], [PROMPT], [" " + gen])
    assert is_greedy


def test_generate_batched_matches_single():
    m = make_model()
    vis = m.encode_videos([torch.randn(4, 16, 16) for _ in range(3)])
    ctx = [PROMPT, "up ?", PROMPT + " left left right"]
    together = m.generate(vis, ctx, max_new_tokens=4)
    alone = [m.generate([v], [c], max_new_tokens=4)[0] for v, c in zip(vis, ctx)]
    assert together == alone


def test_vanilla_no_compression():
    m = make_model({"compressor": {**SMALL["compressor"], "enabled": False}})
    vis, out = m.encode_video(torch.randn(1, 4, 16, 16))
    assert out.n_tokens == 4 * 16 == vis.shape[1]


def test_parse_letter():
    assert parse_letter("B") == "B"
    assert parse_letter("answer : C .") == "C"
    assert parse_letter("left") is None
    assert parse_letter("E", n_options=4) is None


def test_paper_preset_from_local_pretrained(tmp_path):
    """The paper path (from_pretrained of a Qwen2 / Llama class LLM) built from a small local config."""
    tok = build_word_tokenizer(TEXTS)
    for arch in ("qwen2", "llama"):
        src = build_llm(build(LLMConfig, {"arch": arch, "hidden_size": 32, "n_heads": 2, "n_layers": 1,
                                          "intermediate_size": 64}), tok)
        d = tmp_path / arch
        src.save_pretrained(d)
        tok.save_pretrained(d)
        cfg = build(ModelConfig, {**SMALL, "llm": {"preset": "paper", "name_or_path": str(d), "arch": arch}})
        llm = build_llm(cfg.llm)
        assert type(llm).__name__ == type(src).__name__
        assert torch.equal(llm.get_input_embeddings().weight, src.get_input_embeddings().weight)
        m = VideoLMM(cfg, llm, load_tokenizer(d)).eval()
        assert m.option_logprobs(m.encode_videos([torch.randn(2, 16, 16)]), [PROMPT]).shape == (1, 4)
        # random_init takes only the config
        rnd = build_llm(build(LLMConfig, {"preset": "paper", "name_or_path": str(d), "random_init": True}))
        assert rnd.config.hidden_size == 32
        assert not torch.equal(rnd.get_input_embeddings().weight, src.get_input_embeddings().weight)


def test_paper_preset_errors_and_7b_shape():
    with pytest.raises(ConfigError, match="name_or_path"):
        build(LLMConfig, {"preset": "paper"})
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_llm(build(LLMConfig, {"preset": "paper", "name_or_path": "/"}))
    c = seven_b_config("qwen2")
    assert (c.hidden_size, c.num_hidden_layers, c.num_key_value_heads) == (3584, 28, 4)
    assert seven_b_config("llama", num_hidden_layers=2).num_hidden_layers == 2


def test_training_signal_reaches_the_answer():
    """The visual path carries signal end to end: a video-level cue (one feature channel raised in every
    patch) becomes the answer letter after a few dozen AdamW steps; the untrained model, scored on the
    same held-out items, is at chance."""
    torch.manual_seed(0)
    m = make_model().train()
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    g = torch.Generator().manual_seed(1)

    def batch(n):
        y = torch.randint(0, 4, (n,), generator=g)
        f = torch.randn(n, 4, 16, 16, generator=g)
        f[torch.arange(n), :, :, y] += 1.0
        return f, y

    test_f, test_y = batch(64)

    def acc():
        m.eval()
        lp = m.option_logprobs(m.encode_videos(list(test_f)), [PROMPT] * 64)
        m.train()
        return (lp.argmax(1) == test_y).float().mean().item()

    before = acc()
    for _ in range(60):
        f, y = batch(16)
        m(f, [PROMPT] * 16, [" " + "ABCD"[i] for i in y]).backward()
        opt.step()
        opt.zero_grad()
    after = acc()
    assert before < 0.45 and after > 0.9, (before, after)
