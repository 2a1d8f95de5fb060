"""The synthetic suite: deterministic, disjoint splits, balanced answers, the pixels carry the answer,
and nothing else does (question text, options, file metadata)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.synthetic import (
    COLOURS,
    DEFAULT_FAMILIES,
    FAMILIES,
    LETTERS,
    PLACES,
    QUARTERS,
    SuiteSpec,
    format_prompt,
    load_items,
    load_meta,
    make_suite,
)
from harness.data.video import probe_video, read_video, sample_indices

SMALL = dict(n_train=48, n_val=24, n_test=48, frames_long=16, frames_dense=16, size=32)


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "suite"
    make_suite(out, SuiteSpec(seed=3, **SMALL), workers=2, progress=False)
    return out


def _digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "meta.json"}


def test_layout_and_fields(suite):
    meta = load_meta(suite)
    assert meta["format_version"] == 1 and set(meta["families"]) == set(DEFAULT_FAMILIES)
    for split in ("train", "val", "test"):
        items = load_items(suite, split)
        assert len(items) == sum(meta["counts"][split].values()) > 0
        for it in items:
            assert {"id", "family", "group", "video", "question", "options", "answer", "answer_index"} <= set(it)
            assert it["group"] == FAMILIES[it["family"]]
            assert len(it["options"]) == 4 and len(set(it["options"])) == 4
            assert it["answer"] == LETTERS[it["answer_index"]]
            assert Path(it["video"]).is_absolute() and Path(it["video"]).is_file()
            assert it["split"] == split
    assert load_items(suite, "validation") == load_items(suite, "val")
    assert {it["family"] for it in load_items(suite, "test", ["long"])} == {"needle_what", "needle_when", "count"}
    with pytest.raises(ValueError, match="families"):
        load_items(suite, "test", ["nope"])
    with pytest.raises(FileNotFoundError, match="make-synthetic"):
        load_items(suite.parent / "absent", "test")


def test_answers_balanced_per_family_and_split(suite):
    for split in ("train", "val", "test"):
        items = load_items(suite, split)
        for fam in DEFAULT_FAMILIES:
            c = Counter(it["answer"] for it in items if it["family"] == fam)
            assert len(set(c.values())) == 1 and set(c) == set(LETTERS), (split, fam, c)


def test_deterministic_and_seed_dependent(tmp_path, suite):
    again = tmp_path / "again"
    make_suite(again, SuiteSpec(seed=3, **SMALL), workers=1, progress=False)  # other worker count too
    assert _digest_tree(again) == _digest_tree(suite)
    other = tmp_path / "other"
    make_suite(other, SuiteSpec(seed=4, **{**SMALL, "n_train": 0, "n_val": 0}), workers=1, progress=False)
    a, b = load_items(suite, "test"), load_items(other, "test")
    assert [x["question"] for x in a] != [x["question"] for x in b]


def test_splits_use_disjoint_seeds_and_videos(suite):
    seeds, hashes = {}, {}
    for split in ("train", "val", "test"):
        items = load_items(suite, split)
        seeds[split] = {it["seed"] for it in items}
        hashes[split] = {hashlib.sha256(Path(it["video"]).read_bytes()).hexdigest() for it in items}
        assert len(seeds[split]) == len(items)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not seeds[a] & seeds[b]
        assert not hashes[a] & hashes[b]


def _colour_at(frame: np.ndarray, x: int, y: int, s: int) -> np.ndarray:
    c = s // 2
    return frame[y + c - 1:y + c + 1, x + c - 1:x + c + 1].reshape(-1, 3).mean(0)


def test_pixels_carry_the_answer(suite):
    """Decode every test video at full frame rate and check the annotated events against the pixels, and
    the annotated events against the answer."""
    s = max(6, 32 // 5)
    for it in load_items(suite, "test"):
        frames = read_video(it["video"], it["n_frames"]).numpy().astype(float)
        assert frames.shape == (it["n_frames"], 32, 32, 3)
        answer_text = it["options"][it["answer_index"]]
        ev = it["events"]
        for e in ev:
            if "x" in e:
                want = np.array(COLOURS[e["object"].split()[0]], float)
                got = _colour_at(frames[e["start"]], e["x"], e["y"], s)
                assert np.abs(got - want).max() < 60, (it["id"], e, got, want)
        fam, T = it["family"], it["n_frames"]
        if fam == "needle_what":
            assert answer_text == ev[0]["object"]
        elif fam == "needle_when":
            q = QUARTERS.index(answer_text)
            assert q * T // 4 <= ev[0]["start"] and ev[0]["end"] <= (q + 1) * T // 4
        elif fam == "count":
            target = it["question"].split("did the ")[1].split(" flash")[0]
            n = sum(e["object"] == target for e in ev)
            assert ["one", "two", "three", "four"][n - 1] == answer_text
        elif fam == "order":
            asked = it["question"].split("after the ")[1].rstrip(" ?")
            seq = [e["object"] for e in sorted(ev, key=lambda e: e["start"])]
            assert seq[seq.index(asked) + 1] == answer_text
        elif fam == "direction":
            assert ev[0]["direction"] == answer_text
        elif fam == "location":
            assert ev[0]["place"] == answer_text
            x, y = ev[0]["x"] + s / 2, ev[0]["y"] + s / 2
            assert PLACES[(y >= 16) * 2 + (x >= 16)] == answer_text
        elif fam == "colour":
            assert ev[0]["object"].split()[0] == answer_text and ev[0]["end"] - ev[0]["start"] == T // 2
            mid = (ev[0]["start"] + ev[0]["end"]) // 2  # the object's colour is on screen
            assert (np.abs(frames[mid] - np.array(COLOURS[answer_text])).max(-1) < 30).sum() >= 4


def test_chance_level_models_score_a_quarter(suite):
    items = load_items(suite, "test")
    gold = np.array([it["answer_index"] for it in items])
    for k in range(4):  # any constant letter
        assert (gold == k).mean() == pytest.approx(0.25)
    rng = np.random.default_rng(0)
    accs = [(rng.integers(0, 4, len(gold)) == gold).mean() for _ in range(200)]
    assert abs(np.mean(accs) - 0.25) < 0.02


# ----------------------------------------------------------------------- no answer without the pixels
def _blind_features(items: list[dict], vocab: dict[str, int]) -> torch.Tensor:
    """Per item, per option: features a blind model could use: the question words x option words,
    family x option text, option position, and the file's size / duration / resolution (z-scored)."""
    rows = []
    for it in items:
        info = probe_video(it["video"])
        meta = [os.path.getsize(it["video"]) / 1e4, info.duration, info.n_frames / 32, info.width / 64]
        qwords = it["question"].split()
        per_opt = []
        for i, opt in enumerate(it["options"]):
            idx = [vocab.setdefault(f"f:{it['family']}|o:{opt}", len(vocab)), vocab.setdefault(f"pos:{i}", len(vocab))]
            idx += [vocab.setdefault(f"q:{w}|o:{opt}", len(vocab)) for w in qwords]
            idx += [vocab.setdefault(f"m{j}|o:{opt}", len(vocab)) for j in range(len(meta))]
            per_opt.append((idx, [1.0] * (len(idx) - len(meta)) + meta))
        rows.append(per_opt)
    return rows


