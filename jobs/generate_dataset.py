"""Contractor / embedded-world recordings -> Parquet shards on Ray Data. Logic: steve1_ray.data.pipeline.

    python jobs/generate_dataset.py output=/data/ds sources=[local:/data/recordings] min_frames=100
    ray job submit --working-dir . -- python jobs/generate_dataset.py output=s3://bucket/ds sources=[contractor:10.x] num_episodes=50

Also `steve1 dataset ...`. Options: steve1_ray.data.pipeline.DataConfig and docs/data.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from steve1_ray.data.pipeline import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
