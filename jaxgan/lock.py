"""One trainer per workdir: a lock file naming its holder, refreshed while the trainer runs.

`WORKDIR/train.lock` holds the host, pid and start time of the trainer that owns the workdir;
a thread rewrites its `refreshed` time every `refresh_s` seconds. Another trainer refuses to
start (`WorkdirBusy`) unless the lock is stale: its pid is gone on this host, or it was not
refreshed for `stale_s` seconds (a trainer on another host that died with it). `force=True`
takes any lock; the trainer that held it notices at its next refresh (`WorkdirLock.lost`).
In a multi-host run process 0 holds the lock for all.

On shared storage (a gs:// workdir) the lock is best effort: an object store has neither
create-if-absent (O_EXCL) nor hard links here, so taking it is look, write, read back. Two
trainers starting within the same second could both write; the one whose write was
overwritten finds another token at its next refresh and stops (`lost`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

from jaxgan import paths

log = logging.getLogger("jaxgan")

LOCK_FILE = "train.lock"
REFRESH_S = 30.0
# Ten missed refreshes: a trainer that is alive refreshes far more often, even while compiling.
STALE_S = 600.0


class WorkdirBusy(RuntimeError):
  """Another trainer holds the workdir's lock; the message names it (host, pid, since)."""


def _start_ticks(pid: int) -> int | None:
  """When process `pid` started (clock ticks after boot; Linux only), to tell a reused pid."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return int(f.read().rsplit(")", 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _alive(pid: int) -> bool:
  """Whether process `pid` of this host runs (a zombie does not)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process: it exists
    return True
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return True


def _describe(holder: dict) -> str:
  if not holder:
    return "an unknown trainer"
  since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
  return f"pid {holder.get('pid')} on host {holder.get('host')} since {since}"