def _dense(rows, n_feat: int) -> torch.Tensor:
    x = torch.zeros(len(rows), 4, n_feat)
    for r, per_opt in enumerate(rows):
        for o, (idx, val) in enumerate(per_opt):
            for i, v in zip(idx, val):
                if i < n_feat:
                    x[r, o, i] += v
    return x


def _fit_probe(x_tr, y_tr, x_te, steps: int = 300) -> torch.Tensor:
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problem: threads only add contention
    try:
        return _fit(x_tr, y_tr, x_te, steps)
    finally:
        torch.set_num_threads(n_threads)


def _fit(x_tr, y_tr, x_te, steps: int) -> torch.Tensor:
    torch.manual_seed(0)
    mu, sd = x_tr.mean((0, 1)), x_tr.std((0, 1)) + 1e-6
    w = torch.zeros(x_tr.shape[-1], requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05, weight_decay=1e-3)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(((x_tr - mu) / sd) @ w, y_tr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (((x_te - mu) / sd) @ w).argmax(-1)


@pytest.mark.slow
def test_answers_cannot_be_read_from_text_or_file_metadata(tmp_path):
    """A per-option linear probe on question text x option text, option position and file metadata
    (size, duration, frame count, resolution), trained on the train split, stays at chance on test. The
    same probe finds an injected leak, so it is able to learn when there is something to learn."""
    out = tmp_path / "leak"
    make_suite(out, SuiteSpec(seed=11, n_train=720, n_val=0, n_test=480), workers=2, progress=False)
    tr, te = load_items(out, "train"), load_items(out, "test")
    vocab: dict[str, int] = {}
    rows_tr = _blind_features(tr, vocab)
    rows_te = _blind_features(te, vocab)
    x_tr, x_te = _dense(rows_tr, len(vocab)), _dense(rows_te, len(vocab))
    y_tr = torch.tensor([it["answer_index"] for it in tr])
    y_te = torch.tensor([it["answer_index"] for it in te])
    pred = _fit_probe(x_tr, y_tr, x_te)
    acc = (pred == y_te).float().mean().item()
    fams = np.array([it["family"] for it in te])
    per_fam = {f: (pred[fams == f] == y_te[fams == f]).float().mean().item() for f in DEFAULT_FAMILIES}
    assert acc < 0.32, (acc, per_fam)
    assert max(per_fam.values()) < 0.42, per_fam
    # positive control: leak the answer into one feature (as if the file size revealed it)
    leak = torch.zeros(len(tr) + len(te), 4, 1)
    leak[torch.arange(len(tr)), y_tr, 0] = 1.0
    leak[len(tr) + torch.arange(len(te)), y_te, 0] = 1.0
    pred_leak = _fit_probe(torch.cat([x_tr, leak[:len(tr)]], -1), y_tr, torch.cat([x_te, leak[len(tr):]], -1))
    assert (pred_leak == y_te).float().mean().item() > 0.95


def test_prompt_lists_options_with_letters(suite):
    it = load_items(suite, "test")[0]
    text = format_prompt(it)
    lines = text.splitlines()
    assert lines[0] == it["question"]
    assert lines[1:5] == [f"{L}. {o}" for L, o in zip(LETTERS, it["options"])]
    assert "letter" in lines[-1]


def test_spec_validation_names_the_knob(tmp_path):
    for bad, key in [({"frames_long": 8}, "frames_long"), ({"frames_dense": 2048}, "frames_dense"),
                     ({"size": 33}, "size"), ({"families": ["color"]}, "families"),
                     ({"event_len": 5}, "event_len"), ({"format": "avi"}, "format"), ({"clutter": -1}, "clutter")]:
        with pytest.raises(ValueError, match=key):
            make_suite(tmp_path / "x", SuiteSpec(**bad), progress=False)
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="overwrite"):
        make_suite(tmp_path / "exists", SuiteSpec(n_train=0, n_val=0, n_test=4), progress=False)


