"""The one key=value override parser (harness.overrides) and strict YAML (harness.yamlio), through the
CLIs that use them: harness.train, harness.evaluate (harness.sweep --set: tests/test_spec.py)."""

from __future__ import annotations

import json

import pytest

from harness import evaluate, train
from harness.config import ConfigError, RunConfig, build, to_dict
from harness.identity import stamp
from harness.overrides import OverrideError, apply_overrides, parse_override, parse_value
from harness.yamlio import YamlFileError, load_yaml_text


@pytest.mark.parametrize("raw,value", [
    ("1e-3", 0.001), ("-2E5", -200000.0), ("1.0e3", 1000.0), ("1.5e-3", 0.0015), ("200", 200), ("0.5", 0.5),
    ("true", True), ("[0, 1e-2]", [0, 0.01]), ("{noise: 0}", {"noise": 0}), ("conv", "conv"), ("1e", "1e"),
    ("", ""), ("'1e-3'", "1e-3"),
])
def test_values_follow_yaml_with_12_floats(raw, value) -> None:
    assert parse_value(raw) == value and type(parse_value(raw)) is type(value)


def test_duplicate_keys_in_a_value_or_file_are_errors() -> None:
    with pytest.raises(OverrideError, match="duplicate key 'a'"):
        parse_override("data.synthetic={a: 1, a: 2}")
    dup = r"(?s)x.yaml: not valid YAML.*duplicate key 'steps' \(first set at line 2\).*in \"x.yaml\", line 3"
    with pytest.raises(YamlFileError, match=dup):
        load_yaml_text("train:\n  steps: 1\n  steps: 2\n", "x.yaml")


def test_a_typo_is_blamed_on_the_override() -> None:
    with pytest.raises(OverrideError) as ei:
        apply_overrides({}, ["train.steps=3", "train.lrr=1e-3"])
    assert str(ei.value).startswith("override 'train.lrr=1e-3': train.lrr: unknown key 'lrr' in train "
                                    "(did you mean 'lr'?)")
    with pytest.raises(OverrideError, match="'train.steps' is a value"):
        apply_overrides({}, ["train.steps.x=1"])
    # keys inside free-form mappings are the owner's to check
    assert apply_overrides({}, ["model.encoder.config.pos_scale=0.5"]) == {
        "model": {"encoder": {"config": {"pos_scale": 0.5}}}}


def test_train_cli_takes_overrides_after_options_and_blames_them(tmp_path, capsys) -> None:
    cfg = train.load_run_config("tiny", ["train.lr=1e-3", "data.synthetic={noise: 0}"])
    assert cfg.train.lr == 0.001 and cfg.data.synthetic == {"noise": 0}
    assert train.main(["tiny", "--threads", "1", "train.lrr=1e-3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "override 'train.lrr=1e-3': train.lrr: unknown key 'lrr' in train (did you mean 'lr'?)" in err
    assert train.main(["tiny", "--threads", "1", "train.steps=abc"]) == 2
    assert "override 'train.steps=abc': train.steps: expected an integer" in capsys.readouterr().err
    # a mistake in the file is still the file's
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {steps: -1}\n")
    with pytest.raises(ConfigError, match=f"{bad}: train.steps: must be >= 1"):
        train.load_run_config(str(bad), ["train.lr=1e-3"])


def test_evaluate_cli_blames_the_override_not_config_json(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(stamp(to_dict(build(RunConfig, {})))))
    assert evaluate.main([str(run), "--threads", "1", "eval.limitt=3"]) == 2
    err = capsys.readouterr().err
    assert "override 'eval.limitt=3': eval.limitt: unknown key 'limitt' in eval (did you mean 'limit'?)" in err
    assert "config.json" not in err
    assert evaluate.main([str(run), "eval.limit=-1"]) == 2
    assert "override 'eval.limit=-1'" in capsys.readouterr().err
