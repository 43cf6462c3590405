"""Contractor/embedded-world recordings -> Parquet shards (Ray Data). Logic: steve1_ray.data.pipeline.

    python jobs/generate_dataset.py output=/data/ds sources=[local:/data/recordings] min_frames=100
    ray job submit --working-dir . -- python jobs/generate_dataset.py --config configs/data.yaml ...
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from steve1_ray.data.pipeline import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
