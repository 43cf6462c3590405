"""`steve1 train-text-tower`: teach a world embedder's text tower more phrasings, its goal space left as it is.

The world embedder's text tower starts from random weights and learns from the demonstrators' captions and the
template paraphrases (`steve1_ray.world.phrases`), together with the video tower (`steve1 train-embedder`). A phrasing
with words it never saw ("could you find me a sapling": "could" and "me" are in no caption or template) or with known
words in an unknown sense ("pick up": "pick" is only ever the noun of "a stone pick", "up" the particle of "set up")
lands wherever those tokens pull it: on the release's recording 72 % of the five evaluated goals'
held-out phrasings reached their own goal through the prior, against every caption (benchmarks/RESULTS.md,
session 25).

This job trains the text tower alone, with the video tower frozen, so every goal embedding stays bit-identical:
the dataset, the policies trained on it and the quick start's recordings keep their goals, and only the prior
(text embedding → goal) is retrained on the new text side. Its pairs are the prior's own (`train.prior.world_pairs`:
each caption with the visual embeddings of the clips ending its segment, read from the dataset embedded with this
embedder, so no video is decoded), the loss the embedder's multi-positive InfoNCE (texts of one goal are positives),
and each epoch

- a `paraphrases` share of the captions is swapped for a template phrasing of its goal, as in `train-embedder`;
- a `filler` share of the texts gets 1-3 *filler words* inserted at random places: words of the tokenizer's
  vocabulary that no caption, template or sentence frame uses, and no held-out phrasing either (those measure the
  job; a held-out word trained as filler would be a word the measurement taught). The tower learns that a word it
  does not know says nothing about the goal, instead of letting its random embedding pull the sentence elsewhere.
  The price: goal words no training text has ("lumber", "beef") are taught to mean nothing as well.

Validation: the hand-written held-out phrasings (`phrases.HELDOUT`, never trained on) and the captions, each
scored two ways: `to_goal` (nearest goal by the mean visual embedding of its segment ends: what the embedder alone
retrieves) and `to_caption` (nearest goal by the mean text embedding of its captions: what the prior, trained on the
captions, sees). The last epoch is written (the held-out phrasings measure, they do not select).

    steve1 train-text-tower embedder=<release>/mineclip.pth world=<recording> data=<its shards> out=runs/text
"""
from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from steve1_ray.config import check, save_config
from steve1_ray.progress import duration
from steve1_ray.runner import Job, run_job

FIVE = ("collect_wood", "collect_sapling", "collect_drink", "eat_cow", "place_table")
"""the evaluation's five goals (`configs/eval/crafter.yaml`), reported on their own too"""


@dataclass
class TextTowerConfig:
    """Options of the text-tower job."""

    embedder: str = ""
    """the world embedder to start from (a `mineclip.pth` of `steve1 train-embedder`); its video tower is kept"""
    world: str = ""
    """the recording (`steve1 record`): its captions.jsonl"""
    data: str = ""
    """the shard dataset of that recording embedded with `embedder` (`steve1 dataset mineclip_path=...`)"""
    out: str = "runs/text_tower"
    """output folder: mineclip.pth (the embedder with the new text tower), metrics.json, config.yaml"""
    epochs: int = 8
    """passes over the caption pairs"""
    batch_size: int = 64
    """pairs per step"""
    lr: float = 1e-4
    """peak learning rate of the text tower (AdamW, cosine to 0); train-embedder's text rate is 1e-4 as well"""
    weight_decay: float = 0.05
    """AdamW weight decay of the text tower's parameters"""
    paraphrases: float = 0.5
    """share of the captions swapped for a template phrasing of their goal each epoch (as train-embedder's)"""
    filler: float = 0.5
    """share of the texts that get 1-3 filler words (words no caption, template or frame uses) each epoch; 0: none"""
    clips_per_caption: int = 4
    """visual embeddings per caption: the clips ending on its segment's last k kept frames (the prior's pairs)"""
    seed: int = 0
    """seed of the paraphrases, the filler words and the batch order"""
    anchor: float = 0.0
    """weight of a pull of each text's embedding, as the prior reads it (not normalised), toward its goal's caption
    prototype: the mean embedding of the goal's captions under the starting text tower, fixed. The loss is the squared
    distance over the prototype's squared norm, batch mean. The contrastive loss sees directions only, so two wordings
    of one goal can sit apart in what the prior reads, and the prior then gives the less certain one a shorter goal
    (benchmarks/RESULTS.md, session 43). 0 = none"""

    def __post_init__(self):
        for name in ("embedder", "world", "data"):
            check(bool(getattr(self, name)), f"{name}= is required (see `steve1 train-text-tower --help`)")
        check(self.epochs >= 1 and self.batch_size >= 2,
              f"epochs={self.epochs!r} must be >= 1 and batch_size={self.batch_size!r} >= 2 (InfoNCE needs negatives)")
        check(self.lr > 0, f"lr={self.lr!r} must be > 0")
        check(0.0 <= self.paraphrases <= 1.0 and 0.0 <= self.filler <= 1.0,
              f"paraphrases={self.paraphrases!r} and filler={self.filler!r} are shares in [0, 1]")
        check(self.clips_per_caption >= 1, f"clips_per_caption={self.clips_per_caption!r} must be >= 1")
        check(math.isfinite(self.anchor) and self.anchor >= 0, f"anchor={self.anchor!r} must be a number >= 0")


