"""Training sequences: T-frame episode segments, relabeled when loaded, batched per worker in a fixed order.

Why not Ray Data here: a sample is a whole T-frame sequence whose pieces must run in order on the same batch
rows, and resuming must continue with exactly the sequences (and goals) the interrupted run would have seen.
So the order is a pure function of (seed, epoch): a permutation of all sequences, dealt to worker `rank` as
`perm[rank::world_size]` and cut into groups of `grad_accum` micro-batches of `batch_size` sequences. The data
position in a checkpoint is just (epoch, group). Each worker reads its own sequences straight from the
Parquet shards with a small thread pool (JPEG decoding releases the GIL) that runs `prefetch_batches` ahead.

A batch is a dict of tensors:
    img        (B, T, 128, 128, 3) uint8 RGB
    goal_embed (B, T, D) float32    (zeros for an unconditional sequence)
    buttons    (B, T) int64, camera (B, T) int64
    first      (B, T) bool           True at t = 0 only
    uncond     (B,) bool
"""
from __future__ import annotations

import collections
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterator, Mapping, Protocol

import numpy as np
import torch

from steve1_ray.train.relabel import NONE_EMBED_OFFSET, relabel, sequence_rng, sequence_starts


class EpisodeSource(Protocol):
    """Where episodes come from: Parquet shards in production, arrays in memory in tests."""

    def length(self, episode_id: str) -> int: ...

    def read(self, episode_id: str, start: int, stop: int) -> dict:
        """frames (n, 128, 128, 3) uint8, buttons (n,), camera (n,) for frames [start, stop)."""

    def embeds(self, episode_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(embeds (N, D) float32, embed_valid (N,) bool) for the whole episode."""

    def events(self, episode_id: str) -> np.ndarray | None:
        """Sorted frame indices whose action achieved something (`stats` rose), or None if not recorded."""

    def event_links(self, episode_id: str) -> np.ndarray | None:
        """Per event, the index of the first later event that used an item it gained, or -1 (None: not recorded;
        `steve1_ray.data.pipeline.event_links`)."""


class InMemoryEpisodes:
    """Episodes held as arrays: {id: {"frames", "buttons", "camera", "embeds"[, "embed_valid"]}}."""

    def __init__(self, episodes: dict[str, dict]):
        self.episodes = episodes

    def episode_ids(self) -> list[str]:
        return list(self.episodes)

    def length(self, episode_id: str) -> int:
        return len(self.episodes[episode_id]["buttons"])

    def read(self, episode_id: str, start: int, stop: int) -> dict:
        ep = self.episodes[episode_id]
        return {k: ep[k][start:stop] for k in ("frames", "buttons", "camera")}

    def embeds(self, episode_id: str) -> tuple[np.ndarray, np.ndarray]:
        ep = self.episodes[episode_id]
        valid = ep.get("embed_valid")
        if valid is None:
            valid = np.arange(len(ep["embeds"])) >= NONE_EMBED_OFFSET
        return ep["embeds"], valid

    def events(self, episode_id: str) -> np.ndarray | None:
        events = self.episodes[episode_id].get("events")
        return None if events is None else np.asarray(events, np.int64)

    def event_links(self, episode_id: str) -> np.ndarray | None:
        links = self.episodes[episode_id].get("event_links")
        return None if links is None else np.asarray(links, np.int64)


class ShardEpisodes:
    """Episodes of a Parquet shard dataset (`steve1_ray.data.shards`; a local path or a URI).

    Frames are read per sequence (only the segments overlapping it, only its frames decoded); the small
    per-episode embeddings are cached, since relabeling draws goals over the whole episode.
    """

    def __init__(self, root: str, cache_episodes: int = 256):
        from steve1_ray.data import shards

        self.root = str(root)
        self._shards = shards
        entries = shards.list_episodes(self.root)
        self._lengths = {eid: int(e["n_frames"]) for eid, e in entries.items()}
        self._events = {eid: np.asarray(e["events"], np.int64) for eid, e in entries.items() if "events" in e}
        self._links = {eid: np.asarray(e["event_links"], np.int64) for eid, e in entries.items()
                       if e.get("event_links") is not None}
        self._embeds: collections.OrderedDict[str, tuple] = collections.OrderedDict()
        self._cache_size = cache_episodes
        self._lock = threading.Lock()

    def episode_ids(self) -> list[str]:
        return list(self._lengths)

    def length(self, episode_id: str) -> int:
        try:
            return self._lengths[episode_id]
        except KeyError:
            raise KeyError(f"episode {episode_id!r} is not a finished episode of {self.root}; is the sampling "
                           f"file from another dataset?") from None

    def read(self, episode_id: str, start: int, stop: int) -> dict:
        return self._shards.load_episode(self.root, episode_id, start, stop, columns=["frames", "buttons", "camera"])

    def embeds(self, episode_id: str) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if episode_id in self._embeds:
                self._embeds.move_to_end(episode_id)
                return self._embeds[episode_id]
        ep = self._shards.load_episode(self.root, episode_id, columns=["embeds", "embed_valid"])
        out = (np.asarray(ep["embeds"], dtype=np.float32), np.asarray(ep["embed_valid"], dtype=bool))
        with self._lock:
            self._embeds[episode_id] = out
            while len(self._embeds) > self._cache_size:
                self._embeds.popitem(last=False)
        return out

    def events(self, episode_id: str) -> np.ndarray | None:
        """From the episode's index entry; None for datasets written before events were recorded."""
        return self._events.get(episode_id)

    def event_links(self, episode_id: str) -> np.ndarray | None:
        """From the episode's index entry; None for datasets written before links were recorded."""
        return self._links.get(episode_id)

    def window_embeddings(self, width: int) -> np.ndarray:
        """Every valid window embedding of the dataset (its goals), episode after episode: (N, D) float32;
        (0, width) for a dataset without episodes. Read once, not cached (for fits over the whole dataset)."""
        rows = []
        for eid in self.episode_ids():
            ep = self._shards.load_episode(self.root, eid, columns=["embeds", "embed_valid"])
            rows.append(np.asarray(ep["embeds"], np.float32)[np.asarray(ep["embed_valid"], bool)])
        return np.concatenate(rows) if rows else np.zeros((0, width), np.float32)


class MultiSource:
    """Several shard datasets behind one EpisodeSource; episode keys are `<root>\t<episode_id>`."""

    def __init__(self, roots: list[str]):
        self.sources = {root: ShardEpisodes(root) for root in roots}

    @staticmethod
    def key(root: str, episode_id: str) -> str:
        return f"{root}\t{episode_id}"

    def _split(self, key: str):
        root, _, eid = key.rpartition("\t")
        return self.sources[root], eid

    def episode_ids(self) -> list[str]:
        return [self.key(r, e) for r, src in self.sources.items() for e in src.episode_ids()]

    def length(self, key: str) -> int:
        src, eid = self._split(key)
        return src.length(eid)

    def read(self, key: str, start: int, stop: int) -> dict:
        src, eid = self._split(key)
        return src.read(eid, start, stop)

    def embeds(self, key: str):
        src, eid = self._split(key)
        return src.embeds(eid)

    def events(self, key: str):
        src, eid = self._split(key)
        return src.events(eid)

    def event_links(self, key: str):
        src, eid = self._split(key)
        return src.event_links(eid)


def recording_meta(recording: str, option: str = "free_play") -> dict[str, dict]:
    """{episode name: its `meta/<name>.json` record} of a recording (`steve1 record out=`); `option` names the
    setting that pointed here, for the error messages."""
    from steve1_ray.data.shards import Store

    store = Store(recording)
    files = store.list("meta", ".json")
    if not files:
        raise FileNotFoundError(f"{option}={recording!r}: no meta/*.json there; point it at the folder "
                                f"`steve1 record out=` wrote")
    metas = {}
    for file in files:
        try:
            meta = store.read_json(f"meta/{file}")
            metas[str(meta.get("name") or file.removesuffix(".json"))] = meta
        except (ValueError, AttributeError) as e:  # bad JSON, or JSON that is not an object
            raise ValueError(f"{option}={recording!r}: meta/{file} is not an episode record ({e})") from None
    return metas


def recording_focus(recording: str) -> dict[str, str | None]:
    """{episode name: its task's goal, or None for free play} from a recording's `meta/<name>.json`
    (`steve1 record`)."""
    return {name: meta.get("focus") or None for name, meta in recording_meta(recording).items()}


def recording_keys(names, keys: list[str], recording: str, option: str) -> dict[str, str]:
    """{dataset key: recording episode name} for the keys (`<root>\t<id>` or `<id>`) that are episodes of the
    recording whose episode names are `names`. An episode id is the recording's name (`sources=[local:<out>/
    contractor]`) or `<tag>-<name>` (`sources=[contractor:<out>/index.json]`). Refused: a recording none of whose
    names is in the data, and a name found under two dataset roots (two recordings with the same names mixed)."""
    from steve1_ray.data.sources import safe_id

    by_id = {safe_id(name): name for name in names}
    roots: dict[str, set[str]] = {}
    found = {}
    for key in keys:
        root, _, eid = key.rpartition("\t")
        sid = eid if eid in by_id else eid.partition("-")[2]
        if sid not in by_id:
            continue
        roots.setdefault(sid, set()).add(root)
        found[key] = by_id[sid]
    if not roots:
        raise ValueError(f"{option}={recording!r}: none of its {len(by_id)} episodes is in the training data: "
                         f"point {option} at the recording this dataset was made from")
    twice = sorted(name for name, where in roots.items() if len(where) > 1)
    if twice:
        raise ValueError(f"{option}={recording!r}: episode {twice[0]!r} (and {len(twice) - 1} more) is in "
                         f"several datasets ({sorted(roots[twice[0]])}); record with another name_prefix")
    return found


def task_keys(recording: str, keys: list[str]) -> frozenset[str]:
    """The dataset keys of `recording`'s task episodes (`recording_keys`); a name no key matches is free play
    that is not in the data."""
    focus = recording_focus(recording)
    return frozenset(key for key, name in recording_keys(focus, keys, recording, "free_play").items()
                     if focus[name])


def segment_goal_frames(recording: str, keys: list[str], names: dict | None = None) -> dict[str, np.ndarray]:
    """Per dataset key of `recording`'s episodes, (N,) int64 over the episode's kept frames: for a frame inside
    one of the demonstrator's achieved segments (`meta/<name>.json` `segments`, `success`), the segment's last
    kept frame, whose clip ends the segment (the clips the world prior learns each caption's goals from,
    `train.prior.world_pairs`); -1 elsewhere (failed segments, frames no segment covers).

    A run of achieved segments that work towards the next one's goal (`world.demonstrators.FOCUS_NEEDS`: the
    logs chopped right before a table) takes that segment's clip instead, as `goal_event_pick=use` does for
    events: the steps that gather what a goal needs are conditioned on that goal.

    `names`, when given, is filled with {dataset key: {goal timestep: the goal's name}} (e.g. `collect_wood`): what
    each frame's goal is a clip of (`goal_balance_weights`)."""
    from steve1_ray.data.contractor import EpisodeError, kept_index
    from steve1_ray.world.demonstrators import FOCUS_NEEDS

    if "://" in str(recording):
        raise ValueError(f"goal_segments={recording!r}: a local recording folder is needed (its jsonl files are read "
                         f"to map lines to frames)")
    metas = recording_meta(recording, "goal_segments")
    out = {}
    for key, name in recording_keys(metas, keys, recording, "goal_segments").items():
        meta = metas[name]
        actions = Path(recording) / str(meta.get("actions", ""))
        try:
            frame_of, keep = kept_index(actions)
        except EpisodeError as e:
            raise ValueError(f"goal_segments={recording!r}: episode {name!r}: {e}") from None
        segs = []  # (frames, goal, end frame or -1 when not achieved), in episode order
        try:
            segments = sorted(((max(int(g["start"]), 0), min(int(g["end"]), len(keep)), g) for g in
                               meta.get("segments") or []), key=lambda x: x[0])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"goal_segments={recording!r}: episode {name!r}: a segment without a numeric start "
                             f"and end ({e!r})") from None
        for start, end, seg in segments:
            kept = np.flatnonzero(keep[start:end]) + start
            if len(kept):
                segs.append((frame_of[kept], seg.get("goal"), int(frame_of[kept[-1]]) if seg.get("success") else -1))
        target = [end for _, _, end in segs]
        for i in reversed(range(len(segs) - 1)):
            (_, goal, end), (_, nxt_goal, nxt_end) = segs[i], segs[i + 1]
            if end < 0 or nxt_end < 0:
                continue
            if FOCUS_NEEDS.get(nxt_goal) == goal:
                target[i] = nxt_end
            elif nxt_goal == goal and target[i + 1] != nxt_end:  # a run of the same prerequisite
                target[i] = target[i + 1]
        goal_of = np.full(int(keep.sum()), -1, np.int64)
        for (frames, _, _), t in zip(segs, target):
            if t >= 0:
                goal_of[frames] = t
        out[key] = goal_of
        if names is not None:  # a target is the end of the segment whose clip it is
            names[key] = {end: str(goal) for _, goal, end in segs if end >= 0}
    return out


