"""Camera source: classify a frame every ``interval_s`` from a :class:`FrameSource`.

Frame sources are RGB ``uint8`` arrays ``(H, W, 3)``. :class:`OpenCVFrames` needs the
optional ``camera`` extra (``opencv-python-headless``) and is imported only when used;
:class:`SyntheticFrames` needs nothing and drives tests and demos.

Raises :class:`~edge_agent.errors.RuntimeUnavailableError` when OpenCV is missing and
:class:`~edge_agent.errors.TransportError` when the camera cannot be opened.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from edge_agent.errors import EdgeError, RuntimeUnavailableError, TransportError
from edge_agent.registry import ModelRegistry
from edge_agent.runtime.preprocess import image_to_array
from edge_agent.serving.images import image_target
from edge_agent.sources.base import ResultSink, classify_array
from edge_agent.threadname import NamedThread

log = logging.getLogger(__name__)


class FrameSource(Protocol):
    def read(self) -> np.ndarray | None:
        """The next RGB frame, or ``None`` when there is none (end of a finite source)."""

    def close(self) -> None: ...


class SyntheticFrames:
    """Frames from a list (looping or not), or generated gradients when none are given."""

    def __init__(self, frames: Sequence[np.ndarray] | None = None, *, width: int = 64,
                 height: int = 64, loop: bool = True) -> None:
        self.frames = list(frames) if frames is not None else None
        self.width, self.height, self.loop = width, height, loop
        self.count = 0

    def read(self) -> np.ndarray | None:
        n = self.count
        self.count += 1
        if self.frames is not None:
            if not self.frames or (n >= len(self.frames) and not self.loop):
                return None
            return _rgb(self.frames[n % len(self.frames)])
        yy, xx = np.mgrid[0:self.height, 0:self.width]
        frame = np.stack([(xx + n) % 256, (yy + 2 * n) % 256, (xx + yy) % 256], axis=-1)
        return frame.astype(np.uint8)

    def close(self) -> None:
        pass


def _rgb(frame: np.ndarray) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr.astype(np.uint8, copy=False)


class OpenCVFrames:
    """A V4L2 / USB / CSI camera or a video URL through OpenCV (BGR → RGB)."""

    def __init__(self, device: str, *, width: int | None = None,
                 height: int | None = None) -> None:
        try:
            import cv2
        except ImportError as e:
            raise RuntimeUnavailableError(
                "the camera source needs OpenCV: pip install 'edge-inference[camera]' "
                "(opencv-python-headless)") from e
        self._cv2: Any = cv2
        self._cap = cv2.VideoCapture(int(device) if device.isdigit() else device)
        if not self._cap.isOpened():
            raise TransportError(f"cannot open camera {device!r}")
        if width:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)

    def read(self) -> np.ndarray | None:
        ok, frame = self._cap.read()
        if not ok:
            return None
        return np.asarray(self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB))

    def close(self) -> None:
        self._cap.release()


def open_frames(device: str, *, width: int | None = None,
                height: int | None = None) -> FrameSource:
    """``synthetic`` → :class:`SyntheticFrames`, anything else → :class:`OpenCVFrames`."""
    if device == "synthetic":
        return SyntheticFrames(width=width or 64, height=height or 64)
    return OpenCVFrames(device, width=width, height=height)


class CameraSource:
    """Reads frames on its own thread and emits one top-k result per classified frame."""

    name = "camera"

    def __init__(self, frames: FrameSource, registry: ModelRegistry, model: str,
                 sink: ResultSink, *, version: int | None = None, interval_s: float = 1.0,
                 top_k: int = 3, max_frames: int | None = None,
                 end_of_stream_wait_s: float = 1.0) -> None:
        self.frames = frames
        self.registry = registry
        self.model = model
        self.sink = sink
        self.version = version
        self.interval_s = interval_s
        self.top_k = top_k
        self.max_frames = max_frames
        self.end_of_stream_wait_s = end_of_stream_wait_s
        self.classified = 0
        self.finished = threading.Event()  # set when a finite source or max_frames ends
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = NamedThread(target=self._run, name="camera", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self.frames.close()

    def _run(self) -> None:
        n = 0
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and n >= self.max_frames:
                    return
                frame = self.frames.read()
                if frame is None:
                    if isinstance(self.frames, SyntheticFrames):
                        return  # a finite synthetic source has ended
                    self._stop.wait(self.end_of_stream_wait_s)  # camera hiccup: retry
                    continue
                self.classify(frame, n)
                n += 1
                self._stop.wait(self.interval_s)
        finally:
            self.finished.set()

    def classify(self, frame: np.ndarray, index: int) -> dict[str, Any] | None:
        """One frame → result emitted to the sink (``None`` if the model is unavailable)."""
        try:
            served = self.registry.get(self.model, self.version)
            shape = image_target(served).shape
            from PIL import Image  # Pillow only once a camera is configured

            img = Image.fromarray(_rgb(frame))
            x = image_to_array(img, served.manifest.preprocessing,
                               (int(shape[1]), int(shape[2])))
            result = classify_array(self.registry, self.model, x, version=self.version,
                                    k=self.top_k, source="camera",
                                    request_id=f"frame-{index}", frame=index)
        except EdgeError as e:
            log.warning("camera frame %d not classified: %s", index, e)
            return None
        self.classified += 1
        self.sink.emit(result)
        return result