def test_knobs_reach_the_files(tmp_path):
    out = tmp_path / "knobs"
    spec = SuiteSpec(n_train=0, n_val=0, n_test=8, families=["count", "direction"], frames_long=64,
                     frames_dense=24, size=48, format="webm", clutter=0)
    make_suite(out, spec, workers=1, progress=False)
    make_suite(tmp_path / "knobs2", spec, workers=2, progress=False)
    assert _digest_tree(out) == _digest_tree(tmp_path / "knobs2")  # webm bytes are reproducible too
    items = load_items(out, "test")
    assert {it["family"] for it in items} == {"count", "direction"}
    for it in items:
        info = probe_video(it["video"])
        assert it["video"].endswith(".webm") and info.codec == "vp8"
        assert (info.width, info.height) == (48, 48)
        assert info.n_frames == (64 if it["family"] == "count" else 24) == it["n_frames"]


def test_a_study_declares_its_suite_spec(tmp_path, suite):
    """data.synthetic: the sweep generates a missing suite with it, and refuses an existing suite made
    with other values (naming the file and the knob) rather than train on the wrong data."""
    from harness.config import ConfigError, RunConfig, build, config_hash, to_dict
    from harness.data.features import ensure_features
    from harness.sweep.prepare import prepare_data

    over = {**SMALL, "n_train": 8, "n_val": 0, "n_test": 8, "clutter": 0, "noise": 0}
    cfg = build(RunConfig, {"data": {"suite": str(tmp_path / "clean"), "cache_dir": str(tmp_path / "cache"),
                                     "n_frames": 4, "synthetic": over}})
    assert config_hash(cfg) != config_hash(build(RunConfig, {"data": {**to_dict(cfg.data), "synthetic": {}}}))
    out = prepare_data([to_dict(cfg)], progress=False, log=lambda *a: None)
    assert out["suites_made"] == [str(tmp_path / "clean")]
    assert load_meta(tmp_path / "clean")["spec"]["clutter"] == 0 and load_meta(tmp_path / "clean")["spec"]["noise"] == 0
    assert prepare_data([to_dict(cfg)], progress=False, log=lambda *a: None)["suites_made"] == []  # kept

    wrong = build(RunConfig, {"data": {"suite": str(suite), "cache_dir": str(tmp_path / "cache"),
                                       "synthetic": {"clutter": 0}}})
    for call in (lambda: prepare_data([to_dict(wrong)], progress=False, log=lambda *a: None),
                 lambda: ensure_features(wrong.data, wrong.model.encoder, ["test"], progress=False)):
        with pytest.raises(ValueError, match=r"meta.json: .*clutter: suite has 2, data.synthetic asks 0"):
            call()
    mixed = [to_dict(cfg), to_dict(build(RunConfig, {"data": {**to_dict(cfg.data), "synthetic": {"noise": 0}}}))]
    with pytest.raises(ValueError, match="different data.synthetic specs"):
        prepare_data(mixed, progress=False, log=lambda *a: None)
    for bad, key in [({"clutr": 0}, "synthetic.clutr"), ({"noise": 99}, "synthetic.noise")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            build(RunConfig, {"data": {"synthetic": bad}})


def test_cli_make_synthetic_and_datasets_load(tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "harness.data", "make-synthetic", "--out", str(out), "--n-train", "12",
                        "--n-val", "0", "--n-test", "12", "--frames", "16", "--size", "32", "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "wrote 56 items" in r.stdout  # 12 -> 2 per family (7 families) -> rounded to 4 per family
    r = subprocess.run([sys.executable, "-m", "harness.data", "make-synthetic", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "already exists" in r.stderr
    import datasets

    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))
    assert set(ds) == {"train", "test"} and len(ds["test"]) == 28  # empty val split left out
    fam = datasets.load_dataset(str(out), "count", cache_dir=str(tmp_path / "hf"))
    assert set(fam["test"]["family"]) == {"count"}
    row = json.loads((out / "test.jsonl").read_text().splitlines()[0])
    assert (out / row["video"]).is_file()


def test_compress_group_fixed_targets_and_pixels(tmp_path):
    """The compress group: one question and one option list per family (the question names the family,
    nothing to bind), the answer agrees with the annotated marks, and the marks are on screen in one
    period (rows 2k, 2k + 1) of the 8 x 8 grid. Not part of the default suite."""
    from harness.data.synthetic import DEFAULT_FAMILIES, GROUPS, PAIR_ORDERS, ROW_PLACES

    assert not set(GROUPS["compress"]) & set(SuiteSpec().families) and SuiteSpec().families == DEFAULT_FAMILIES
    out = tmp_path / "c"
    make_suite(out, SuiteSpec(families=GROUPS["compress"], n_train=0, n_val=0, n_test=48, frames_dense=16, size=64),
               workers=1, progress=False)
    items = load_items(out, "test")
    cell = 8
    for fam in GROUPS["compress"]:
        mine = [it for it in items if it["family"] == fam]
        assert len({(it["question"], tuple(it["options"])) for it in mine}) == 1, fam
        assert Counter(it["answer"] for it in mine) == Counter({L: len(mine) // 4 for L in LETTERS})
    for it in items:
        ev, ans = it["events"], it["options"][it["answer_index"]]
        frames = read_video(it["video"], it["n_frames"]).numpy().astype(float)
        for e in ev:
            want = np.array(COLOURS[e["object"].split()[0]], float)
            got = frames[e["start"], e["row"] * cell + 3: e["row"] * cell + 5, e["col"] * cell + 3: e["col"] * cell + 5]
            assert np.abs(got.reshape(-1, 3).mean(0) - want).max() < 60, (it["id"], e)
        if it["family"] == "pair_order":
            red, blue = sorted(ev, key=lambda e: e["object"] != "red mark")
            assert red["row"] // 2 == blue["row"] // 2  # one period
            if red["row"] == blue["row"]:
                want = "red left of blue" if red["col"] < blue["col"] else "blue left of red"
            else:
                assert red["col"] == blue["col"]
                want = "red above blue" if red["row"] < blue["row"] else "blue above red"
            assert ans == want and ans in PAIR_ORDERS
        elif it["family"] == "mark_place":
            assert ROW_PLACES[ev[0]["col"] // 2] == ans
        elif it["family"] == "flash_when":
            q = QUARTERS.index(ans)
            T = it["n_frames"]
            assert q * T // 4 <= ev[0]["start"] and ev[0]["end"] <= (q + 1) * T // 4
            # long enough that half the frames, sampled uniformly, always show it
            idx = sample_indices(T, T // 2, "uniform")
            assert any(ev[0]["start"] <= i < ev[0]["end"] for i in idx)
