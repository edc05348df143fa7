"""The live window (``live --show``): the sampled frames in a Tk window, with the annotated MP4's
painter drawing the last analysed second's face boxes, labels and fused strip on them.

It holds the last RECENT_S seconds only (the strip shows STRIP_WINDOW_S), so a window left open
all day holds as much as one opened a minute ago.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Sequence

import numpy as np

from emotion_pipeline.annotate import STRIP_WINDOW_S, Painter
from emotion_pipeline.records import Frame

RECENT_S = int(STRIP_WINDOW_S) * 3   # seconds of analysed timeline held for the strip (it shows 10 s)


class RecentSeconds(Sequence):
    """The last ``RECENT_S`` timeline entries, indexed by second as the whole timeline would be
    (``Painter`` reads ``timeline[int(t)]`` and slices around now); older seconds read as empty."""

    def __init__(self, keep: int = RECENT_S):
        self.entries: deque[dict[str, Any]] = deque(maxlen=keep)

    def append(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)

    def __len__(self) -> int:
        return int(self.entries[-1]["start_s"]) + 1 if self.entries else 0

    def _at(self, k: int) -> dict[str, Any]:
        first = int(self.entries[0]["start_s"])
        if 0 <= k - first < len(self.entries):
            return self.entries[k - first]
        return {"start_s": float(k), "end_s": float(k + 1), "face": None, "fused": None}

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self._at(i) for i in range(*k.indices(len(self)))]
        return self._at(k if k >= 0 else len(self) + k)


class Viewer:
    """Runs in the main thread (``update`` pumps Tk's events); never raises once open: a closed
    window only stops the showing."""

    def __init__(self, title: str):
        import tkinter

        self.tk = tkinter
        self.root = tkinter.Tk()            # TclError without a display: the caller runs headless
        self.root.title(f"emotion-pipeline live: {title}")
        self.label = tkinter.Label(self.root)
        self.label.pack()
        self.root.protocol("WM_DELETE_WINDOW", self.close)
        self.open, self.painter, self.photo, self.shown = True, None, None, 0

    def close(self) -> None:
        if self.open:
            self.open = False
            try:
                self.root.destroy()
            except self.tk.TclError:
                pass

    def update(self, frame: Frame, timeline: RecentSeconds, boxes: list[tuple[int, tuple]],
               segments: list[dict[str, Any]]) -> None:
        if not self.open:
            return
        from PIL import Image, ImageTk

        image = np.ascontiguousarray(frame.image[:, :, ::-1])          # BGR -> RGB
        h, w = image.shape[:2]
        try:
            if not len(timeline):          # before the first second is analysed: the picture alone
                picture = image
            else:
                if self.painter is None or (self.painter.w, self.painter.h) != (w, h):
                    self.painter = Painter({"timeline": timeline}, (w, h), w)
                self.painter.set_timeline(timeline, segments)
                picture = self.painter.paint(image, min(frame.t_s, timeline[-1]["start_s"] + 0.99), boxes)
            self.photo = ImageTk.PhotoImage(Image.fromarray(picture))
            self.label.configure(image=self.photo)
            self.root.update()
            self.shown += 1
        except self.tk.TclError:      # the window was closed
            self.open = False
