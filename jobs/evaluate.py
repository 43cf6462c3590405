"""Programmatic evaluation job: prompts x guidance scales (+ the unconditioned baseline) -> report folder.

    python jobs/evaluate.py --config configs/eval/debug.yaml out_dir=runs/eval_debug
    ray job submit --working-dir . -- python jobs/evaluate.py --config configs/eval/crafter.yaml policy=<ckpt>

All the logic is in `steve1_ray.evaluate.run.main` (also `steve1 evaluate`).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from steve1_ray.evaluate.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