def goal_balance_weights(dataset: "SequenceDataset", names: Mapping[str, Mapping[int, str]], power: float
                         ) -> tuple[np.ndarray, dict[str, tuple[float, float]]]:
    """Per sequence of `dataset`, the probability that an epoch draws it, so that the segment goals its frames are
    conditioned on come up in proportion to (their count) ** (1 - power): each sequence's class is the segment goal
    most of its segment-goal frames take (`segment_goal_frames`; "" when no frame has one), weighted by
    count(class) ** -power; 1 = every class equally often. Returns (probabilities, {class: (share of sequences,
    share of draws)})."""
    classes = []
    for spec in dataset.sequences:
        goal_of = dataset.segment_goals.get(spec.episode_id)
        named = names.get(spec.episode_id, {})
        frames = [] if goal_of is None else [named.get(int(t), "") for t in goal_of[spec.start:spec.start + dataset.T]
                                             if t >= 0]
        classes.append(collections.Counter(frames).most_common(1)[0][0] if frames else "")
    names_, code = np.unique(np.array(classes, dtype=object).astype(str), return_inverse=True)
    count = np.bincount(code)
    w = count[code].astype(np.float64) ** -float(power)
    w /= w.sum()
    drawn = np.bincount(code, weights=w)
    shares = {str(c): (count[k] / len(classes), float(drawn[k])) for k, c in enumerate(names_)}
    return w, shares


