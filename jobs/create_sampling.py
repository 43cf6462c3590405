"""Train/val splits (and weighted mixtures) over shard datasets. Logic: steve1_ray.data.sampling.

    python jobs/create_sampling.py name=neurips datasets=[/data/ds] val_frames=10000 train_frames=30000
    python jobs/create_sampling.py name=mix 'datasets=[/data/contractor:0.8, /data/task:0.2]' val_frames=2000
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from steve1_ray.data.sampling import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
