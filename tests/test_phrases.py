"""Goal paraphrases (steve1_ray.world.phrases): every goal covered, deterministic, held-out phrasings unseen."""
from __future__ import annotations

import subprocess
import sys

from steve1_ray.world.demonstrators import GOALS
from steve1_ray.world.phrases import FRAMES, HELDOUT, TEMPLATES, captions, heldout_phrases, template_phrases


def test_every_goal_has_many_templates_and_heldout_phrasings():
    table = template_phrases()
    assert set(table) == set(GOALS) == set(TEMPLATES) == set(HELDOUT) == set(heldout_phrases())
    for goal, phrases in table.items():
        assert len(phrases) >= 100, goal  # several verb/object pairs x every frame
        assert len(HELDOUT[goal]) >= 3, goal
        assert all(p == p.strip() and "  " not in p and "go go" not in p for p in phrases)
    # a verb/object pair appears in every frame: "chop a tree" -> "please chop a tree", "I want you to chop a tree"
    assert all(f.format(p="chop a tree") in table["collect_wood"] for f in FRAMES)
    # pairs come from one group only: "chop" goes with trees, not with "wood from a tree"
    assert "chop wood from a tree" not in table["collect_wood"] and "gather wood" in table["collect_wood"]
    # most captions are template phrasings too (the templates extend the captions rather than replace them)
    caps = [c for cs in captions().values() for c in cs]
    assert sum(c in table[g] for g, cs in captions().items() for c in cs) >= 0.8 * len(caps)


def test_templates_are_sorted_distinct_and_the_same_in_a_new_process():
    table = template_phrases()
    assert list(table) == sorted(table)
    for phrases in table.values():
        assert list(phrases) == sorted(set(phrases))
    everything = [p for ps in table.values() for p in ps]
    assert len(everything) == len(set(everything)), "a phrasing belongs to one goal"
    code = ("from steve1_ray.world.phrases import template_phrases as t; import hashlib, json; "
            "print(hashlib.sha256(json.dumps(t()).encode()).hexdigest())")
    import hashlib
    import json
    here = hashlib.sha256(json.dumps(table).encode()).hexdigest()
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == here  # set order (hash seed) does not leak into the result


def test_heldout_phrasings_are_no_template_and_no_caption():
    templates = {p for ps in template_phrases().values() for p in ps}
    caps = {c for g in GOALS.values() for c in g.captions}
    heldout = [p for ps in HELDOUT.values() for p in ps]
    assert len(heldout) == len(set(heldout))
    assert not set(heldout) & templates
    assert not set(heldout) & caps
    # none is a template phrasing with a frame's words dropped or added around it either: another structure
    bare = {f"{v} {o}".strip() for groups in TEMPLATES.values() for verbs, objects in groups
            for v in verbs for o in objects}
    assert not set(heldout) & bare
    # fair: most of a held-out phrase's words occur in some template or caption (new structure, known nouns)
    vocab = {w for p in templates | caps for w in p.split()}
    for goal, phrases in HELDOUT.items():
        for p in phrases:
            words = p.replace(",", "").split()
            assert sum(w in vocab for w in words) >= len(words) / 2, p
