"""Record embedded-world (crafter) episodes in the VPT contractor format. Logic: steve1_ray.world.record.

    python jobs/record.py out=data/world episodes=16 max_steps=1000
    ray job submit --working-dir . -- python jobs/record.py out=/shared/world episodes=200

Also `steve1 record ...`. Options: steve1_ray.world.record.RecordConfig and docs/world.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from steve1_ray.world.record import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
