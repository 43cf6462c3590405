"""Packed hindsight relabeling (STEVE-1 Algorithm 1), seeded per (seed, epoch, sequence).

For an episode of N frames, goal timesteps are drawn over the whole episode: `cur = 0`; repeat
`cur += randint(min_btwn_goals, max_btwn_goals)` (high exclusive); if `N − cur < min_btwn_goals` then
`cur = N − 1`; until `cur == N − 1`. Timestep t is conditioned on `embeds[goal_i]` for the first goal with
`t <= goal_i + 1` (the frame right after a goal still shows it), i.e. always a future 16-frame clip.
With probability `p_uncond` the whole sequence gets zero embeddings.

Spacings below 15 frames (ours, for worlds whose activities are shorter than Minecraft's: a crafter goal
takes about 16 frames, a tree in Minecraft 100+) are allowed: goals are never placed before frame 15, the
first with a 16-frame clip, so the early frames of an episode share that first goal. With
`min_btwn_goals >= 15` (the original's range) this never triggers and the draws are the original's.

The original draws from the global NumPy RNG inside DataLoader workers; here each sequence gets its own
generator `default_rng([seed, epoch, index])`, so goals are fresh every epoch, identical on resume and on any
number of workers, and fixed for validation (`epoch = val_seed`).
"""
from __future__ import annotations

import numpy as np

NONE_EMBED_OFFSET = 15  # embeds[0..14] are not defined: a goal clip needs 16 frames


def sequence_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def goal_timesteps(n_frames: int, min_btwn_goals: int, max_btwn_goals: int,
                   rng: np.random.Generator) -> np.ndarray:
    goals = []
    cur = 0
    while cur < n_frames - 1:
        cur = max(cur + int(rng.integers(min_btwn_goals, max_btwn_goals)), NONE_EMBED_OFFSET)
        if n_frames - cur < min_btwn_goals:
            cur = n_frames - 1
        goals.append(cur)
    return np.asarray(goals, dtype=np.int64)


def goal_index_per_timestep(goals: np.ndarray, timesteps: np.ndarray) -> np.ndarray:
    """For each timestep t, the goal timestep it is conditioned on (the first goal g with t <= g + 1)."""
    return goals[np.searchsorted(goals + 1, timesteps, side="left")]


EVENT_PICKS = ("next", "last", "use")


def event_goals(goal_t: np.ndarray, timesteps: np.ndarray, events: np.ndarray, horizon: int,
                n_frames: int, pick: str = "next", links: np.ndarray | None = None) -> np.ndarray:
    """Ours: a timestep with an event e >= t at most `horizon` frames ahead takes the goal e + 1 (the clip ending
    one frame after frame e, the first frame whose recorded state shows the event; the others keep their spaced
    goal.

    `pick` says which event when several lie in [t, t + horizon]: `next`, the nearest one (what the frame is
    about to achieve), or `last`, the farthest one, so that the steps towards a goal that needs others first
    (two logs, then a table) are conditioned on that goal rather than on each prerequisite; or `use`, the nearest
    one unless what it gained was used by a later event within the horizon (`links[k]`: the first event that used
    an item event k gained, -1 if none; `steve1_ray.data.pipeline.event_links`), then that one, followed as a
    chain while the links stay within the horizon (in crafter mostly one step: a placed table is no inventory
    item, so nothing links from it). `last` also takes an unrelated drink that comes after the table: on the
    release's recordings, horizon 40, the goal clip of a frame of the five evaluated goals shows that frame's own
    demonstrator goal 26 % of the time (`next` 77 %, `use` 71 %), while `use` gives 80 % of the frames that gather
    wood for a table the table's clip (`next` 29 %, `last` 40 %; `benchmarks/goal_labels.py`). Without links
    `use` is `next`.
    """
    if pick not in EVENT_PICKS:
        raise ValueError(f"pick={pick!r}: one of {EVENT_PICKS}")
    events = np.asarray(events, np.int64)
    if horizon <= 0 or len(events) == 0:
        return goal_t
    if pick in ("next", "use"):
        k = np.searchsorted(events, timesteps, side="left")
        has = k < len(events)
        if pick == "use" and links is not None and has.any():
            links = np.asarray(links, np.int64)
            if len(links) != len(events) or not np.all(
                (links == -1) | ((links > np.arange(len(events))) & (links < len(events)))):
                raise ValueError("links must give, per event, a later event's index or -1")
            k = np.clip(k, 0, len(events) - 1)
            for _ in range(len(events)):  # each step moves to a later event: at most len(events) steps
                nxt = links[k]
                ok = has & (nxt >= 0) & (events[np.maximum(nxt, 0)] - timesteps <= horizon)
                if not ok.any():
                    break
                k = np.where(ok, nxt, k)
    else:
        k = np.searchsorted(events, timesteps + horizon, side="right") - 1
        has = k >= 0
    ev = np.where(has, events[np.clip(k, 0, len(events) - 1)], -1)
    target = np.minimum(ev + 1, n_frames - 1)
    use = has & (ev >= timesteps) & (ev - timesteps <= horizon) & (target >= NONE_EMBED_OFFSET)
    return np.where(use, target, goal_t)


