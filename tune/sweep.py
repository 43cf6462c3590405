"""Run a hyperparameter sweep of the behaviour-cloning loop on Ray Tune (see steve1_ray/sweep.py, docs/sweeps.md).

    python tune/sweep.py --config tune/spaces/debug.yaml train.data=/data/shards
    ray job submit --working-dir . -- python tune/sweep.py --config tune/spaces/paper.yaml \\
        train.data=s3://bucket/shards storage_path=s3://bucket/sweeps
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when steve1_ray is not installed

from steve1_ray.sweep import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
