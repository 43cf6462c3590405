"""The one mp4 writer (`steve1_ray.world.video`): file and memory output, fixed and scaled sizes, the prompt banner."""
from __future__ import annotations

import io
import subprocess
import sys

import av
import numpy as np
import pytest

from steve1_ray.data.synthetic import synthetic_frame
from steve1_ray.world.video import Mp4Writer, draw_prompt


def _decode(src) -> list[np.ndarray]:
    with av.open(src) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_mp4_writer_and_prompt_banner():
    frame = np.full((360, 640, 3), 200, np.uint8)
    drawn = draw_prompt(frame, "chop down the tree " * 10, step=3)  # long prompts are shortened to fit
    assert drawn[2, 600].max() < 80 and drawn[200, 300].min() == 200 and frame.min() == 200
    writer = Mp4Writer(fps=20, height=180, crf=26, preset="ultrafast")
    for _ in range(5):
        writer.add(drawn)
    data = writer.finish()
    frames = _decode(io.BytesIO(data))
    assert len(frames) == 5 and frames[0].shape == (180, 320, 3)


def test_file_and_memory_output_decode_to_the_same_frames(tmp_path):
    src = [synthetic_frame(t, 320, 180) for t in range(12)]
    path = tmp_path / "clip.mp4"
    to_file = Mp4Writer(path, size=(320, 180), crf=23, preset="superfast", threads=1)
    to_memory = Mp4Writer(crf=23, preset="superfast", threads=1)  # size from the first frame
    for frame in src:
        to_file.add(frame)
        to_memory.add(frame)
    assert to_file.finish() is None
    data = to_memory.finish()
    assert to_file.frames == to_memory.frames == 12
    from_file, from_memory = _decode(str(path)), _decode(io.BytesIO(data))
    assert len(from_file) == len(from_memory) == 12
    assert {f.shape for f in from_file} == {f.shape for f in from_memory} == {(180, 320, 3)}
    assert all(np.array_equal(a, b) for a, b in zip(from_file, from_memory))  # same encoder, same pixels
    err = np.abs(np.stack(from_file).astype(int) - np.stack(src).astype(int)).mean()
    assert err < 8, err


def test_sizes_are_checked_or_scaled(tmp_path):
    fixed = Mp4Writer(tmp_path / "fixed.mp4", size=(64, 48))
    fixed.add(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"frame has shape \(10, 10, 3\).*takes \(48, 64, 3\)"):
        fixed.add(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        fixed.add(np.zeros((48, 64, 3), np.float32))
    fixed.finish()
    assert len(_decode(str(tmp_path / "fixed.mp4"))) == 1

    scaled = Mp4Writer(height=64)  # frames of any size are scaled to the first frame's 64-row size
    scaled.add(np.zeros((360, 640, 3), np.uint8))
    scaled.add(np.zeros((90, 200, 3), np.uint8))
    assert scaled.size == (114, 64)
    assert [f.shape for f in _decode(io.BytesIO(scaled.finish()))] == [(64, 114, 3)] * 2
    with pytest.raises(ValueError, match="not both"):
        Mp4Writer(size=(64, 48), height=48)


def test_import_loads_neither_ray_nor_serving():
    code = ("import sys, steve1_ray.world.video; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith(('ray.', 'steve1_ray.serving'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
