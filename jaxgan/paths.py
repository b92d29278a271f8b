"""Workdir, data and export paths that may be local or on shared storage (`gs://bucket/...`).

Every file jaxgan keeps for a run or a data set goes through here, so that a TPU pod can keep
them on an object store. A path with a scheme (`gs://`, `s3://`, TensorFlow's in-memory
`ram://`) is handed to TensorFlow's `tf.io.gfile` unchanged: `os.path.abspath` would turn
`gs://b/x` into `<cwd>/gs:/b/x`. Local paths use `os` directly, so that local runs and the
light commands (the lock check, the gallery) never import TensorFlow.

tf.io.gfile rather than etils.epath: epath (Orbax's and TFDS's path type) hands schemes to
tf.io.gfile itself, but only knows gs/s3/az/hf; tf.io.gfile also knows `ram://`, which the tests
use to run a whole cycle on a non-local file system.

Errors are OSErrors whatever the file system (TensorFlow's own become FileNotFoundError,
PermissionError, ... naming the path), so callers catch one kind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator

from jaxgan import errors


def has_scheme(path: str | os.PathLike) -> bool:
  """Whether `path` is a URL such as gs://bucket/x (not a local path)."""
  return "://" in os.fspath(path)


def resolve(path: str | os.PathLike) -> str:
  """A local path made absolute (and ~ expanded); a path with a scheme as it is."""
  path = os.fspath(path)
  if not path:
    raise ValueError("an empty path")
  if has_scheme(path):
    return path.rstrip("/") if not path.endswith("://") else path
  return os.path.abspath(os.path.expanduser(path))


def join(path: str | os.PathLike, *parts: str) -> str:
  # posixpath: object stores separate with "/" on every OS; gs://b + x -> gs://b/x.
  path = os.fspath(path)
  return posixpath.join(path, *parts) if has_scheme(path) else os.path.join(path, *parts)


def dirname(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  return posixpath.dirname(path) if has_scheme(path) else os.path.dirname(path)


def local_only(path: str | os.PathLike, what: str) -> str:
  """`path` itself, or a ConfigError naming it when it has a scheme: for files that only a
  local tool writes or reads (MIDI through miditoolkit, WAVs through FluidSynth, images)."""
  path = os.fspath(path)
  if has_scheme(path):
    raise errors.ConfigError(f"{what} must be a local folder or file, not {path}")
  return path


def _gfile():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel  (only for schemes)
  return tf.io.gfile


@contextlib.contextmanager
def _as_os_errors(path: str) -> Iterator[None]:
  """TensorFlow's file errors as the OSErrors the os module would raise, naming `path`."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  try:
    yield
  except tf.errors.NotFoundError as e:
    raise FileNotFoundError(errno.ENOENT, _reason(e, errno.ENOENT), path) from None
  except tf.errors.AlreadyExistsError as e:
    raise FileExistsError(errno.EEXIST, _reason(e, errno.EEXIST), path) from None
  except tf.errors.PermissionDeniedError as e:
    raise PermissionError(errno.EACCES, _reason(e, errno.EACCES), path) from None
  except tf.errors.OpError as e:  # unavailable, out of quota, ...: the text says which
    raise OSError(f"{path}: {_reason(e, errno.EIO)}") from None


def _reason(e, code: int) -> str:
  # TensorFlow's text often ends "PATH; REASON"; some file systems (ram://) give none.
  return (e.message or "").rsplit("; ", 1)[-1].strip() or os.strerror(code)


def exists(path: str) -> bool:
  if not has_scheme(path):
    return os.path.exists(path)
  with _as_os_errors(path):
    return _gfile().exists(path)


def isdir(path: str) -> bool:
  if not has_scheme(path):
    return os.path.isdir(path)
  with _as_os_errors(path):
    return _gfile().isdir(path)


def isfile(path: str) -> bool:
  if not has_scheme(path):
    return os.path.isfile(path)
  with _as_os_errors(path):
    return _gfile().exists(path) and not _gfile().isdir(path)


def makedirs(path: str) -> None:
  """Creates `path` and its parents (fine if it exists)."""
  if not has_scheme(path):
    os.makedirs(path, exist_ok=True)
    return
  with _as_os_errors(path):
    _gfile().makedirs(path)


def listdir(path: str) -> list[str]:
  """The names in folder `path` (without a trailing "/", which object stores add to folders)."""
  if not has_scheme(path):
    return os.listdir(path)
  with _as_os_errors(path):
    return [name.rstrip("/") for name in _gfile().listdir(path)]


def size(path: str) -> int:
  if not has_scheme(path):
    return os.path.getsize(path)
  with _as_os_errors(path):
    return int(_gfile().stat(path).length)


def mtime(path: str) -> float:
  """When `path` was last written (seconds since the epoch)."""
  if not has_scheme(path):
    return os.path.getmtime(path)
  with _as_os_errors(path):
    return _gfile().stat(path).mtime_nsec / 1e9


def read_bytes(path: str) -> bytes:
  if not has_scheme(path):
    with open(path, "rb") as f:
      return f.read()
  with _as_os_errors(path), _gfile().GFile(path, "rb") as f:
    return f.read()


def read_text(path: str) -> str:
  return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path`, replacing it (not atomic: see `write_atomic`)."""
  if not has_scheme(path):
    with open(path, "wb") as f:
      f.write(data)
    return
  with _as_os_errors(path):
    if path.startswith("ram://") and _gfile().exists(path):
      # TensorFlow's in-memory file system appends to a file opened for writing again.
      _gfile().remove(path)
    with _gfile().GFile(path, "wb") as f:
      f.write(data)


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def write_atomic(path: str, data: str | bytes) -> None:
  """Writes `path` so that a reader sees the old content or the new, never part of one:
  locally beside it, then renamed into place; on an object store directly (an object
  appears whole when its upload ends, and a rename there is a copy anyway)."""
  data = data.encode("utf-8") if isinstance(data, str) else data
  if has_scheme(path):
    write_bytes(path, data)
    return
  tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
  try:
    write_bytes(tmp, data)
    os.replace(tmp, path)
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)


def replace(src: str, dst: str) -> None:
  """Moves file or folder `src` to `dst` (replacing a file `dst`): a rename locally; on an
  object store a copy and delete, which is not atomic (its callers do not need it to be)."""
  if not has_scheme(src) and not has_scheme(dst):
    os.replace(src, dst)
    return
  with _as_os_errors(src):
    gfile = _gfile()
    if not gfile.isdir(src):
      gfile.rename(src, dst, overwrite=True)
      return
    # Not every file system renames folders (GCS renames object by object): copy, then delete.
    for root, _, files in gfile.walk(src):
      target = join(dst, posixpath.relpath(root, src)) if root != src else dst
      gfile.makedirs(target)
      for name in files:
        gfile.copy(join(root, name), join(target, name), overwrite=True)
    gfile.rmtree(src)


def remove(path: str) -> None:
  """Removes file `path` (FileNotFoundError if there is none)."""
  if not has_scheme(path):
    os.remove(path)
    return
  with _as_os_errors(path):
    _gfile().remove(path)


def rmtree(path: str, *, ignore_errors: bool = False) -> None:
  """Removes folder `path` and everything in it."""
  if not has_scheme(path):
    shutil.rmtree(path, ignore_errors=ignore_errors)
    return
  try:
    with _as_os_errors(path):
      _gfile().rmtree(path)
  except OSError:
    if not ignore_errors:
      raise
