"""Paraphrases of the demonstrators' goals: template phrasings to train on, held-out phrasings to test on.

The demonstrators caption each goal segment with one of a few fixed captions (`GOALS[name].captions`), so an
embedder trained on the recordings alone knows those sentences and little else. Here every goal gets

- `TEMPLATES[goal]`: verb/object pairs that make sense for it ("chop" + "a tree", "gather" + "wood", never "chop" +
  "wood from a tree"), each phrase dropped into a set of sentence frames ("{p}", "please {p}", "I want you to {p}").
  `template_phrases()` expands them deterministically (sorted; no randomness), several hundred per goal. The
  embedder's text tower sees them in place of the recorded caption (`steve1 train-embedder paraphrases=0.5`).
- `HELDOUT[goal]`: hand-written phrasings with other sentence structures ("could you cut down that tree", "find a
  cow and eat it") that no template produces and that are no caption (`tests/test_phrases.py` checks both). The
  embedder's validation reports goal retrieval by them beside the same numbers for the captions.

The held-out phrases mostly reuse the templates' and captions' words (tree, wood, sapling, table, cow, water,
zombie ...) in new structures and with some new words around them ("could you", "I need", "for me", "sip", "beef"):
they measure whether the text side generalises beyond the sentences it was trained on, not whether it knows words it
never saw (the world embedder's text tower starts from random weights, so an unseen word carries nothing).
"""
from __future__ import annotations

from functools import lru_cache

from steve1_ray.world.demonstrators import GOALS

# Sentence frames: `{p}` is a verb phrase ("chop a tree"). Held-out phrases use other structures.
FRAMES: tuple[str, ...] = (
    "{p}", "go {p}", "{p} now", "please {p}", "{p} please", "now {p}", "I want you to {p}", "you should {p}",
    "try to {p}", "time to {p}", "let's {p}", "your task is to {p}", "your goal is to {p}",
)

# goal -> ((verbs, objects), ...): every verb of a group goes with every object of the same group. An empty
# object makes the verb the whole phrase ("explore", "go to sleep").
TEMPLATES: dict[str, tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]] = {
    "collect_wood": (
        (("chop", "cut", "punch", "hit", "fell", "chop down", "cut down"), ("a tree", "the tree", "trees")),
        (("collect", "gather", "get", "harvest", "take", "pick up"),
         ("wood", "some wood", "logs", "a log", "wood from a tree", "wood from the trees")),
    ),
    "collect_sapling": (
        (("collect", "gather", "get", "grab", "find", "look for"),
         ("a sapling", "the sapling", "saplings", "some saplings", "a sapling from the grass", "saplings in the grass")),
    ),
    "place_plant": (
        (("plant", "place", "put down", "set down"), ("a sapling", "the sapling", "a seedling")),
        (("plant", "grow"), ("a tree", "a new tree")),
        (("place", "put", "plant"), ("a sapling on the grass", "a sapling in the ground")),
    ),
    "place_table": (
        (("place", "build", "put down", "set up", "make", "craft"),
         ("a crafting table", "a table", "a workbench", "a crafting bench")),
    ),
    "make_wood_pickaxe": (
        (("make", "craft", "build", "create"), ("a wooden pickaxe", "a wood pickaxe", "a pickaxe", "a wooden pick")),
    ),
    "make_wood_sword": (
        (("make", "craft", "build", "create"), ("a wooden sword", "a wood sword", "a sword")),
    ),
    "collect_stone": (
        (("mine", "collect", "dig", "get", "gather", "break", "quarry", "pick up"),
         ("stone", "some stone", "cobblestone", "rocks", "stone blocks", "a stone block")),
    ),
    "place_stone": (
        (("place", "put down", "set down", "lay"), ("a stone block", "a block of stone", "stone", "some stone")),
        (("build with", "build a wall of"), ("stone", "cobblestone")),
    ),
    "make_stone_pickaxe": (
        (("make", "craft", "build", "create"), ("a stone pickaxe", "a stone pick", "a pickaxe of stone")),
    ),
    "make_stone_sword": (
        (("make", "craft", "build", "create"), ("a stone sword", "a sword of stone")),
    ),
    "place_furnace": (
        (("place", "build", "put down", "set up", "make", "craft"), ("a furnace", "the furnace", "a smelter")),
    ),
    "collect_coal": (
        (("mine", "collect", "dig", "get", "gather", "pick up"), ("coal", "some coal", "coal ore")),
        (("dig for", "look for", "search for"), ("coal", "coal ore")),
    ),
    "collect_drink": (
        (("drink", "get", "have"), ("water", "some water", "a drink of water", "a drink")),
        (("drink from",), ("the lake", "a lake", "the water", "a pond", "the river")),
        (("quench",), ("your thirst",)),
    ),
    "eat_cow": (
        (("eat", "hunt", "kill", "attack", "hit", "chase"), ("a cow", "the cow", "cows", "a cow for food")),
        (("get", "find", "eat"), ("food", "some food", "meat", "some meat")),
    ),
    "defeat_zombie": (
        (("fight", "kill", "defeat", "attack", "hit", "slay", "beat"),
         ("the zombie", "a zombie", "zombies", "that zombie", "the monster")),
    ),
    "flee": (
        (("run away from", "escape from", "get away from", "flee from", "hide from", "avoid", "stay away from"),
         ("the zombie", "a zombie", "zombies", "the monster", "danger")),
        (("flee", "run away", "escape", "retreat"), ("",)),
    ),
    "sleep": (
        (("sleep", "go to sleep", "take a nap", "rest", "nap", "go to bed"), ("",)),
        (("sleep", "rest"), ("through the night", "until morning", "until the sun rises")),
    ),
    "explore": (
        (("explore",), ("", "the area", "the world", "the map", "the land")),
        (("wander", "walk", "roam", "travel"), ("around", "around the map", "around the world", "around the area")),
        (("look around",), ("", "the area")),
    ),
}