def filler_words() -> list[str]:
    """Whole words of the tokenizer's vocabulary (alphabetic, 3-9 letters) that no caption, template phrasing,
    sentence frame or held-out phrasing uses, sorted."""
    from steve1_ray.models.tokenizer import get_tokenizer
    from steve1_ray.world.phrases import FRAMES, captions, heldout_phrases, template_phrases

    texts = [c for cs in captions().values() for c in cs] + [p for ps in template_phrases().values() for p in ps]
    texts += [p for ps in heldout_phrases().values() for p in ps]
    known = {w for t in texts + list(FRAMES) for w in re.findall(r"[a-z']+", t.lower())}
    return sorted(w[:-4] for w in get_tokenizer().encoder
                  if w.endswith("</w>") and w[:-4].isalpha() and 3 <= len(w) - 4 <= 9 and w[:-4] not in known)


def add_filler(texts: list[str], share: float, words: list[str], rng: np.random.Generator) -> list[str]:
    """`texts` with a `share` of them given 1-3 random `words` at random word boundaries."""
    out = []
    for t in texts:
        if share > 0 and rng.random() < share:
            w = t.split()
            for _ in range(int(rng.integers(1, 4))):
                w.insert(int(rng.integers(0, len(w) + 1)), words[int(rng.integers(len(words)))])
            t = " ".join(w)
        out.append(t)
    return out


def video_state(model) -> dict[str, torch.Tensor]:
    """Every parameter and buffer outside the text tower (what makes the goal embeddings), copied. The text tower is
    in the state dict twice (`clip_model.text_model.*` and its alias `reward_head.clip_model.text_model.*`)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "clip_model.text_model." not in k}


@torch.no_grad()
def phrase_scores(model, visual: torch.Tensor, goals: np.ndarray) -> dict:
    """Held-out phrasings and captions → goal, by visual centroid (`to_goal`) and by caption prototype
    (`to_caption`); over every goal of the recording and over the evaluation's five (`five/`); the misses of the
    five's held-out phrasings."""
    from steve1_ray.world.phrases import captions, heldout_phrases

    names = sorted(set(goals.tolist()))
    cents = F.normalize(torch.stack([visual[torch.from_numpy(goals == n)].mean(0) for n in names]), dim=-1)
    caps = captions()
    proto_names = [n for n in names if caps.get(n)]
    protos = F.normalize(torch.stack([F.normalize(model.encode_text(list(caps[n])).float(), dim=-1).mean(0)
                                      for n in proto_names]), dim=-1)
    out = {}
    for key, table in (("heldout", heldout_phrases()), ("caption", caps)):
        rows = [(g, p) for g in proto_names for p in table.get(g, ())]
        want = np.asarray([g for g, _ in rows])
        t = F.normalize(model.encode_text([p for _, p in rows]).float(), dim=-1)
        for how, ref, labels in (("to_goal", cents, names), ("to_caption", protos, proto_names)):
            pred = np.asarray(labels)[(t @ ref.T).argmax(1).numpy()]
            five = np.isin(want, FIVE)
            out[f"{key}/{how}"] = round(float((pred == want).mean()), 4)
            if five.any():  # a recording without the five goals has no `five/` scores
                out[f"{key}/five/{how}"] = round(float((pred[five] == want[five]).mean()), 4)
            if key == "heldout" and how == "to_caption":
                out["heldout/five/misses"] = [f"{p!r} -> {g}" for (w, p), g, f in zip(rows, pred, five)
                                              if f and g != w]
    out["n_goals"], out["n_heldout"] = len(proto_names), sum(len(heldout_phrases().get(g, ())) for g in proto_names)
    return out


