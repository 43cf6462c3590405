"""The report's answer to "is each prompt followed?": its place at the top, its sentences, the foundation policy's
rows and the other phrasings beside their prompt (synthetic episode records; no Ray, no models)."""
from __future__ import annotations

import json

import pytest

from steve1_ray.evaluate.metrics import target_metrics
from steve1_ray.evaluate.report import phrasing_vs_prompt, prompt_following, summarize, verdict, write_report
from steve1_ray.evaluate.run import ProgressLines, chunk_jobs


def _eps(goal, kind, scale, counts, target="collect_wood", of=None):
    """Episode records of one cell: episode k got counts[k] of `target`, in world k."""
    out = []
    for k, c in enumerate(counts):
        metrics = {f"achievements/{target}": float(c), "travel/max_dist": 1.0}
        targets = [] if kind in ("unconditioned", "foundation") else [target]
        metrics.update(target_metrics(metrics, targets))
        rec = {"goal": goal, "kind": kind, "cond_scale": scale, "episode": k, "world_seed": 1000 + k,
               "goal_seed": 0, "agent_seed": k, "targets": targets, "steps": 300, "died": False,
               "metrics": metrics, "video": None, "seconds": 0.1}
        if of:
            rec["paraphrase_of"] = of
        out.append(rec)
    return out


BASE = [1, 1, 0, 2, 1, 1, 0, 2, 1, 1, 0, 2]  # mean 1.0
FOLLOWED = [2, 3, 2, 2, 3, 2, 2, 3, 2, 2, 3, 2]  # mean 2.33: >= 2x, low end above 1, above scale 0
WEAK = [1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 2, 1]  # mean 1.25: under 2x


def _row(eps, goal):
    return next(r for r in prompt_following(summarize(eps)) if r["goal"] == goal)


def test_verdict_sentence_when_followed():
    eps = _eps("unconditioned", "unconditioned", None, BASE) + _eps("chop a tree", "text", 0.0, BASE) \
        + _eps("chop a tree", "text", 2.0, WEAK) + _eps("chop a tree", "text", 6.0, FOLLOWED)
    row = _row(eps, "chop a tree")
    assert row["followed"] and row["followed_at"] == [6.0]
    lo, hi = (f"{v:.2f}".rstrip("0").rstrip(".") for v in (row["best_low"], row["best_high"]))
    assert verdict(row) == (f"followed — at guidance scale 6 the agent collects 2.3× the wood of the unconditioned "
                            f"agent (2.33 vs 1 per episode, 95% interval {lo}–{hi}).")
    # Nothing unconditioned: the count itself, not a ratio.
    eps = _eps("unconditioned", "unconditioned", None, [0] * 12, "eat_cow") \
        + _eps("eat a cow", "text", 6.0, [1, 2, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1], "eat_cow")
    assert verdict(_row(eps, "eat a cow")).startswith(
        "followed — at guidance scale 6 the agent eats 1.25 cows per episode against 0 by the unconditioned agent "
        "(95% interval ")


@pytest.mark.parametrize("scale0, guided, why", [
    (BASE, WEAK, "not followed — best 1.25 wood per episode at scale 6 against 1 unconditioned: 1.2×, under the 2× "
                 "needed."),
    (BASE, [0] * 10 + [12, 12], "not followed — best 2 wood per episode at scale 6 against 1 unconditioned; the 95% "
                                "interval (0–"),
    ([3] * 12, FOLLOWED, "not followed — best 2.33 wood per episode at scale 6 against 1 unconditioned; scale 0 (no "
                         "guidance) already gets 3."),
    (BASE, [0] * 12, "not followed — no wood at any guidance scale above 0 (unconditioned: 1 per episode)."),
])
def test_verdict_sentence_says_why_not(scale0, guided, why):
    eps = _eps("unconditioned", "unconditioned", None, BASE) + _eps("chop a tree", "text", 0.0, scale0) \
        + _eps("chop a tree", "text", 6.0, guided)
    row = _row(eps, "chop a tree")
    assert not row["followed"]
    assert verdict(row).startswith(why)


