"""benchmarks/goal_persistence.py on hand-made caption records."""
import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "goal_persistence", Path(__file__).resolve().parents[1] / "benchmarks" / "goal_persistence.py")
gp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gp)


def _rec(ep, start, end, goal):
    return json.dumps({"episode": ep, "start": start, "end": end, "goal": goal})


def test_share_of_goal_frames_in_a_segment_of_the_same_goal():
    # Episode a: drink for 60 frames (a persistent activity), then wood for 20.
    # Episode b: wood, table, wood, table in 10-frame segments.
    lines = [_rec("a", 0, 60, "drink"), _rec("a", 60, 80, "wood"),
             _rec("b", 0, 10, "wood"), _rec("b", 10, 20, "table"), _rec("b", 20, 30, "wood"),
             _rec("b", 30, 40, "table"), ""]
    rows = gp.persistence(lines, 2, 3)
    # drink frames 0..57 look 2-3 ahead into drink (frames 0..56 only drink; 57 sees 59 drink, 60 wood).
    assert rows["drink"]["frames"] == 60 and rows["drink"]["segments"] == 1 and rows["drink"]["median_len"] == 60
    assert rows["drink"]["share"] == pytest.approx((57 + 0.5 + 0 + 0) / 60)
    # Table frames: 10..17 (the last one half) in b's first table segment, 30..37 in the second (none after 39).
    assert rows["table"]["frames"] == 18 and rows["table"]["share"] == pytest.approx((7.5 + 8) / 18)
    # Frames whose goal frames all lie past the episode's end are not counted.
    assert rows["wood"]["frames"] == 18 + 10 + 10
