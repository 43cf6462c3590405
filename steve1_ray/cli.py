"""`steve1 <command> [args...]`: one entry point for every job.

Each command forwards its arguments to the `main(argv)` of the library module that implements the job, so
`steve1 train --config configs/train/debug.yaml lr=1e-4` is the same as `python jobs/train.py ...`.
"""
from __future__ import annotations

import importlib
import sys

# command -> (module, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("steve1_ray.quickstart", "whole pipeline on the embedded world (record → ... → evaluate)"),
    "release-world": ("steve1_ray.release", "make the embedded world's released models (foundation, STEVE-1, embedder, prior)"),
    "record": ("steve1_ray.world.record", "record embedded-world episodes in the contractor format"),
    "dataset": ("steve1_ray.data.pipeline", "recordings → frames, actions, embeddings → Parquet shards"),
    "sampling": ("steve1_ray.data.sampling", "train/val splits and mixtures over shard datasets"),
    "train": ("steve1_ray.train.run", "behaviour cloning with hindsight relabeling on Ray Train"),
    "train-prior": ("steve1_ray.train.prior", "train the CVAE prior (text → visual goal embedding)"),
    "train-embedder": ("steve1_ray.train.embedder", "train a MineCLIP-architecture video–text embedder on recordings"),
    "train-text-tower": ("steve1_ray.train.text_tower", "teach a world embedder's text tower more phrasings (goals unchanged)"),
    "goal-axes": ("steve1_ray.world.facing", "find the goal-space directions that say which way the player faces"),
    "whiten-embedder": ("steve1_ray.train.whiten", "give a world embedder a whitened goal space fitted on its dataset"),
    "sweep": ("steve1_ray.sweep.run", "hyperparameter sweep on Ray Tune"),
    "evaluate": ("steve1_ray.evaluate.run", "programmatic evaluation: prompts × guidance scales → report"),
    "serve": ("steve1_ray.serving.run", "start the prompt-to-action HTTP service on Ray Serve"),
    "weights": ("steve1_ray.models.formats", "inspect / convert original .model and .weights files"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: steve1 <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`steve1 <command> --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"steve1: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    result = module.main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
