"""Errors that stop a run with one clear line: failed writes (checkpoints, TensorBoard, images,
config.json) and non-finite values. Kept free of heavy imports: the command line catches them."""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

log = logging.getLogger("jaxgan")
T = TypeVar("T")

# Tensorstore (Orbax's array writer) reports an OS error as text: "... [os_error_code='28']".
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)'?")


class ConfigError(ValueError):
  """A bad config key or value; the message names the key and what is allowed."""


class NonFiniteError(RuntimeError):
  """The run stopped on non-finite values; the message names the step and the value."""


class WriteError(OSError):
  """A file or folder of a run could not be written: `what` (e.g. "checkpoint"), `path`,
  `step` (None when no step applies) and `reason` (e.g. "No space left on device")."""

  def __init__(self, what: str, path: str, reason: str, step: int | None = None):
    at = f" of step {step}" if step is not None else ""
    super().__init__(f"cannot write {what}{at} to {path}: {reason}")
    self.what, self.path, self.reason, self.step = what, path, reason, step

  def __reduce__(self):
    return (type(self), (self.what, self.path, self.reason, self.step))

  @classmethod
  def relayed(cls, message: str) -> "WriteError":
    """Another process's WriteError, known by its message alone (distributed.agree_ok)."""
    error = cls("", "", message)
    error.args = (message,)
    error.what = error.path = ""
    return error


def reason_of(e: BaseException) -> str:
  """A short reason for a failed write, whatever raised it: an OSError, a tensorstore error
  (a ValueError whose text carries the OS error code) or a TensorFlow OpError."""
  code = getattr(e, "errno", None)
  if isinstance(code, int) and code:
    return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
  text = str(getattr(e, "message", "") or e)
  match = _OS_ERROR_CODE.search(text)
  if match:
    code = int(match.group(1))
    return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  # TensorFlow puts the OS reason after the file name: "{{function_node ...}} PATH; REASON".
  first = lines[0].rsplit("; ", 1)[-1] if lines else type(e).__name__
  return first[:300]


def attempt(on_error: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
  """fn(...), with a failed write (WriteError) handled as `on_error` (train.on_save_error)
  says: raised ("stop") or logged and left for the next interval ("retry", returns None)."""
  try:
    return fn(*args, **kwargs)
  except WriteError as e:
    if on_error == "stop":
      raise
    log.warning("%s; trying again at the next interval (train.on_save_error=retry)", e)
    return None


def close_all(closers: Sequence[Callable[[], Any]], *, quiet: bool) -> Exception | None:
  """Calls every closer, also after one failed, and returns the first failure. quiet: after
  an error, whose message is the one to show: failures are logged at debug level only."""
  failure = None
  for close in closers:
    try:
      close()
    except Exception as e:  # pylint: disable=broad-except
      if quiet:
        log.debug("while stopping: %s", e)
      elif failure is None:
        failure = e
  return failure
