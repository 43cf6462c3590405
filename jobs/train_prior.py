"""Train the STEVE-1 prior (CVAE text -> visual goal embedding): `python jobs/train_prior.py --config default pairs=...`.

Also `ray job submit --working-dir . -- python jobs/train_prior.py ...` and `steve1 train-prior ...`.
See docs/training.md and steve1_ray/train/prior.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from steve1_ray.train.prior import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
