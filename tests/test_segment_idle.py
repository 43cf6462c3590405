"""benchmarks/segment_idle.py on a hand-made recording."""
import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "segment_idle", Path(__file__).resolve().parents[1] / "benchmarks" / "segment_idle.py")
si = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(si)


def _action(keys=(), buttons=(), dx=0.0):
    return {"keyboard": {"keys": list(keys)}, "mouse": {"buttons": list(buttons), "dx": dx, "dy": 0.0}}


def test_idle_share_per_goal(tmp_path):
    (tmp_path / "contractor").mkdir()
    # 10 frames: 0-3 walk (key w), 4-5 a camera move only (idle), 6 attack (mouse button 0), 7-9 nothing (idle).
    acts = [_action(["key.keyboard.w"])] * 4 + [_action(dx=15.0)] * 2 + [_action(buttons=[0])] + [_action()] * 3
    (tmp_path / "contractor" / "e.jsonl").write_text("".join(json.dumps(a) + "\n" for a in acts))
    caps = [{"episode": "e", "actions": "contractor/e.jsonl", "start": 0, "end": 4, "goal": "collect_wood", "text": "chop a tree"},
            {"episode": "e", "actions": "contractor/e.jsonl", "start": 4, "end": 10, "goal": "place_table", "text": "place a crafting table"}]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(c) + "\n" for c in caps) + "\n")
    shares, overall = si.idle_shares(tmp_path)
    assert shares["collect_wood"] == {"frames": 4, "idle": 0.0}
    assert shares["place_table"]["frames"] == 6 and shares["place_table"]["idle"] == pytest.approx(5 / 6)
    assert overall == pytest.approx(5 / 10)
