"""Where images come from: a replayed data set (the conveyor simulator), a folder a camera drops
files into, or a camera through OpenCV.

A source yields `Item`s until it is exhausted or `stop` is set; each item carries its bytes (hashed
and decoded from the same read), its arrival time (latency is measured from it), the true class
when the source knows it, and the source's state to store with its decision (the replay position,
written in the decision's own transaction, so a restart resumes exactly after the last decision).
"""

from __future__ import annotations

import os
import queue
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Union

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.station.config import check_source

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class Item:
    path: str
    data: Union[bytes, np.ndarray]
    sha256: str
    arrival: float  # time.perf_counter() when the part arrived: latency starts here
    true_class: str | None = None
    state: dict[str, str] = field(default_factory=dict)


def _hash(data: bytes | np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()).hexdigest()


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None  # vanished or unreadable between listing and reading: an ERROR row instead


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


class Source:
    name: str = ""

    def items(self, stop: threading.Event) -> Iterator[Item]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Pacer:
    """Arrival times at `rate` per second (None: now). Behind schedule, items come at once and
    their latency includes the wait, as it would for parts queueing at a slow station."""

    def __init__(self, rate: float | None):
        self.rate = rate
        self.start = time.perf_counter()
        self.count = 0

    def wait(self, stop: threading.Event) -> float | None:
        """The next arrival time, after sleeping until then; None when stopped meanwhile."""
        if self.rate is None:
            return None if stop.is_set() else time.perf_counter()
        due = self.start + self.count / self.rate
        self.count += 1
        delay = due - time.perf_counter()
        if delay > 0 and stop.wait(delay):
            return None
        return due if not stop.is_set() else None


class ReplaySource(Source):
    """A class-folder tree (DIR/<class>/<image>) replayed at `rate` images/s in a fixed shuffled
    order; the folder name is the true class. The position is kept in the database."""

    def __init__(self, folder: str | Path, rate: float | None, log):
        self.folder = Path(folder)
        self.name = f"replay:{self.folder}"
        if not self.folder.is_dir():
            raise EdgepruneError(f"replay source: folder not found: {self.folder}")
        files = [(c.name, p) for c in sorted(self.folder.iterdir()) if c.is_dir()
                 for p in sorted(c.iterdir()) if is_image(p)]
        if not files:
            raise EdgepruneError(f"replay source {self.folder} holds no class folders with images "
                                 "(expected DIR/<class>/<image>.jpg)")
        random.Random(0).shuffle(files)  # classes mixed, as on a conveyor; the same order every start
        self.files = files
        self.rate = rate
        self.key = f"replay_position:{os.path.abspath(self.folder)}"
        self.position = int(log.get_state(self.key) or 0)

    def items(self, stop: threading.Event) -> Iterator[Item]:
        pacer = Pacer(self.rate)
        for index in range(self.position, len(self.files)):
            arrival = pacer.wait(stop)
            if arrival is None:
                return
            true_class, path = self.files[index]
            data = _read(path) or b""
            yield Item(os.path.abspath(path), data, _hash(data), arrival, true_class,
                       {self.key: str(index + 1)})
            self.position = index + 1


class FolderSource(Source):
    """New image files in DIR, as a camera drops them (watchdog), and at start every file that
    arrived while the station was down (already decided ones are skipped by the log).

    A file is taken when its writer closes it (inotify's close-after-write, on Linux) or when it
    is renamed into the folder (the safe way for a camera to drop a file); elsewhere, when its
    size has stopped changing."""

    SETTLE_S = 0.05

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.name = f"folder:{self.folder}"
        if not self.folder.is_dir():
            raise EdgepruneError(f"folder source: folder not found: {self.folder}")
        self.queue: queue.Queue[tuple[Path, bool]] = queue.Queue()
        self.observer = None

    def _start_watching(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        closes = sys.platform.startswith("linux")
        q = self.queue

        class Handler(FileSystemEventHandler):
            def on_closed(self, event):  # close after write only (not our own reads)
                if not event.is_directory:
                    q.put((Path(event.src_path), False))

            def on_moved(self, event):
                if not event.is_directory:
                    q.put((Path(event.dest_path), False))

            def on_created(self, event):
                if not event.is_directory and not closes:
                    q.put((Path(event.src_path), True))

        self.observer = Observer()
        self.observer.schedule(Handler(), str(self.folder), recursive=False)
        self.observer.start()

    def _settled(self, path: Path) -> bool:
        try:
            size = path.stat().st_size
            time.sleep(self.SETTLE_S)
            return path.stat().st_size == size
        except OSError:
            return False

    def items(self, stop: threading.Event) -> Iterator[Item]:
        self._start_watching()  # before the scan: a file dropped during the scan is not missed
        existing = sorted((p for p in self.folder.iterdir() if p.is_file() and is_image(p)),
                          key=lambda p: (p.stat().st_mtime_ns, p.name))
        for path in existing:
            self.queue.put((path, False))
        while not stop.is_set():
            try:
                path, settle = self.queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if not is_image(path) or not path.is_file():
                continue
            while settle and not self._settled(path):
                if stop.is_set():
                    return
            data = _read(path)
            if data is None:
                continue
            yield Item(os.path.abspath(path), data, _hash(data), time.perf_counter())

    def close(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=2)


class CameraSource(Source):
    """Frames from an OpenCV camera (`pip install opencv-python-headless`) at `rate` frames/s."""

    def __init__(self, index: int, rate: float | None):
        try:
            import cv2
        except ImportError:
            raise EdgepruneError("camera:N needs OpenCV, which is not installed: pip install "
                                 "opencv-python-headless (or use folder:DIR with the camera's own "
                                 "software dropping files)") from None
        self.cv2 = cv2
        self.index = index
        self.name = f"camera:{index}"
        self.rate = rate
        self.capture = cv2.VideoCapture(index)
        if not self.capture.isOpened():
            raise EdgepruneError(f"camera {index} cannot be opened (is it connected, and free?)")

    def items(self, stop: threading.Event) -> Iterator[Item]:
        pacer = Pacer(self.rate)
        while True:
            arrival = pacer.wait(stop)
            if arrival is None:
                return
            ok, frame = self.capture.read()
            if not ok:
                raise EdgepruneError(f"camera {self.index} stopped delivering frames")
            rgb = np.ascontiguousarray(frame[:, :, ::-1])  # OpenCV gives BGR
            yield Item(f"camera:{self.index}/{time.time_ns()}", rgb, _hash(rgb), arrival)

    def close(self) -> None:
        self.capture.release()


def open_source(spec: str, *, rate: float | None, log) -> Source:
    kind, argument = check_source(spec)
    if kind == "replay":
        return ReplaySource(argument, rate, log)
    if kind == "folder":
        return FolderSource(argument)
    return CameraSource(int(argument), rate)
