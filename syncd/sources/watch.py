"""Push detection for a repository on this machine: filesystem events on its refs.

The only importer of watchdog. A push to a bare repository (or a commit in a working clone)
moves a file under `refs/` (written as `<ref>.lock`, then renamed) or rewrites `packed-refs`
(via `packed-refs.new`). `RefWatcher` watches `refs/` recursively and the Git folder itself,
not the whole repository: Git's temporary object folders would flood it. It never reconciles:
it calls `on_change`, debounced, which asks the repo's worker for a pass. When events cannot be
had (no inotify, too many watches), `start` says so and the worker goes on polling.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

DEBOUNCE = 0.02  # seconds: one push moves several files; one pass is enough
_WRITES = frozenset({"created", "modified", "moved", "deleted", "closed"})


def git_dir(path: Path) -> Path:
    """The Git folder of a bare repository or of a working clone."""
    return path / ".git" if (path / ".git").is_dir() else path


def is_ref_change(git_folder: Path, event_path: str) -> bool:
    """Whether a file event at `event_path` means a ref may have moved."""
    path = Path(event_path)
    name = path.name
    if name.endswith(".lock") or name == "packed-refs.new":
        return False
    if path == git_folder / "packed-refs" or path == git_folder / "HEAD":
        return True
    try:
        path.relative_to(git_folder / "refs")
    except ValueError:
        return False
    return True


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: RefWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Only writes: reading a ref (syncd's own fetch, a `git status` in a working clone)
        # opens and closes it, and must not ask for a pass, or passes would feed themselves.
        if event.is_directory or event.event_type not in _WRITES:
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            path = raw.decode() if isinstance(raw, bytes) else raw
            if path and is_ref_change(self.watcher.git_folder, path):
                self.watcher.changed()
                return


class RefWatcher:
    """Calls `on_change()` shortly after the refs of the repository at `path` move."""

    def __init__(
        self, path: Path, on_change: Callable[[], None], debounce: float = DEBOUNCE
    ) -> None:
        self.git_folder = git_dir(path).resolve()
        self.on_change = on_change
        self.debounce = debounce
        self._observer: Any = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def start(self) -> str | None:
        """Start watching; returns why events cannot be had, or None when they can."""
        refs = self.git_folder / "refs"
        if not refs.is_dir():
            return f"{self.git_folder} is not a Git repository (no refs/ folder)"
        observer = Observer()
        handler = _Handler(self)
        try:
            observer.schedule(handler, str(refs), recursive=True)
            observer.schedule(handler, str(self.git_folder), recursive=False)
            observer.start()
        except OSError as exc:  # inotify limits, a filesystem without events
            return f"cannot watch {self.git_folder}: {exc}"
        self._observer = observer
        return None

    def changed(self) -> None:
        with self._lock:
            if self._timer is not None:
                return  # a call is already due: this event is part of the same push
            self._timer = threading.Timer(self.debounce, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
        self.on_change()

    def stop(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