@dataclass(frozen=True)
class SequenceSpec:
    episode_id: str
    start: int


class SequenceDataset:
    """All T-frame sequences of some episodes; `load(index, epoch)` reads and relabels one."""

    def __init__(self, source: EpisodeSource, episode_ids: list[str], T: int, min_btwn_goals: int,
                 max_btwn_goals: int, p_uncond: float, seed: int, event_horizon: int = 0,
                 event_pick: str = "next", tasks: Collection[str] = (), p_uncond_free: float | None = None,
                 segment_goals: Mapping[str, np.ndarray] | None = None):
        """`tasks`: episodes (of `episode_ids`) that never get the zero goal; the other (free-play) sequences
        then get it with probability `p_uncond_free`, by default p_uncond / (their share of the sequences),
        capped at 1, so that a `p_uncond` share of all sequences is still unconditioned (`free_play_share` and
        `p_uncond_free` say what it came to; a validation set takes its training set's probability).
        `segment_goals`: per episode, the goal timestep of each frame that has one (`segment_goal_frames`; -1:
        none); those frames take it over the spaced and event goals."""
        self.source = source
        self.segment_goals = dict(segment_goals or {})
        for eid in episode_ids:  # a goal per frame of the episode, or the recording is another one of that name
            goal = self.segment_goals.get(eid)
            if goal is not None and len(goal) < source.length(eid):
                raise ValueError(f"goal_segments: episode {eid.rpartition(chr(9))[2]!r} has {source.length(eid)} "
                                 f"frames in the dataset but {len(goal)} kept lines in the recording: point "
                                 f"goal_segments at the recording this dataset was made from")
        self.T, self.seed, self.event_horizon, self.event_pick = T, seed, event_horizon, event_pick
        self.min_btwn_goals, self.max_btwn_goals, self.p_uncond = min_btwn_goals, max_btwn_goals, p_uncond
        self.tasks = frozenset(tasks)
        self.sequences: list[SequenceSpec] = []
        self.skipped: list[str] = []
        self.corrupt: dict[str, str] = {}  # episode id -> why (a damaged shard file), skipped from then on
        self._corrupt_lock = threading.Lock()
        min_len = max(T, min_btwn_goals) + NONE_EMBED_OFFSET
        for eid in episode_ids:
            n = source.length(eid)
            if n < min_len:
                self.skipped.append(eid)
                continue
            self.sequences += [SequenceSpec(eid, s) for s in sequence_starts(n, T)]
        self._p_uncond_free = p_uncond_free
        self.set_weights(None)

    def set_weights(self, weights: np.ndarray | None) -> None:
        """Per sequence, the probability an epoch's draws give it (`goal_balance_weights`; None: a permutation).
        The free-play share, and with it `p_uncond_free` unless one was given, is then a share of the draws."""
        self.weights = weights
        free = np.array([spec.episode_id not in self.tasks for spec in self.sequences], bool)
        share = (float(free.mean()) if weights is None else float(weights[free].sum())) if len(free) else 1.0
        self.free_play_share = share
        self.p_uncond_free = self._p_uncond_free if self._p_uncond_free is not None else (
            min(1.0, self.p_uncond / share) if free.any() and share > 0 else 0.0)

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def n_frames(self) -> int:
        return len(self.sequences) * self.T

    def load(self, index: int, epoch: int) -> dict:
        """Sequence `index`, relabeled for `epoch`. A sequence whose shard is damaged (`CorruptShardError`) is
        replaced by the next readable one (the same one in every run and on resume) and counted in `corrupt`.
        `index` + k * len(self) is the same sequence with its own draws of goals (a weighted epoch's k-th copy)."""
        from steve1_ray.data.shards import CorruptShardError

        n = len(self.sequences)
        for k in range(n):
            i = (index + k) % n
            if self.sequences[i].episode_id in self.corrupt:
                continue
            try:
                return self._load(i, epoch, draw=i + (index // n) * n)
            except CorruptShardError as exc:
                with self._corrupt_lock:
                    if self.sequences[i].episode_id not in self.corrupt:
                        self.corrupt[self.sequences[i].episode_id] = str(exc)
                        print(f"skipping episode {self.sequences[i].episode_id} from now on: {exc}", flush=True)
        raise ValueError(f"every episode's shards are damaged ({len(self.corrupt)}); rebuild the dataset")

    def _load(self, index: int, epoch: int, draw: int) -> dict:
        spec = self.sequences[index]
        embeds, valid = self.source.embeds(spec.episode_id)
        rng = sequence_rng(self.seed, epoch, draw)  # = index for an epoch's first copy
        events = links = None
        if self.event_horizon:
            events = self.source.events(spec.episode_id)
            if events is None:
                raise ValueError(f"episode {spec.episode_id} has no recorded events, needed by goal_event_horizon="
                                 f"{self.event_horizon}: rebuild the dataset with `steve1 dataset` (index entries "
                                 "now carry `events`), or set goal_event_horizon=0")
            if self.event_pick == "use":
                links = self.source.event_links(spec.episode_id)
                if links is None or len(links) != len(events):
                    raise ValueError(f"episode {spec.episode_id} has no recorded event links, needed by "
                                     "goal_event_pick=use: rebuild the dataset with `steve1 dataset` (index entries "
                                     "now carry `event_links`), or pick next or last")
        p_uncond = 0.0 if spec.episode_id in self.tasks else self.p_uncond_free
        override = self.segment_goals.get(spec.episode_id)
        if override is not None:
            override = override[spec.start:spec.start + self.T]
            ok = (override >= NONE_EMBED_OFFSET) & (override < len(embeds))
            if valid is not None:
                ok &= valid[np.clip(override, 0, len(embeds) - 1)]
            override = np.where(ok, override, -1)
        goal_embed, _, uncond = relabel(embeds, valid, spec.start, self.T, self.min_btwn_goals,
                                        self.max_btwn_goals, p_uncond, rng, events, self.event_horizon,
                                        self.event_pick, links, goal_override=override)
        seq = self.source.read(spec.episode_id, spec.start, spec.start + self.T)
        if len(seq["buttons"]) != self.T or len(seq["frames"]) != self.T:
            raise ValueError(f"episode {spec.episode_id}: frames [{spec.start}, {spec.start + self.T}) gave "
                             f"{len(seq['frames'])} frames and {len(seq['buttons'])} actions; the shard is damaged, "
                             f"rebuild it with `steve1 dataset`")
        first = np.zeros(self.T, dtype=bool)
        first[0] = True
        return {"img": np.asarray(seq["frames"], dtype=np.uint8), "goal_embed": goal_embed,
                "buttons": np.asarray(seq["buttons"], dtype=np.int64),
                "camera": np.asarray(seq["camera"], dtype=np.int64), "first": first, "uncond": uncond}


def collate(items: list[dict]) -> dict:
    return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}


def epoch_groups(n_sequences: int, seed: int, epoch: int, rank: int, world_size: int, batch_size: int,
                 grad_accum: int, weights: np.ndarray | None = None) -> list[list[list[int]]]:
    """This worker's sequence indices for one epoch: groups of `grad_accum` batches of `batch_size`.

    Every worker gets the same number of groups (the remainder of the permutation is dropped this epoch).
    `weights` (probabilities summing to 1, `goal_balance_weights`): the epoch is `n_sequences` draws with
    replacement in those proportions instead of a permutation (the same draws for a seed and epoch on every worker).
    """
    rng = np.random.default_rng([seed, epoch, 7919])
    if weights is None:
        perm = rng.permutation(n_sequences)
    else:  # a sequence drawn k times comes as index + k * n, so each copy gets its own goals (`load`)
        perm = rng.choice(n_sequences, n_sequences, p=weights)
        seen = collections.Counter()
        for j, i in enumerate(perm.tolist()):
            perm[j] = i + seen[i] * n_sequences
            seen[i] += 1
    mine = perm[rank::world_size]
    per_group = batch_size * grad_accum
    n_groups = n_sequences // (world_size * per_group)
    return [[mine[g * per_group + m * batch_size: g * per_group + (m + 1) * batch_size].tolist()
             for m in range(grad_accum)] for g in range(n_groups)]


def val_batches(n_sequences: int, rank: int, world_size: int, batch_size: int, limit: int = 0) -> list[list[int]]:
    """Validation sequences of this worker: `range(n)[rank::world]` in batches (the last may be smaller)."""
    n = min(n_sequences, limit) if limit else n_sequences
    mine = list(range(rank, n, world_size))
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


class Prefetcher:
    """Loads batches of sequences on a thread pool, keeping `ahead` batches in flight, in order."""

    def __init__(self, dataset: SequenceDataset, threads: int, ahead: int):
        self.dataset, self.ahead = dataset, ahead
        self.pool = ThreadPoolExecutor(max_workers=threads) if threads > 0 else None

    def _submit(self, batch: list[int], epoch: int):
        if self.pool is None:
            return [self.dataset.load(i, epoch) for i in batch]
        return [self.pool.submit(self.dataset.load, i, epoch) for i in batch]

    @staticmethod
    def _result(pending) -> dict:
        return collate([p.result() if hasattr(p, "result") else p for p in pending])

    def iter_batches(self, batches: list[list[int]], epoch: int) -> Iterator[dict]:
        queue = collections.deque()
        it = iter(batches)
        for batch in it:
            queue.append(self._submit(batch, epoch))
            if len(queue) >= self.ahead:
                break
        while queue:
            pending = queue.popleft()
            nxt = next(it, None)
            if nxt is not None:
                queue.append(self._submit(nxt, epoch))
            yield self._result(pending)

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


def hash_split(episode_ids: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic split by a hash of the id: the same episode is always on the same side."""
    def h(key: str) -> float:  # the episode id only (not the dataset path in `root\tid` keys)
        return int(hashlib.sha1(key.rpartition("\t")[2].encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    train = [e for e in episode_ids if h(e) >= val_fraction]
    val = [e for e in episode_ids if h(e) < val_fraction]
    if val_fraction > 0 and not val and len(train) > 1:
        val, train = train[-1:], train[:-1]
    return train, val
