"""Every mp4 we write, and the prompt banner drawn over rollout frames.

`Mp4Writer` encodes RGB uint8 frames as H.264 (libx264, yuv420p: what browsers and the contractor
ingestion read) into a file or into memory. Its callers and their settings:

    world/recorder.py    contractor episodes, a file, the env's fixed frame size, crf 23 "superfast", 1 thread
    data/synthetic.py    synthetic test episodes, a file, the first frame's size, crf 30 "veryfast"
    serving/rollouts.py  rollout videos, in memory, frames resized to `height`, crf 26 "ultrafast"
    evaluate/run.py      sample episode videos, the same as serving's

    writer = Mp4Writer(height=256, crf=26, preset="ultrafast")   # in memory
    writer.add(draw_prompt(obs["pov"], "chop a tree", step))     # (H, W, 3) uint8 RGB
    data = writer.finish()                                        # the mp4's bytes

Plain PyAV and OpenCV, no Ray, so the world, the data tools, serving and evaluation can all use it.
"""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

FPS = 20  # the contractor recordings' frame rate, and every writer's default


def draw_prompt(frame: np.ndarray, text: str, step: int | None = None) -> np.ndarray:
    """A copy of `frame` (H, W, 3) RGB with a dark banner holding `text` (and the step) at the top."""
    out = np.ascontiguousarray(frame).copy()
    h, w = out.shape[:2]
    scale = max(0.35, h / 720)
    thick = max(1, int(round(scale * 2)))
    label = text if step is None else f"{text}   [t={step}]"
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    while tw > w - 8 and len(label) > 4:  # shorten long prompts to fit
        label = label[:-4] + "..."
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    bar = th + base + 8
    out[:bar] = (out[:bar].astype(np.uint16) * 3 // 10).astype(np.uint8)
    cv2.putText(out, label, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


class Mp4Writer:
    """H.264 mp4 (libx264, yuv420p) of RGB uint8 frames, written to `path` or, with no path, to memory.

    The frame size is `size` (width, height) when given, and every frame must have it; otherwise the
    first frame fixes it: that frame's size (later frames must match), or with `height` the first frame
    scaled to `height` rows (width keeping the aspect, rounded to even), every frame resized to it.
    `add(frame)` per frame, then `finish()`: the mp4's bytes when writing to memory, None for a file.
    """

    def __init__(self, path: str | Path | None = None, *, fps: int = FPS, crf: int = 23, preset: str = "veryfast",
                 size: tuple[int, int] | None = None, height: int | None = None, threads: int | None = None):
        if size is not None and height is not None:
            raise ValueError(f"give the video's size={size} or a height={height} to scale frames to, not both")
        self.path = None if path is None else Path(path)
        self._buf = io.BytesIO() if path is None else None
        import av  # here, not at the top: serving imports this module, and needs PyAV only when it writes a video

        self._to_frame = av.VideoFrame.from_ndarray
        self.container = av.open(self._buf if path is None else str(path), mode="w", format="mp4")
        self.fps, self.crf, self.preset, self.height, self.threads = fps, crf, preset, height, threads
        self.stream = None
        self.size: tuple[int, int] | None = None  # (width, height) of the encoded frames
        self.resize = height is not None  # frames are scaled to `size`, else they must already have it
        self.frames = 0
        if size is not None:
            self._open_stream(int(size[0]), int(size[1]))

    def _open_stream(self, width: int, height: int) -> None:
        self.stream = self.container.add_stream("libx264", rate=self.fps)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.options = {"crf": str(self.crf), "preset": self.preset}
        if self.threads is not None:
            self.stream.codec_context.thread_count = int(self.threads)
        self.size = (width, height)

    def add(self, frame: np.ndarray) -> None:
        """Encode one (H, W, 3) uint8 RGB frame."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame has shape {frame.shape} {frame.dtype}; videos take (H, W, 3) uint8 RGB frames")
        h, w = frame.shape[:2]
        if self.stream is None:
            if self.resize:
                self._open_stream(int(round(w * self.height / h / 2)) * 2, self.height)
            else:
                self._open_stream(w, h)
        width, height = self.size
        if (h, w) != (height, width):
            if not self.resize:
                raise ValueError(f"frame has shape {frame.shape} {frame.dtype}; this video takes "
                                 f"({height}, {width}, 3) uint8 RGB frames")
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        for packet in self.stream.encode(self._to_frame(np.ascontiguousarray(frame), format="rgb24")):
            self.container.mux(packet)
        self.frames += 1

    def finish(self) -> bytes | None:
        """Flush the encoder and close the file; the mp4's bytes when writing to memory, else None."""
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()
        return None if self._buf is None else self._buf.getvalue()

