"""Hyperparameter sweep on Ray Tune: `python jobs/sweep.py --config configs/sweep/debug.yaml train.data=<shards>`.

Also `ray job submit --working-dir . -- python jobs/sweep.py --config configs/sweep/paper.yaml
train.data=s3://bucket/shards storage_path=s3://bucket/sweeps` and `steve1 sweep ...`.
See docs/sweeps.md and steve1_ray/sweep/run.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from steve1_ray.sweep.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
