"""Where images come from: a replayed data set (the conveyor simulator), a folder a camera drops
files into, or a camera through OpenCV.

A source yields `Item`s until it is exhausted or `stop` is set; each item carries its bytes (hashed
and decoded from the same read), its arrival time (latency is measured from it), the true class
when the source knows it, and the source's state to store with its decision (the replay position,
written in the decision's own transaction, so a restart resumes exactly after the last decision).
"""

from __future__ import annotations

import hashlib
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


def image_sha256(data: bytes | np.ndarray) -> str:
    """The fingerprint the log keeps per image: the file's bytes (a camera frame's pixels). The
    review export and the dashboard's thumbnails re-check files against it."""
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
        self.class_names = sorted({c for c, _ in files})  # the true classes the folder names give
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
            yield Item(os.path.abspath(path), data, image_sha256(data), arrival, true_class,
                       {self.key: str(index + 1)})
            self.position = index + 1


class FolderSource(Source):
    """New image files in DIR, as a camera drops them (watchdog), and at start every file that
    arrived while the station was down (already decided ones are skipped by the log).

    A file is taken when it is complete: when its writer closes it (inotify's close-after-write,
    on Linux), when it is renamed within the folder, or when it appears whole -- moved in from
    elsewhere, the safe way for a camera to drop a file: created, not empty, and not written to
    within QUIET_S. A file still being written (modify events) waits for its close. Without close
    events (macOS, Windows) a created file is taken once its size stops changing for QUIET_S."""

    QUIET_S = 0.05

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.name = f"folder:{self.folder}"
        if not self.folder.is_dir():
            raise EdgepruneError(f"folder source: folder not found: {self.folder}")
        self.events: queue.Queue[tuple[str, Path]] = queue.Queue()
        self.observer = None
        self.has_close_events = sys.platform.startswith("linux")

    def _start_watching(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        events = self.events

        class Handler(FileSystemEventHandler):
            def on_closed(self, event):  # close after write only (not our own reads)
                if not event.is_directory:
                    events.put(("ready", Path(event.src_path)))

            def on_moved(self, event):
                if not event.is_directory:
                    events.put(("ready", Path(event.dest_path)))

            def on_created(self, event):
                if not event.is_directory:
                    events.put(("created", Path(event.src_path)))

            def on_modified(self, event):
                if not event.is_directory:
                    events.put(("modified", Path(event.src_path)))

        self.observer = Observer()
        self.observer.schedule(Handler(), str(self.folder), recursive=False)
        self.observer.start()

    def _size(self, path: Path) -> int | None:
        try:
            return path.stat().st_size
        except OSError:
            return None

    def items(self, stop: threading.Event) -> Iterator[Item]:
        self._start_watching()  # before the scan: a file dropped during the scan is not missed
        existing = sorted((p for p in self.folder.iterdir() if p.is_file() and is_image(p)),
                          key=lambda p: (p.stat().st_mtime_ns, p.name))
        for path in existing:
            self.events.put(("ready", path))
        # created files not yet known complete: path -> [last activity, size then, being written]
        waiting: dict[Path, list] = {}
        while not stop.is_set():
            try:
                kind, path = self.events.get(timeout=self.QUIET_S / 2)
            except queue.Empty:
                kind, path = "", None
            now = time.perf_counter()
            ready: list[Path] = []
            if kind == "ready":
                waiting.pop(path, None)
                ready.append(path)
            elif kind == "created":
                waiting[path] = [now, self._size(path), False]
            elif kind == "modified" and path in waiting:
                entry = waiting[path]
                entry[0], entry[2] = now, entry[2] or self.has_close_events
            for candidate, (last, size, written) in list(waiting.items()):
                if written or now - last < self.QUIET_S:
                    continue  # a writer at work: its close event will say when it is done
                current = self._size(candidate)
                if current is None:
                    waiting.pop(candidate)
                elif current and current == size:
                    waiting.pop(candidate)
                    ready.append(candidate)
                else:
                    waiting[candidate] = [now, current, False]
            for candidate in ready:
                if not is_image(candidate) or not candidate.is_file():
                    continue
                data = _read(candidate)
                if data is None:
                    continue
                yield Item(os.path.abspath(candidate), data, image_sha256(data), time.perf_counter())
                if stop.is_set():
                    return

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
            yield Item(f"camera:{self.index}/{time.time_ns()}", rgb, image_sha256(rgb), arrival)

    def close(self) -> None:
        self.capture.release()


def open_source(spec: str, *, rate: float | None, log) -> Source:
    kind, argument = check_source(spec)
    if kind == "replay":
        return ReplaySource(argument, rate, log)
    if kind == "folder":
        return FolderSource(argument)
    return CameraSource(int(argument), rate)
