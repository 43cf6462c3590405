"""Train a MineCLIP-architecture video–text embedder on captioned recordings (see steve1_ray/train/embedder.py).

    python jobs/train_embedder.py recordings=data/world out=runs/embedder
    ray job submit --working-dir . -- python jobs/train_embedder.py recordings=/shared/world num_workers=2
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from steve1_ray.train.embedder import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
