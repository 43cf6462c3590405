"""The shared config machinery: overlays, overrides, coercion and errors that name the fix."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pytest

from steve1_ray.config import ConfigError, load_config, save_config


@dataclass
class Inner:
    width: int = 4


@dataclass
class Inner2:
    width: int = 4
    depth: int = 1
    opts: dict = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)


@dataclass
class Cfg:
    lr: float = 1e-3
    steps: int = 10
    name: str = "run"
    flag: bool = False
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    section: Inner2 = field(default_factory=lambda: Inner2(depth=3, opts={"a": 1}, inner=Inner(7)))  # the parent's


def test_a_section_given_in_part_keeps_its_parents_defaults(tmp_path):
    """`world.cow_herds=3` on the quick start once rebuilt its world from WorldConfig's defaults: tree_logs fell from
    the quick start's 4 to 1 without a word. Overrides, YAML sections and whole-section strings keep the parent's
    defaults now, at every depth; a value that is no section (a dict field) replaces its default whole."""
    default = Inner2(4, 3, {"a": 1}, Inner(7))
    assert load_config(Cfg).section == default
    assert load_config(Cfg, [], ["section.width=9"]).section == Inner2(9, 3, {"a": 1}, Inner(7))
    assert load_config(Cfg, [], ["section={width: 9}"]).section == Inner2(9, 3, {"a": 1}, Inner(7))
    (tmp_path / "a.yaml").write_text("section: {width: 7}\n")
    assert load_config(Cfg, [tmp_path / "a.yaml"]).section == Inner2(7, 3, {"a": 1}, Inner(7))
    assert load_config(Cfg, [], ["section.inner={}"]).section.inner == Inner(7)  # two deep
    assert load_config(Cfg, [], ["section.opts={b: 2}"]).section.opts == {"b": 2}  # replaced, not merged
    assert load_config(Cfg, [], ["section.depth=5"]).section == Inner2(4, 5, {"a": 1}, Inner(7))
    assert load_config(Cfg).section.opts is not load_config(Cfg).section.opts
    with pytest.raises(ConfigError, match=r"section: unknown key\(s\) \['wdth'\]"):
        load_config(Cfg, [], ["section={wdth: 9}"])
    with pytest.raises(ConfigError, match="section.inner.width: expected an integer"):
        load_config(Cfg, [], ["section.inner.width=x"])
    for hostile in ("section=[1, 2]", "section=", "section=7", "section={width: [9]}", "section.inner={width: {}}"):
        with pytest.raises(ConfigError, match="section"):
            load_config(Cfg, [], [hostile])

    from steve1_ray.config import describe_fields
    from steve1_ray.quickstart import QuickstartConfig

    assert ("section.depth", "3") in [r[:2] for r in describe_fields(Cfg)]
    assert ("world.tree_logs", "4") in [r[:2] for r in describe_fields(QuickstartConfig)]  # what --help lists
    qs = load_config(QuickstartConfig, [], ["world.cow_herds=3"]).world
    assert (qs.cow_herds, qs.tree_logs) == (3, QuickstartConfig().world.tree_logs) and qs.tree_logs != 1


def test_overrides_are_parsed_as_yaml_scalars_and_coerced(tmp_path):
    cfg = load_config(Cfg, [], ["lr=3e-4", "steps=20", "flag=true", "tags=[a, b]", "inner.width=8", "name=x y"])
    assert cfg.lr == pytest.approx(3e-4) and isinstance(cfg.lr, float)
    assert (cfg.steps, cfg.flag, cfg.tags, cfg.inner.width, cfg.name) == (20, True, ["a", "b"], 8, "x y")


@dataclass
class WithOptional:
    baseline: Optional[str] = "foundation.model"
    scale: Optional[float] = 1.0
    name: str = "run"


def test_null_on_the_command_line_unsets_an_optional_field():
    """`baseline_policy=null` used to set the string "null" on an Optional[str] field (the file name the job then
    looked for); a YAML null on the command line is None there, as it is in a config file. A plain str keeps it."""
    for null in ("null", "~", "Null", "NULL", " null "):
        cfg = load_config(WithOptional, [], [f"baseline={null}", f"scale={null}", f"name={null}"])
        assert (cfg.baseline, cfg.scale, cfg.name) == (None, None, null)
    assert load_config(WithOptional, [], ["baseline=nullable.model"]).baseline == "nullable.model"
    assert load_config(WithOptional, [], ["baseline="]).baseline == ""
    assert load_config(WithOptional, [], ["baseline=eat: {a cow"]).baseline == "eat: {a cow"  # no YAML for text


def test_yaml_overlays_apply_in_order_then_overrides(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("lr: 0.1\nsteps: 5\ninner: {width: 2}\n")
    b.write_text("steps: 7\n")
    cfg = load_config(Cfg, [a, b], ["lr=0.5"])
    assert (cfg.lr, cfg.steps, cfg.inner.width) == (0.5, 7, 2)
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(Cfg, [tmp_path / "out.yaml"]) == cfg


@pytest.mark.parametrize("override, message", [
    ("lrr=1", "unknown key"), ("steps=1.5", "expected an integer"), ("flag=maybe", "expected true/false"),
    ("lr=fast", "expected a number"), ("novalue", "key=value"), ("inner.depth=2", "unknown key"),
])
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Cfg, [], [override])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Cfg, [tmp_path / "nope.yaml"])