# goal -> phrasings no template produces and that are no caption (other structures; see the module docstring)
HELDOUT: dict[str, tuple[str, ...]] = {
    "collect_wood": ("could you cut down that tree", "go and get me some logs", "I need wood",
                     "knock down a tree for its wood"),
    "collect_sapling": ("pick up a sapling from the grass", "search the grass for saplings",
                        "could you find me a sapling", "I need a sapling"),
    "place_plant": ("stick a sapling in the ground", "can you plant that sapling",
                    "put the sapling you have into the grass", "grow a new tree from a sapling"),
    "place_table": ("set up a crafting table nearby", "I need a workbench here", "could you put a table down",
                    "use your wood to build a crafting table"),
    "make_wood_pickaxe": ("use the table to make a wooden pickaxe", "I need a pickaxe made of wood",
                          "could you craft me a pickaxe", "turn wood into a pickaxe"),
    "make_wood_sword": ("use the table to make a wooden sword", "I need a sword made of wood",
                        "could you craft me a sword", "turn wood into a sword"),
    "collect_stone": ("break some rocks with your pickaxe", "could you mine some stone", "I need stone",
                      "dig into the stone"),
    "place_stone": ("put a stone block on the ground", "could you place some stone here",
                    "build a small wall out of stone", "drop a block of stone next to you"),
    "make_stone_pickaxe": ("use stone to make a better pickaxe", "could you craft me a stone pickaxe",
                           "I need a pickaxe made of stone", "upgrade to a stone pickaxe"),
    "make_stone_sword": ("use stone to make a better sword", "could you craft me a stone sword",
                         "I need a sword made of stone", "upgrade to a stone sword"),
    "place_furnace": ("set a furnace down here", "could you build me a furnace", "use stone to build a furnace",
                      "I need a furnace nearby"),
    "collect_coal": ("find some coal in the rocks", "could you mine coal for me", "break the coal ore",
                     "I need coal"),
    "collect_drink": ("take a sip from the lake", "you look thirsty, drink some water",
                      "could you drink from the water", "walk to the water and drink"),
    "eat_cow": ("find a cow and eat it", "I am hungry, go eat a cow", "could you hunt down a cow",
                "get some meat from a cow"),
    "defeat_zombie": ("could you kill that zombie", "hit the zombie until it dies", "fight off the zombie",
                      "go and fight that zombie"),
    "flee": ("the zombie is coming, run", "could you get away from the zombie", "keep away from the zombie",
             "run from the zombie as fast as you can"),
    "sleep": ("it is night, go to sleep", "could you sleep for a while", "lie down and sleep", "get some sleep"),
    "explore": ("could you explore the area", "walk around and see what is there", "explore the land around you",
                "go and wander around for a while"),
}


def _expand(goal: str) -> tuple[str, ...]:
    phrases = {f"{v} {o}".strip() for verbs, objects in TEMPLATES[goal] for v in verbs for o in objects}
    out = set()
    for p in phrases:
        for frame in FRAMES:
            s = frame.format(p=p)
            if "go go " not in s:  # "go" + "go to sleep"
                out.add(s)
    return tuple(sorted(out))


@lru_cache(maxsize=None)
def template_phrases() -> dict[str, tuple[str, ...]]:
    """goal -> every template phrasing of it, sorted (the same on every call and every machine)."""
    return {goal: _expand(goal) for goal in sorted(TEMPLATES)}


def heldout_phrases() -> dict[str, tuple[str, ...]]:
    """goal -> its held-out phrasings (no template, no caption)."""
    return {goal: HELDOUT[goal] for goal in sorted(HELDOUT)}


def captions() -> dict[str, tuple[str, ...]]:
    """goal -> the demonstrators' captions of it."""
    return {goal: GOALS[goal].captions for goal in sorted(GOALS)}