def test_following_section_is_first_with_a_sentence_per_prompt(tmp_path):
    eps = _eps("chop a tree", "text", 0.0, BASE) + _eps("chop a tree", "text", 6.0, FOLLOWED) \
        + _eps("eat a cow", "text", 0.0, [0] * 12, "eat_cow") \
        + _eps("eat a cow", "text", 6.0, [0] * 11 + [1], "eat_cow") \
        + _eps("unconditioned", "unconditioned", None, BASE)
    text = write_report(eps, tmp_path, header_lines=["- policy: `x`"]).read_text()
    lines = text.splitlines()
    assert lines[:3] == ["# STEVE-1 evaluation", "", "- policy: `x`"]
    heads = [ln for ln in lines if ln.startswith("## ")]
    assert heads[:3] == ["## Is each prompt followed?", "## Every goal and scale",
                         "## Which achievements each goal produces"]
    section = text[text.index("## Is each prompt followed?"):text.index("## Every goal and scale")]
    assert "**1 of 2** goals followed" in section
    bullets = [ln for ln in section.splitlines() if ln.startswith("- ")]
    assert [b.split(":")[0] for b in bullets] == ["- **chop a tree**", "- **eat a cow**"]
    assert bullets[0].startswith("- **chop a tree**: followed — at guidance scale 6 the agent collects 2.3× the wood")
    assert bullets[1].startswith("- **eat a cow**: not followed — best 0.08 cows per episode at scale 6 against 0 "
                                 "unconditioned; the 95% interval (0–")
    assert section.index(bullets[-1]) < section.index("| goal |")  # the sentences, then the table


def test_foundation_rows_scored_like_the_baseline_and_not_in_the_rule(tmp_path):
    # The foundation chops a lot on the same worlds; "followed" still compares with the unconditioned agent.
    eps = _eps("chop a tree", "text", 0.0, BASE) + _eps("chop a tree", "text", 6.0, FOLLOWED) \
        + _eps("drink water", "text", 6.0, [0] * 12, "collect_drink") \
        + _eps("unconditioned", "unconditioned", None, BASE) + _eps("foundation", "foundation", None, [5] * 12)
    cells = summarize(eps)
    assert [(c["goal"], c["kind"]) for c in cells][:3] == [("chop a tree", "unconditioned"),
                                                           ("chop a tree", "foundation"), ("chop a tree", "text")]
    found = [c for c in cells if c["kind"] == "foundation"]
    assert [(c["goal"], c["targets"], c["n"]) for c in found] == [("chop a tree", ["collect_wood"], 12),
                                                                  ("drink water", ["collect_drink"], 12)]
    assert found[0]["stats"]["target/count"]["mean"] == 5.0  # scored against chop a tree's targets
    assert found[1]["stats"]["target/count"]["mean"] == 0.0  # the same episodes against drink water's
    (row, _) = prompt_following(cells)
    assert row["foundation"] == 5.0 and row["unconditioned"] == 1.0 and row["followed"]
    text = write_report(eps, tmp_path).read_text()
    assert "| goal | targets | unconditioned | foundation | scale 0 |" in text
    assert "| `chop a tree` | collect_wood | 1.00 | 5.00 | 1.00 | 6 |" in text
    assert "| *foundation* | collect_wood | no goal | 12 |" in text
    assert "| *foundation* | no goal |" in text  # the achievement matrix, once
    assert json.loads((tmp_path / "following.json").read_text())[0]["foundation"] == 5.0
    # Without a foundation policy the table has no such column.
    plain = write_report([e for e in eps if e["kind"] != "foundation"], tmp_path / "plain").read_text()
    assert "| goal | targets | unconditioned | scale 0 |" in plain and "*foundation*" not in plain


