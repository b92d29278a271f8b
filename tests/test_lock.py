"""One trainer per workdir: the lock file, its refresh, stale locks and --force."""

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from jaxgan import cli, lock as lock_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")


@pytest.fixture
def other_process():
  """A live process that is not this one (what holds the lock in these tests)."""
  proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
  yield proc
  proc.kill()
  proc.wait()


def _write_lock(workdir, **fields):
  now = time.time()
  holder = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": None,
            "started": now - 60, "refreshed": now, "token": "theirs"}
  holder.update(fields)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, lock_lib.LOCK_FILE), "w") as f:
    json.dump(holder, f)
  return holder


def _holder(workdir):
  with open(os.path.join(workdir, lock_lib.LOCK_FILE)) as f:
    return json.load(f)


def test_lock_names_its_holder_and_goes_on_release(tmp_path):
  with lock_lib.WorkdirLock(str(tmp_path)) as held:
    holder = _holder(tmp_path)
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert holder["token"] == held.mine["token"]
    with pytest.raises(lock_lib.WorkdirBusy, match=f"pid {os.getpid()} on host "):
      lock_lib.WorkdirLock(str(tmp_path)).acquire()
  assert not (tmp_path / lock_lib.LOCK_FILE).exists()


def test_second_trainer_is_refused_at_once(tmp_path, other_process, capsys):
  _write_lock(tmp_path, pid=other_process.pid)
  t0 = time.perf_counter()
  code = cli.main(["train", "--config", TINY, "--workdir", str(tmp_path), "--quiet"])
  err = capsys.readouterr().err.strip()
  assert code == 1
  assert time.perf_counter() - t0 < 10        # before any data or compilation
  assert len(err.splitlines()) == 1, err
  assert f"pid {other_process.pid} on host {socket.gethostname()} since " in err
  assert "--force" in err
  assert _holder(tmp_path)["pid"] == other_process.pid   # left alone
  assert not (tmp_path / "config.json").exists()


def test_stale_locks_are_taken_over_with_a_warning(tmp_path, caplog):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  cases = {
      "dead pid on this host": dict(pid=dead.pid),
      "not refreshed for long": dict(host="elsewhere", refreshed=time.time() - 3600),
      "unreadable and old": None,
  }
  for name, fields in cases.items():
    workdir = tmp_path / name.replace(" ", "_")
    if fields is None:
      workdir.mkdir()
      (workdir / lock_lib.LOCK_FILE).write_text("{not json")
      old = time.time() - 3600
      os.utime(workdir / lock_lib.LOCK_FILE, (old, old))
    else:
      _write_lock(workdir, **fields)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jaxgan"):
      with lock_lib.WorkdirLock(str(workdir)) as held:
        assert _holder(workdir)["token"] == held.mine["token"], name
    assert "taking over the lock" in caplog.text, name
    assert not (workdir / lock_lib.LOCK_FILE).exists()


def test_live_locks_hold_and_force_takes_any(tmp_path, other_process):
  for fields in (dict(pid=other_process.pid), dict(host="elsewhere", pid=1)):
    _write_lock(tmp_path, **fields)
    with pytest.raises(lock_lib.WorkdirBusy, match="in use by another trainer"):
      lock_lib.WorkdirLock(str(tmp_path)).acquire()
    with lock_lib.WorkdirLock(str(tmp_path), force=True) as held:
      assert _holder(tmp_path)["token"] == held.mine["token"]


def test_refresh_keeps_the_lock_fresh_and_notices_a_takeover(tmp_path):
  held = lock_lib.WorkdirLock(str(tmp_path), refresh_s=0.05).acquire()
  try:
    first = _holder(tmp_path)["refreshed"]
    deadline = time.time() + 10
    while _holder(tmp_path)["refreshed"] == first and time.time() < deadline:
      time.sleep(0.02)
    assert _holder(tmp_path)["refreshed"] > first
    assert held.lost is None
    _write_lock(tmp_path, host="elsewhere", pid=4321)   # a trainer elsewhere took over
    deadline = time.time() + 10
    while held.lost is None and time.time() < deadline:
      time.sleep(0.02)
    assert held.lost and "pid 4321 on host elsewhere" in held.lost
  finally:
    held.release()
  assert _holder(tmp_path)["pid"] == 4321   # not ours: left in place


def test_a_holder_learns_of_a_forced_takeover_after_the_taker_is_gone(tmp_path):
  held = lock_lib.WorkdirLock(str(tmp_path), refresh_s=3600).acquire()
  try:
    with lock_lib.WorkdirLock(str(tmp_path), force=True) as taker:
      pass   # a short forced run: took the lock and removed it again
    assert not (tmp_path / lock_lib.LOCK_FILE).exists()
    held.refresh()
    assert held.lost == (f"another trainer took over {tmp_path}: pid {os.getpid()} on host "
                         f"{socket.gethostname()} since "
                         + time.strftime("%Y-%m-%d %H:%M:%S",
                                         time.localtime(taker.mine["started"])))
    assert not (tmp_path / lock_lib.LOCK_FILE).exists()   # not written again
    assert not list(tmp_path.glob("*.taken"))
  finally:
    held.release()


def test_lock_is_released_when_training_fails(tmp_path, capsys):
  # Fails after the lock is taken: the data set is not built in an empty data dir.
  code = cli.main(["train", "--config", TINY, "--workdir", str(tmp_path / "run"), "--quiet",
                   "--config.data.name=jsb_chorales",
                   f"--config.data.data_dir={tmp_path / 'data'}"])
  assert code == 1
  assert "jaxgan prepare jsb_chorales" in capsys.readouterr().err
  assert not (tmp_path / "run" / lock_lib.LOCK_FILE).exists()