def relabel(embeds: np.ndarray, embed_valid: np.ndarray | None, start: int, T: int, min_btwn_goals: int,
            max_btwn_goals: int, p_uncond: float, rng: np.random.Generator, events: np.ndarray | None = None,
            event_horizon: int = 0, event_pick: str = "next", event_links: np.ndarray | None = None,
            goal_override: np.ndarray | None = None):
    """Goal embeddings for frames [start, start + T) of an episode whose per-frame embeds are `embeds` (N, D).
    With `event_horizon > 0`, frames at most that far before one of `events` take its goal (`event_goals`,
    the nearest, with `event_pick="last"` the farthest of them, with "use" the nearest or the one that used what it
    gained, `event_links`);
    `goal_override` (T,): a goal timestep per frame (>= 0) that replaces the spaced or event goal, -1 to keep it
    (segment goals, `train.data.segment_goal_frames`); the random draws are the same either way.

    Returns (goal_embed (T, D) float32, goal_t (T,) int64 goal timestep per frame, uncond bool).
    """
    n_frames = len(embeds)
    goals = goal_timesteps(n_frames, min_btwn_goals, max_btwn_goals, rng)
    timesteps = np.arange(start, start + T)
    goal_t = goal_index_per_timestep(goals, timesteps)
    if event_horizon > 0 and events is not None:
        goal_t = event_goals(goal_t, timesteps, events, event_horizon, n_frames, event_pick, event_links)
    if goal_override is not None:
        goal_t = np.where(np.asarray(goal_override) >= 0, goal_override, goal_t)
    if embed_valid is not None and not bool(np.all(embed_valid[goal_t])):
        bad = int(goal_t[~embed_valid[goal_t]][0])
        raise ValueError(f"goal timestep {bad} has no valid embedding (embed_valid is False): the embedder's "
                         f"window is longer than {NONE_EMBED_OFFSET + 1} frames; raise min_btwn_goals")
    uncond = bool(rng.random() < p_uncond)
    goal_embed = np.asarray(embeds[goal_t], dtype=np.float32)
    if uncond:
        goal_embed = np.zeros_like(goal_embed)
    return goal_embed, goal_t, uncond


def sequence_starts(n_frames: int, T: int) -> list[int]:
    """Start frames of the T-frame sequences of an episode: from 15 in steps of T, the last moved to end at N.

    Episodes shorter than T + 15 frames give no sequence.
    """
    if n_frames < T + NONE_EMBED_OFFSET:
        return []
    starts = []
    for start in range(NONE_EMBED_OFFSET, n_frames, T):
        starts.append(min(start, n_frames - T))
    return starts
