"""Train STEVE-1 on Ray Train: `python jobs/train.py --config debug data=<shards> [key=value ...]`.

Also `ray job submit --working-dir . -- python jobs/train.py ...` and `steve1 train ...`.
See docs/training.md and steve1_ray/train/run.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from steve1_ray.train.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