@torch.no_grad()
def caption_prototypes(model) -> dict[str, torch.Tensor]:
    """Each goal's mean caption embedding (not normalised: what the prior reads)."""
    from steve1_ray.world.phrases import captions

    return {g: model.encode_text(list(cs)).float().mean(0) for g, cs in captions().items() if cs}


@torch.no_grad()
def prototype_distance(model, protos: dict[str, torch.Tensor]) -> dict:
    """How far the evaluation's five goals' held-out phrasings and captions sit from their goal's caption prototype
    (`protos`), in what the prior reads: distance over the prototype's norm, mean."""
    from steve1_ray.world.phrases import captions, heldout_phrases

    out = {}
    for key, table in (("heldout", heldout_phrases()), ("caption", captions())):
        rows = [(g, p) for g in FIVE for p in table.get(g, ())]
        t = model.encode_text([p for _, p in rows]).float()
        a = torch.stack([protos[g] for g, _ in rows])
        out[f"{key}/five/to_prototype"] = round(float(((t - a).norm(dim=-1) / a.norm(dim=-1)).mean()), 4)
    return out


def _check_data(cfg: TextTowerConfig, model) -> None:
    """The dataset's goals must come from this embedder's video tower (its manifest names the embedder file)."""
    from steve1_ray.data import shards
    from steve1_ray.models.mineclip import load_mineclip

    named = (shards.read_manifest(cfg.data).get("options") or {}).get("mineclip_path")
    check(bool(named) and Path(named).is_file(),
          f"data={cfg.data}: its manifest names no embedder file that exists here ({named!r}); the text tower must "
          "be trained against the goals of the embedder it belongs to")
    theirs, ours = video_state(load_mineclip(named)), video_state(model)
    same = theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)
    check(same, f"data={cfg.data} was embedded with {named}, whose video tower differs from embedder={cfg.embedder}'s")


