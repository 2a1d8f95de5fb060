"""The llava_video dataset: manifest (schema, mixture sampling, identity, malformed records) and the
conversation -> token rows step (chat template, assistant-only labels, truncation), on a generated
LLaVA-Video-178K-schema sample with real H.264 files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import ConfigError, DataConfig, RunConfig, build
from harness.data.conversation import IGNORE, BadItem, ConversationEncoder
from harness.data.datasets import build_manifest, dataset_identity
from harness.data.datasets.llava_video import iter_json_records
from harness.data.llava_sample import make_llava_sample
from harness.model.bpe_tokenizer import train_bpe_tokenizer


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict:
    return make_llava_sample(tmp_path_factory.mktemp("llava") / "data", n_videos=8, long_frames=400)


def _data(sample: dict, tmp: Path, **over) -> DataConfig:
    return build(DataConfig, {"dataset": "llava_video", "args": {"mixture": sample["mixture"]},
                              "manifest_dir": str(tmp / "manifests"), **over})


def test_manifest_counts_malformed_and_identity(sample, tmp_path):
    m = build_manifest(_data(sample, tmp_path))
    # cap: 8 videos + 4 damaged (kept: their records are fine) + 1 malformed; qa: 8 + 3 malformed
    assert len(m) == 8 + 4 + 8 and m.groups == ["cap", "qa"]
    assert m.stats["n_malformed"] == 4 and m.stats["n_records"] == 24
    reasons = " ".join(m.stats["malformed"].values())
    for why in ("alternate", "no `video`", "2 video placeholders", "not JSON"):
        assert why in reasons, why
    rec = m.record(0)
    assert rec["video"].endswith("v0000.mp4") and Path(rec["video"]).is_absolute()
    assert rec["conversations"][0]["value"].startswith("<video>\n")  # <image> normalised
    assert {m.record(i)["group"] for i in range(len(m))} == {"cap", "qa"}
    qa = m.record(int(m.indices_of(["qa"])[0]))
    assert [t["from"] for t in qa["conversations"]] == ["human", "gpt", "human", "gpt"]
    # identity: stable, in the run's view, and changed by the content and by the sampling
    ident = dataset_identity(_data(sample, tmp_path))
    assert ident == f"llava_video:{m.identity}" == dataset_identity(_data(sample, tmp_path))
    cap_only = {"mixture": [{"path": sample["cap"], "video_root": str(Path(sample["cap"]).parent)}]}
    a = build_manifest(build(DataConfig, {"dataset": "llava_video", "args": cap_only,
                                          "manifest_dir": str(tmp_path / "m2")}))
    half = {"mixture": [{**cap_only["mixture"][0], "sampling": "first:50%"}]}
    b = build_manifest(build(DataConfig, {"dataset": "llava_video", "args": half,
                                          "manifest_dir": str(tmp_path / "m2")}))
    assert len(a) == 12 and len(b) == 6 and a.identity != b.identity
    rnd = [build_manifest(build(DataConfig, {"dataset": "llava_video", "manifest_dir": str(tmp_path / "m2"),
                                             "args": {"mixture": [{**cap_only["mixture"][0], "sampling": "random:4"}],
                                                      "seed": s}})) for s in (0, 0, 1)]
    ids = [[r.record(i)["id"] for i in range(len(r))] for r in rnd]
    assert len(ids[0]) == 4 and ids[0] == ids[1] and ids[0] != ids[2]
    # a families filter keeps one entry
    assert len(build_manifest(_data(sample, tmp_path, families=["qa"]))) == 8


def test_streamed_json_array_equals_json_load(sample, tmp_path):
    whole = json.loads(Path(sample["cap"]).read_text())
    streamed = [obj for _, obj in iter_json_records(Path(sample["cap"]), chunk=97)]  # objects span chunks
    assert streamed == whole
    cut = tmp_path / "cut.json"
    cut.write_text(Path(sample["cap"]).read_text()[:-300])
    with pytest.raises(ValueError, match="cut.json"):
        list(iter_json_records(cut, chunk=64))


def test_config_errors_name_the_key(sample, tmp_path):
    with pytest.raises(ConfigError, match=r"data\.args\.mixture\[0\]\.sampling"):
        build(RunConfig, {"data": {"dataset": "llava_video",
                                   "args": {"mixture": [{"path": "x.json", "sampling": "half"}]}}})
    with pytest.raises(ConfigError, match=r"data\.args\.mixtur"):
        build(RunConfig, {"data": {"dataset": "llava_video", "args": {"mixtur": []}}})
    with pytest.raises(ConfigError, match=r"data\.families\[0\].*entries: cap, qa"):
        build(RunConfig, {"data": {"dataset": "llava_video", "args": {"mixture": sample["mixture"]},
                                   "families": ["colour"]}})
    with pytest.raises(ConfigError, match=r"data\.dataset.*did you mean 'llava_video'"):
        build(RunConfig, {"data": {"dataset": "llava_vide"}})
    with pytest.raises(ConfigError, match=r"data\.families\[0\]"):  # the synthetic suite checks its own
        build(RunConfig, {"data": {"families": ["colr"]}})
    # a mixture YAML that is not there yet: the config builds (a sweep can be planned), the manifest says
    later = build(DataConfig, {"dataset": "llava_video", "args": {"mixture": str(tmp_path / "later.yaml")}})
    with pytest.raises(FileNotFoundError, match=r"data\.args\.mixture: .*later.yaml: no such mixture YAML"):
        build_manifest(later)
    with pytest.raises(FileNotFoundError, match=r"mixture\[0\]\.path"):
        build_manifest(build(DataConfig, {"dataset": "llava_video", "args": {"path": str(tmp_path / "no.json")},
                                          "manifest_dir": str(tmp_path)}))


@pytest.fixture(scope="module")
def bpe():
    return train_bpe_tokenizer(["The square is red. It moves to the left. Describe what happens."] * 20, 400)


CONV = [{"from": "human", "value": "<video>\nWhat colour is the square?"}, {"from": "gpt", "value": "Red."},
        {"from": "human", "value": "Which way?"}, {"from": "gpt", "value": "To the left."}]


def test_chat_template_labels_only_assistant_turns(bpe):
    row = ConversationEncoder(bpe, "chat", n_visual=10).encode(CONV)
    assert bpe.decode(row.before).endswith("<|im_start|>user\n")  # the video follows the user header
    runs, cur = [], []
    for tid, lab in zip(row.after, row.labels):
        assert lab in (IGNORE, tid)
        if lab != IGNORE:
            cur.append(tid)
        elif cur:
            runs.append(bpe.decode(cur))
            cur = []
    if cur:
        runs.append(bpe.decode(cur))
    assert runs == ["Red.<|im_end|>\n", "To the left.<|im_end|>\n"]
    text = bpe.decode(row.after)
    assert "Which way?" in text and text.count("<|im_start|>assistant\n") == 2
    # no placeholder: the video goes before the first user text, LLaVA style
    row2 = ConversationEncoder(bpe, "chat", 10).encode([{"from": "human", "value": "Hi"}, CONV[1]])
    assert bpe.decode(row2.after).startswith("\nHi<|im_end|>")


def test_scoring_prompt_matches_training_rendering(bpe):
    enc = ConversationEncoder(bpe, "chat", n_visual=10)
    train_row = enc.encode(CONV[:2])
    p = enc.prompt("What colour is the square?")
    assert p.before == train_row.before
    assert train_row.after[: len(p.after)] == p.after  # the answer's tokens follow the prompt's
    assert bpe.decode(train_row.after[len(p.after):]) == "Red.<|im_end|>\n"


def test_plain_template_is_the_original_format():
    from harness.model.tokenizer import build_word_tokenizer

    tok = build_word_tokenizer(["what colour was the red circle ?"])
    conv = [{"from": "human", "value": "what colour was the red circle ?\nA. red"}, {"from": "gpt", "value": "A"}]
    row = ConversationEncoder(tok, "plain", 4).encode(conv)
    ids = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert row.before == [tok.bos_token_id]
    assert row.after == ids("what colour was the red circle ?\nA. red") + ids(" A") + [tok.eos_token_id]
    assert [x for x in row.labels if x != IGNORE] == ids(" A") + [tok.eos_token_id]


def test_truncation_never_cuts_visual_tokens(bpe):
    full = ConversationEncoder(bpe, "chat", n_visual=10).encode(CONV)
    n_before = len(full.before)
    with pytest.raises(BadItem, match="too_long: .*visual tokens would be cut"):
        ConversationEncoder(bpe, "chat", n_visual=10, max_length=n_before + 9).encode(CONV)
    with pytest.raises(BadItem, match="no assistant token left"):
        ConversationEncoder(bpe, "chat", n_visual=10, max_length=n_before + 12).encode(CONV)
    first_answer = full.labels.index(next(x for x in full.labels if x != IGNORE))
    keep = first_answer + 2
    cut = ConversationEncoder(bpe, "chat", 10, max_length=n_before + 10 + keep).encode(CONV)
    assert cut.truncated and cut.after == full.after[:keep] and cut.n_targets == 2
    assert len(cut.before) + 10 + len(cut.after) == n_before + 10 + keep
