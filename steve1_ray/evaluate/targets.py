"""Which achievements a goal asks for: the prompt -> crafter achievement table and its lookup.

`targets_for(goal, overrides)` looks a goal up in, in order, the evaluation config's
`prompt_achievements`, the embedded world's training captions (`caption_achievements`) and the
built-in `PROMPT_ACHIEVEMENTS` (documented in docs/evaluation.md); a goal that is itself an
achievement name (`CRAFTER_ACHIEVEMENTS`) targets that one.
"""
from __future__ import annotations

_WOOD = ["collect_wood"]
# Prompt (lower case, stripped) -> crafter achievements that mean "the agent did what it was asked".
# STEVE-1's own text prompts (steve1/run_agent/paper_prompts.py) are mapped to their nearest crafter
# achievement; "go explore" has none (travel distance is its metric).
PROMPT_ACHIEVEMENTS: dict[str, list[str]] = {
    "collect wood": _WOOD, "chop a tree": _WOOD, "chop down a tree": _WOOD, "chop down the tree": _WOOD,
    "gather wood": _WOOD, "get wood": _WOOD, "break tree": _WOOD,
    "chop down the tree, gather wood, pick up wood, chop it down, break tree": _WOOD,
    "collect sapling": ["collect_sapling"], "collect a sapling": ["collect_sapling"],
    "collect seeds": ["collect_sapling"], "break grass": ["collect_sapling"],
    "break tall grass, break grass, collect seeds, punch the ground, run around in circles getting seeds "
    "from bushes": ["collect_sapling"],
    "place a table": ["place_table"], "place table": ["place_table"], "place a crafting table": ["place_table"],
    "build a table": ["place_table"],
    "drink water": ["collect_drink"], "drink": ["collect_drink"],
    "eat cow": ["eat_cow"], "eat a cow": ["eat_cow"], "hunt a cow": ["eat_cow"],
    "collect stone": ["collect_stone"], "mine stone": ["collect_stone"],
    "collect coal": ["collect_coal"], "mine coal": ["collect_coal"],
    "collect iron": ["collect_iron"], "collect diamond": ["collect_diamond"],
    "place stone": ["place_stone"], "place a stone": ["place_stone"],
    "place a plant": ["place_plant"], "plant a sapling": ["place_plant"],
    "place a furnace": ["place_furnace"], "place furnace": ["place_furnace"],
    "eat a plant": ["eat_plant"], "eat plant": ["eat_plant"],
    "make a wood pickaxe": ["make_wood_pickaxe"], "make wood pickaxe": ["make_wood_pickaxe"],
    "make a stone pickaxe": ["make_stone_pickaxe"], "make an iron pickaxe": ["make_iron_pickaxe"],
    "make a wood sword": ["make_wood_sword"], "make wood sword": ["make_wood_sword"],
    "make a stone sword": ["make_stone_sword"], "make an iron sword": ["make_iron_sword"],
    "defeat a zombie": ["defeat_zombie"], "defeat zombie": ["defeat_zombie"],
    "defeat a skeleton": ["defeat_skeleton"], "sleep": ["wake_up"], "go to sleep": ["wake_up"],
}
CRAFTER_ACHIEVEMENTS = (
    "collect_coal", "collect_diamond", "collect_drink", "collect_iron", "collect_sapling", "collect_stone",
    "collect_wood", "defeat_skeleton", "defeat_zombie", "eat_cow", "eat_plant", "make_iron_pickaxe",
    "make_iron_sword", "make_stone_pickaxe", "make_stone_sword", "make_wood_pickaxe", "make_wood_sword",
    "place_furnace", "place_plant", "place_stone", "place_table", "wake_up")


def caption_achievements() -> dict[str, list[str]]:
    """The embedded world's training captions -> achievements (`steve1_ray.world.demonstrators.GOALS`),
    so a policy is asked in the words its recordings were captioned with."""
    try:
        from steve1_ray.world.demonstrators import GOALS
    except ImportError:  # the world package without its demonstrators: only the built-in table
        return {}
    return {c: ([g.achievement] if g.achievement else []) for g in GOALS.values() for c in g.captions}


def targets_for(goal: str, overrides: dict[str, list[str]] | None = None) -> list[str]:
    """Target achievements of a goal. Looked up, in order, in the config's `prompt_achievements`, the
    world's training captions, `PROMPT_ACHIEVEMENTS`; a goal that is itself an achievement name
    (`collect_wood`, or "collect wood" with spaces) targets that one; anything else has none."""
    key = " ".join(goal.lower().split())
    for table in (overrides or {}, caption_achievements(), PROMPT_ACHIEVEMENTS):
        norm = {" ".join(k.lower().split()): v for k, v in table.items()}
        if key in norm:
            return list(norm[key])
    name = key.replace(" ", "_")
    return [name] if name in CRAFTER_ACHIEVEMENTS else []