class WorkdirLock:
  """The lock of one workdir: `acquire()` (or use as a context manager), `release()`."""

  def __init__(self, workdir: str, *, force: bool = False, refresh_s: float = REFRESH_S,
               stale_s: float = STALE_S):
    self.path = paths.join(paths.resolve(workdir), LOCK_FILE)
    self.folder = paths.dirname(self.path)
    self.force, self.refresh_s, self.stale_s = force, refresh_s, stale_s
    now = time.time()
    self.mine = {"host": socket.gethostname(), "pid": os.getpid(),
                 "pid_start": _start_ticks(os.getpid()), "started": now, "refreshed": now,
                 "token": uuid.uuid4().hex}
    self.lost: str | None = None   # set by the refresh thread when another trainer took over
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  # --- reading and judging the file ---------------------------------------------------------

  def read(self) -> dict | None:
    """The lock's content; None when there is no lock; {} when it cannot be parsed."""
    try:
      return json.loads(paths.read_text(self.path))
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      return {}

  def stale_reason(self, holder: dict) -> str | None:
    """Why `holder`'s lock no longer counts (None: it does)."""
    if not holder:
      try:
        age = time.time() - paths.mtime(self.path)
      except OSError:
        return "its lock file is gone"
      # A lock being created by the O_EXCL fallback is empty for a moment.
      return f"its lock file is unreadable (written {age:.0f} s ago)" if age > 10 else None
    age = time.time() - float(holder.get("refreshed", 0))
    if age > self.stale_s:
      return f"its lock was last refreshed {age:.0f} s ago"
    if holder.get("host") == self.mine["host"]:
      pid = int(holder.get("pid", -1))
      if pid <= 0 or not _alive(pid):
        return "that process is gone"
      recorded, current = holder.get("pid_start"), _start_ticks(pid)
      if recorded is not None and current is not None and recorded != current:
        return "that pid now belongs to another process"
    return None

  # --- taking and giving back ---------------------------------------------------------------

  def _write(self, exclusive: bool) -> bool:
    """Writes our content; with exclusive=True only if there is no lock (False if there is)."""
    content = json.dumps(self.mine, indent=1)
    if not exclusive:
      paths.write_atomic(self.path, content)
      return True
    if paths.has_scheme(self.path):
      # No create-if-absent on an object store: look, then write (see the module's note).
      if paths.exists(self.path):
        return False
      paths.write_text(self.path, content)
      return True
    # Written whole beside the lock, then linked into place: a reader sees no lock or the
    # whole of ours, never half of it.
    tmp = f"{self.path}.{self.mine['token']}.tmp"
    paths.write_text(tmp, content)
    try:
      os.link(tmp, self.path)
    except FileExistsError:
      return False
    except OSError:  # a file system without hard links: create-if-absent, then write
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        return False
      with os.fdopen(fd, "w") as f:
        json.dump(self.mine, f, indent=1)
    finally:
      with contextlib.suppress(FileNotFoundError):
        paths.remove(tmp)
    return True

  def check(self) -> None:
    """Raises WorkdirBusy if a live trainer holds the lock (takes nothing): lets a command
    refuse before its slow imports and compilation."""
    holder = self.read()
    if holder is not None and not self.force and self.stale_reason(holder) is None:
      raise self._busy(holder)

  def _busy(self, holder: dict) -> WorkdirBusy:
    age = time.time() - float(holder.get("refreshed", time.time()))
    return WorkdirBusy(
        f"{self.folder} is in use by another trainer: {_describe(holder)} "
        f"(lock {self.path}, refreshed {age:.0f} s ago); stop it, or pass --force to take over")

  def acquire(self) -> "WorkdirLock":
    """Takes the lock or raises WorkdirBusy naming its holder."""
    paths.makedirs(self.folder)
    for _ in range(3):   # a holder releasing between our two looks: look again
      if self._write(exclusive=True):
        break
      holder = self.read()
      if holder is None:
        continue
      why = "--force" if self.force else self.stale_reason(holder)
      if why is None:
        raise self._busy(holder)
      log.warning("taking over the lock of %s from %s: %s", self.folder,
                  _describe(holder), why)
      self._write(exclusive=False)
      if holder.get("token") and why != "that process is gone":
        # A holder that may still run learns of it at its next refresh, even if this trainer
        # has finished and removed the lock by then.
        self._mark_taken(str(holder["token"]))
      break
    else:
      raise WorkdirBusy(f"{self.path}: could not take the lock (it keeps changing)")
    if (self.read() or {}).get("token") != self.mine["token"]:
      holder = self.read() or {}
      raise WorkdirBusy(f"{self.folder} was just taken by another trainer: "
                        f"{_describe(holder)}")
    self._thread = threading.Thread(target=self._refresh_loop, name="jaxgan-lock",
                                    daemon=True)
    self._thread.start()
    return self

  def _taken_mark(self, token: str) -> str:
    return f"{self.path}.{token}.taken"

  def _mark_taken(self, token: str) -> None:
    with contextlib.suppress(OSError):
      paths.write_text(self._taken_mark(token), _describe(self.mine))
    # Marks no holder came back for are left by trainers that died: clear the old ones.
    for name in paths.listdir(self.folder):
      path = paths.join(self.folder, name)
      if name.startswith(LOCK_FILE + ".") and name.endswith(".taken"):
        with contextlib.suppress(OSError):
          if time.time() - paths.mtime(path) > self.stale_s:
            paths.remove(path)

  def _refresh_loop(self) -> None:
    while not self._stop.wait(self.refresh_s):
      self.refresh()
      if self.lost:
        return

  def refresh(self) -> None:
    """Rewrites the lock's refresh time, or notes in `lost` that another trainer took it."""
    self.mine["refreshed"] = time.time()
    mark = self._taken_mark(self.mine["token"])
    if paths.exists(mark):
      by = "an unknown trainer"
      with contextlib.suppress(OSError):
        by = paths.read_text(mark).strip()
        paths.remove(mark)
      self.lost = f"another trainer took over {self.folder}: {by}"
      log.error("%s", self.lost)
      return
    try:
      holder = self.read()
      if holder is None and self._write(exclusive=True):
        log.warning("the lock %s was removed; written again", self.path)
        return
      holder = self.read()
      if holder is not None and holder.get("token") == self.mine["token"]:
        self._write(exclusive=False)
        return
    except OSError as e:  # a full disk or a lost mount: the lock stays as it was
      log.warning("cannot refresh the lock %s: %s", self.path, e)
      return
    self.lost = (f"another trainer took over {self.folder}: "
                 f"{_describe(holder or {})}")
    log.error("%s", self.lost)

  def release(self) -> None:
    """Stops refreshing and removes the lock if it is still ours."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)
      self._thread = None
    if (self.read() or {}).get("token") == self.mine["token"]:
      with contextlib.suppress(FileNotFoundError):
        paths.remove(self.path)

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


@contextlib.contextmanager
def hold(workdir: str, *, force: bool = False) -> Iterator[WorkdirLock | None]:
  """The workdir's lock for the length of a run: process 0 holds it; every process of a
  multi-host run raises WorkdirBusy when process 0 cannot take it."""
  import jax  # pylint: disable=import-outside-toplevel
  lock, error = None, None
  if jax.process_index() == 0:
    lock = WorkdirLock(workdir, force=force)
    try:
      lock.acquire()
    except WorkdirBusy as e:
      lock, error = None, e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    busy = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
    if int(busy) and error is None:
      error = WorkdirBusy(f"{workdir} is in use by another trainer (see process 0)")
  if error is not None:
    raise error
  try:
    yield lock
  finally:
    if lock is not None:
      lock.release()