def test_other_phrasings_reported_beside_their_prompt(tmp_path):
    eps = _eps("chop a tree", "text", 0.0, BASE) + _eps("chop a tree", "text", 6.0, FOLLOWED) \
        + _eps("could you cut down that tree", "text", 0.0, BASE, of="chop a tree") \
        + _eps("could you cut down that tree", "text", 6.0, WEAK, of="chop a tree") \
        + _eps("eat a cow", "text", 6.0, [0] * 12, "eat_cow") \
        + _eps("find a cow and eat it", "text", 6.0, [0] * 12, "eat_cow", of="eat a cow") \
        + _eps("unconditioned", "unconditioned", None, BASE)
    rows = prompt_following(summarize(eps))
    assert [(r["goal"], r["paraphrase_of"], r["followed"]) for r in rows] == [
        ("chop a tree", None, True), ("could you cut down that tree", "chop a tree", False),
        ("eat a cow", None, False), ("find a cow and eat it", "eat a cow", False)]
    text = write_report(eps, tmp_path).read_text()
    section = text[text.index("## Is each prompt followed?"):text.index("## Every goal and scale")]
    assert "**1 of 2** goals followed; their other phrasings: **0 of 2**" in section
    lines = section.splitlines()
    i = lines.index(next(ln for ln in lines if ln.startswith("- **chop a tree**")))
    assert lines[i + 1].startswith("  - other phrasing **“could you cut down that tree”**: not followed — best 1.25 "
                                   "wood per episode at scale 6")
    assert ("| prompt | followed | ratio at best scale | other phrasing | followed | ratio at best scale "
            "| phrasing − prompt: scale 0 | guided | guidance's gain |") in section
    # world by world: equal at scale 0; at scale 6 WEAK - FOLLOWED = 1.25 - 2.33 = -1.08 per episode
    gap = phrasing_vs_prompt(eps)["could you cut down that tree"]
    assert gap["prompt"] == "chop a tree" and gap["scale_0"] == {"mean": 0.0, "low": 0.0, "high": 0.0, "n": 12}
    g = gap["guided"]
    assert g["n"] == 12 and g["low"] < g["mean"] < g["high"] < 0 and gap["gain"] == g
    cut = (f"−1.08 (−{abs(g['low']):.2f} to −{abs(g['high']):.2f})")
    assert (f"| `chop a tree` | yes | 2.3× (scale 6) | `could you cut down that tree` | no | 1.2× (scale 6) "
            f"| ±0 (±0 to ±0) | {cut} | {cut} |") in section
    # the cow's phrasing played no scale 0: no scale-0 difference and no gain over it
    assert "| `eat a cow` | no | — (scale 6) | `find a cow and eat it` | no | — (scale 6) | — | ±0 (±0 to ±0) | — |" \
        in section
    assert "same scales, and each phrasing plays with its prompt's seeds)" in section
    fol = {r["goal"]: r for r in json.loads((tmp_path / "following.json").read_text())}
    assert fol["could you cut down that tree"]["vs_prompt"]["guided"]["mean"] == pytest.approx(-1.0833, abs=1e-4)
    assert "vs_prompt" not in fol["chop a tree"]
    # Records whose phrasing drew its own seeds (evaluations before session 43) are paired by world only: the
    # report does not claim the same seeds.
    own = [{**e, "agent_seed": e["agent_seed"] + 100} if e.get("paraphrase_of") else e for e in eps]
    text = write_report(own, tmp_path / "own").read_text()
    assert "same scales). The last three columns" in text and "plays with its prompt's seeds" not in text
    assert "| `could you cut down that tree` | `chop a tree` | collect_wood | 1.00 |" in section


def test_phrasing_vs_prompt_pairs_world_by_world():
    """Differences are taken per world, and the interval resamples worlds: a phrasing that gets one more target than
    its prompt in every world is +1 with no spread, whatever the worlds' own spread. A phrasing better at scale 0 and
    worse guided does not net out: guidance's gain shows it."""
    spread = [0, 5, 1, 9, 2, 7]
    eps = _eps("drink water", "text", 1.0, spread, "collect_drink") \
        + _eps("drink water", "text", 2.0, spread, "collect_drink") \
        + _eps("sip from the lake", "text", 1.0, [c + 1 for c in spread], "collect_drink", of="drink water") \
        + _eps("sip from the lake", "text", 2.0, [c + 1 for c in spread], "collect_drink", of="drink water") \
        + _eps("sip from the lake", "text", 4.0, [50] * 6, "collect_drink", of="drink water") \
        + _eps("lake please", "text", 2.0, [1] * 6, "collect_drink", of="eat a cow") \
        + _eps("unconditioned", "unconditioned", None, spread)
    gaps = phrasing_vs_prompt(eps)
    assert set(gaps) == {"sip from the lake"}  # "eat a cow" was not played: nothing to pair with
    # scale 4, played by the phrasing alone, is left out; no scale 0 was played: no scale-0 difference, no gain
    assert gaps["sip from the lake"] == {"prompt": "drink water", "scale_0": None,
                                         "guided": {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 6}, "gain": None,
                                         "prompt_mean": 4.0, "same_seeds": True}
    # Scale 0 played too: the phrasing gets one more there and one fewer guided. Averaged over every scale the two
    # would cancel; per scale they do not, and the gain is -2 per world.
    both = eps + _eps("drink water", "text", 0.0, spread, "collect_drink") \
        + _eps("sip from the lake", "text", 0.0, [c + 3 for c in spread], "collect_drink", of="drink water")
    both = [{**e, "metrics": {**e["metrics"], "achievements/collect_drink": e["metrics"]["achievements/collect_drink"]
                              - 2}} if e["goal"] == "sip from the lake" and e["cond_scale"] in (1.0, 2.0) else e
            for e in both]
    g = phrasing_vs_prompt(both)["sip from the lake"]
    assert (g["scale_0"]["mean"], g["guided"]["mean"], g["gain"]["mean"]) == (3.0, -1.0, -4.0)
    # One world off, failed episodes, other worlds and missing seeds
    one_world_off = [e if not (e["goal"] == "sip from the lake" and e["episode"] == 0 and e["cond_scale"] == 1.0)
                     else {**e, "metrics": {**e["metrics"], "achievements/collect_drink": 0.0}} for e in eps]
    g = phrasing_vs_prompt(one_world_off)["sip from the lake"]["guided"]
    assert g["mean"] == pytest.approx(1.0 - 1.0 / 12) and g["low"] < g["mean"] <= g["high"] == 1.0
    failed = [{**e, "metrics": {}, "error": "step 1 failed"} if e["goal"] == "sip from the lake" and e["episode"] == 0
              else e for e in eps]
    assert phrasing_vs_prompt(failed)["sip from the lake"]["guided"]["n"] == 5  # not a 0 against the prompt's
    elsewhere = [{**e, "world_seed": e["world_seed"] + 7} if e["goal"] == "sip from the lake" and e["episode"] < 5
                 else e for e in eps]
    g = phrasing_vs_prompt(elsewhere)["sip from the lake"]["guided"]
    assert g == {"mean": 1.0, "low": None, "high": None, "n": 1}  # only world 5 is the same world: no interval
    older = [{**e, "agent_seed": e["agent_seed"] + 100} if e.get("paraphrase_of") else e for e in eps]
    assert phrasing_vs_prompt(older)["sip from the lake"]["same_seeds"] is False
    unseeded = [{k: v for k, v in e.items() if k not in ("goal_seed", "agent_seed")} for e in eps]
    assert phrasing_vs_prompt(unseeded)["sip from the lake"]["same_seeds"] is False


