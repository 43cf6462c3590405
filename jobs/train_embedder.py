"""Train a MineCLIP-architecture video–text embedder on captioned recordings (see steve1_ray/train/embedder.py).

    python jobs/train_embedder.py recordings=data/world out=runs/embedder
    ray job submit --working-dir . -- python jobs/train_embedder.py recordings=/shared/world num_workers=2
"""
import sys

from steve1_ray.train.embedder import main

if __name__ == "__main__":
    sys.exit(main())