def run(cfg: TextTowerConfig, log=print) -> dict:
    from steve1_ray.models.mineclip import load_mineclip, save_mineclip
    from steve1_ray.train.embedder import _schedule, contrastive_loss, paraphrase_texts
    from steve1_ray.train.prior import PriorConfig, world_pairs
    from steve1_ray.world.demonstrators import GOALS

    t0 = time.time()
    torch.manual_seed(cfg.seed)
    model = load_mineclip(cfg.embedder)
    check(not model.cfg.goal_whiten, f"embedder={cfg.embedder} has a whitened goal space: train the text tower of "
                                     "the embedder it was made from, then whiten again")
    _check_data(cfg, model)
    _, visual, texts = world_pairs(PriorConfig(world=cfg.world, data=cfg.data, clips_per_caption=cfg.clips_per_caption))
    goal_of = {c: g.name for g in GOALS.values() for c in g.captions}
    unknown = sorted({t for t in texts if t not in goal_of})
    check(not unknown, f"world={cfg.world}: captions of no known goal {unknown[:3]} (steve1_ray.world.demonstrators)")
    goals = np.asarray([goal_of[t] for t in texts])
    check(len(set(goals.tolist())) >= 2, f"world={cfg.world}: its caption pairs hold {len(set(goals.tolist()))} goal(s); "
                                         "the contrastive loss needs at least 2 (texts of other goals are the negatives)")
    out = Path(cfg.out)  # inputs checked: now the output folder
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    v = F.normalize(torch.from_numpy(np.asarray(visual)).float(), dim=-1)
    if cfg.anchor:
        protos = caption_prototypes(model)  # the starting tower's, fixed
        anchor_of = torch.stack([protos[g] for g in goals.tolist()])
    words = filler_words()
    before = video_state(model)
    near = (lambda: prototype_distance(model, protos)) if cfg.anchor else dict  # metrics of the committed run kept
    history = [{"epoch": 0, **phrase_scores(model.eval(), v, goals), **near()}]
    log(f"text-tower: {len(texts)} caption pairs of {len(set(goals.tolist()))} goals, {len(words)} filler words; "
        f"before: held-out phrasings -> their goal {history[0]['heldout/to_caption']:.2f}")

    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.clip_model.text_model.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    n, b = len(texts), min(cfg.batch_size, len(texts))
    if b < cfg.batch_size:
        log(f"text-tower: {n} pairs, fewer than batch_size={cfg.batch_size}: one batch of {n} per epoch")
    total, step = cfg.epochs * max(1, n // b), 0
    for epoch in range(cfg.epochs):
        model.train()
        batch_texts = add_filler(paraphrase_texts(texts, goals.tolist(), cfg.paraphrases, [cfg.seed, 29, epoch]),
                                 cfg.filler, words, rng)
        order, losses, pulls = rng.permutation(n), [], []
        for i in range(0, max(1, n - b + 1), b):
            idx = order[i:i + b]
            for g in opt.param_groups:
                g["lr"] = cfg.lr * _schedule(step, total, warmup=0)  # cosine to 0, as train-embedder's
            text = model.forward_text(model.tokenize([batch_texts[j] for j in idx]))
            loss = contrastive_loss(v[idx], text, model.clip_model.logit_scale, goals[idx].tolist())
            if cfg.anchor:
                a = anchor_of[idx]
                pull = ((text.float() - a) ** 2).sum(-1).div((a ** 2).sum(-1)).mean()
                pulls.append(pull.item())
                loss = loss + cfg.anchor * pull
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(loss.item())
            step += 1
        metrics = {"epoch": epoch + 1, "train/loss": round(float(np.mean(losses)), 4),
                   **({"train/anchor": round(float(np.mean(pulls)), 4)} if pulls else {}),  # (in the loss x anchor)
                   "seconds": round(time.time() - t0, 1), **phrase_scores(model.eval(), v, goals),
                   **near()}
        history.append(metrics)
        elapsed = time.time() - t0
        log(f"text-tower: epoch {epoch + 1}/{cfg.epochs}  loss {metrics['train/loss']:.3f}  held-out phrasings -> "
            f"their goal {metrics['heldout/to_caption']:.2f}, "
            f"captions {metrics['caption/to_caption']:.2f}  elapsed {duration(elapsed)}  "
            f"ETA {duration(elapsed / (epoch + 1) * (cfg.epochs - epoch - 1))}")
    after = video_state(model)
    if not all(torch.equal(before[k], after[k]) for k in before):
        raise RuntimeError("text-tower: a parameter outside the text tower changed; nothing written")
    save_mineclip(model.eval(), out / "mineclip.pth")
    info = {"history": history, "before": history[0], "final": history[-1], "pairs": n,
            "filler_words": len(words), "seconds": round(time.time() - t0, 1)}
    (out / "metrics.json").write_text(json.dumps(info, indent=1))
    log(f"text-tower: wrote {out / 'mineclip.pth'} ({info['seconds']}s); held-out phrasings -> their goal "
        f"{history[0]['heldout/to_caption']:.2f} -> {history[-1]['heldout/to_caption']:.2f}")
    return info


def _run(cfg: TextTowerConfig) -> int:
    run(cfg)
    return 0


JOB = Job("train-text-tower", TextTowerConfig, _run, errors=(FileNotFoundError, ValueError),
          summary=__doc__.strip().splitlines()[0].split(": ", 1)[1],
          examples="""
          steve1 train-text-tower embedder=runs/embedder/mineclip.pth world=data/world data=data/world_shards out=runs/text""")


def main(argv: list[str] | None = None) -> int:
    return run_job(JOB, argv)


if __name__ == "__main__":
    sys.exit(main())