def test_progress_lines_with_eta():
    now = [0.0]
    lines = ProgressLines(40, every=0.25, interval_s=60.0, clock=lambda: now[0])
    assert lines.update(0, 0.0) is None
    now[0] = 30.0
    assert lines.update(4, 0.1) is None  # under 25 % and under a minute since the start
    now[0] = 50.0
    assert lines.update(10, 0.25) == "[evaluate] 10/40 episodes done, 25% of the steps, 50s elapsed, ETA 2m30s"
    now[0] = 55.0
    assert lines.update(11, 0.3) is None
    now[0] = 111.0  # a minute without a line: one anyway
    assert lines.update(12, 0.37, failed=1) == ("[evaluate] 12/40 episodes done (1 failed), 37% of the steps, "
                                                "1m51s elapsed, ETA 3m09s")
    now[0] = 120.0
    assert lines.update(30, 0.8) is not None and lines.update(30, 0.8) is None  # one line per crossing
    now[0] = 4000.0
    assert lines.finish(40) == "[evaluate] 40/40 episodes done in 1h06m"


def test_chunks_never_mix_policies():
    jobs = [{"policy": "policy", "i": i} for i in range(5)] + [{"policy": "foundation", "i": i} for i in range(3)]
    chunks = chunk_jobs(jobs, 4)
    assert [[j["i"] for j in c] for c in chunks] == [[0, 1, 2, 3], [4], [0, 1, 2]]
    assert all(len({j["policy"] for j in c}) == 1 for c in chunks)


def test_count_table_shows_a_prompt_that_goes_for_another_prompt_s_target(tmp_path):
    """Shares of episodes hide it when every episode drinks a little: the count table shows "chop a tree" drinking
    four times what the unconditioned agent drinks, while the share table reads 1.00 for both."""
    eps = _eps("unconditioned", "unconditioned", None, [5] * 12, "collect_drink") \
        + _eps("chop a tree", "text", 2.0, [20] * 12, "collect_drink") \
        + _eps("drink water", "text", 2.0, [10] * 12, "collect_drink")
    for ep in eps:  # every episode chops a log; "chop a tree" is scored on wood
        ep["metrics"]["achievements/collect_wood"] = 1.0
        if ep["goal"] == "chop a tree":
            ep["targets"] = ["collect_wood"]
    text = write_report(eps, tmp_path).read_text()
    shares = text[text.index("## Which achievements each goal produces"):text.index("## How much of each target")]
    counts = text[text.index("## How much of each target"):text.index("## Plots")]
    assert "| goal | scale | collect_drink | collect_wood |" in counts
    assert "| `chop a tree` | 2 | 1.00 | 1.00 |" in shares and "| *no goal* | uncond. | 1.00 | 1.00 |" in shares
    assert "| `chop a tree` | 2 | 20.00 | 1.00 |" in counts
    assert "| `drink water` | 2 | 10.00 | 1.00 |" in counts
    assert counts.count("| *no goal* | uncond. | 5.00 | 1.00 |") == 1  # the baseline once, whichever goal scores it
