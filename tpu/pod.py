#!/usr/bin/env python3
"""Cloud TPU slices for jaxgan: create, set up, launch, watch, babysit and delete, over gcloud.

Runs where gcloud runs (a laptop, Cloud Shell, a small always-on VM) with the standard library
only, so it needs no jaxgan install there. On the workers it drives tpu/worker.sh, which travels
with the code. tpu/README.md walks through it; `tpu/pod.sh COMMAND --help` lists the options.

A slice is a TPU VM (`gcloud compute tpus tpu-vm create`) or a queued resource holding one node
or, multi-slice, several (`--slices N`: nodes NAME-0 .. NAME-(N-1)). Every command finds out which
by asking gcloud, so only `create` and `babysit` need to be told.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from typing import Callable, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = ('[ -f ~/jaxgan/src/tpu/worker.sh ] || { echo "$(hostname): not set up '
          '(tpu/pod.sh setup)" >&2; exit 3; }; bash ~/jaxgan/src/tpu/worker.sh')
# A worker that was never set up (a new VM) has no worker.sh yet, and says so in the same form.
STATUS = ("if [ -f ~/jaxgan/src/tpu/worker.sh ]; then bash ~/jaxgan/src/tpu/worker.sh status; "
          "else set -- $(hostname -I 2>/dev/null); echo \"JAXGAN-STATUS host=$(hostname) "
          "ip=${1:--} state=none code=- cmd=- | not set up\"; fi")

# The TPU software version a new slice gets when --version is not given.
DEFAULT_VERSIONS = {"v4": "tpu-ubuntu2204-base", "v5litepod": "v2-alpha-tpuv5-lite",
                    "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
# Node and queued-resource states, by what the babysitter does about them.
NODE_PENDING = {"CREATING", "STARTING", "RESTARTING", "REPAIRING", "REIMAGING", "UNHIDING",
                "UNKNOWN", "STATE_UNSPECIFIED"}
QR_PENDING = {"CREATING", "ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING"}
# Anything else that is not READY/ACTIVE (PREEMPTED, TERMINATED, STOPPED, SUSPENDED, FAILED,
# DELETING, ...) means the slice is lost: delete it and create it again.

# Left out of the upload: environments, data, runs, version control and caches.
SKIP_ANYWHERE = {".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                 ".hypothesis", ".ipynb_checkpoints", ".DS_Store"}
SKIP_TOP = {"runs", "data", "samples", "tensorflow_datasets", "build", "dist", "wandb"}


class PodError(Exception):
  """A failure with a message for the user; the command exits 1 with it."""


def log(message: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- gcloud ------------------------------------------------------------------------------------

class Gcloud:
  """`gcloud compute tpus ...` with the zone and project of every call."""

  def __init__(self, zone: str, project: str | None = None, verbose: bool = False):
    self.zone, self.project, self.verbose = zone, project, verbose

  def argv(self, args: Sequence[str]) -> list[str]:
    extra = [f"--zone={self.zone}"] + ([f"--project={self.project}"] if self.project else [])
    return ["gcloud", "compute", "tpus", *args, *extra]

  def run(self, args: Sequence[str], *, capture: bool = True, check: bool = True,
          timeout: float | None = None, echo: bool = False) -> subprocess.CompletedProcess:
    argv = self.argv(args)
    if echo or self.verbose:
      print("$ " + shlex.join(argv), flush=True)
    try:
      proc = subprocess.run(argv, capture_output=capture, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    except FileNotFoundError:
      raise PodError("gcloud is not on PATH: install the Google Cloud CLI "
                     "(https://cloud.google.com/sdk/docs/install)") from None
    except subprocess.TimeoutExpired as e:
      out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
      return subprocess.CompletedProcess(argv, 124, out, f"timed out after {timeout:.0f} s")
    if check and proc.returncode:
      raise PodError(f"{shlex.join(argv[:5])} failed (exit {proc.returncode})"
                     + (f":\n{tail_text(proc.stderr)}" if capture else ""))
    return proc

  def json(self, args: Sequence[str]) -> dict | list | None:
    """The JSON answer of a describe/list, or None when the resource does not exist."""
    proc = self.run([*args, "--format=json"], check=False)
    if proc.returncode == 0:
      return json.loads(proc.stdout or "null")
    if "NOT_FOUND" in proc.stderr or "was not found" in proc.stderr:
      return None
    raise PodError(f"gcloud compute tpus {' '.join(args[:3])} failed (exit {proc.returncode}):\n"
                   + tail_text(proc.stderr))


def tail_text(text: str, lines: int = 20) -> str:
  return "\n".join((text or "").strip().splitlines()[-lines:])


# --- the slice -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Node:
  name: str
  state: str
  workers: int
  ips: Sequence[str] = ()   # internal addresses, in worker order


@dataclasses.dataclass
class SliceState:
  status: str             # READY | PENDING | LOST | MISSING
  detail: str             # the cloud's own words: "PREEMPTED", "queued resource SUSPENDED", ...
  nodes: list[Node]
  queued: bool | None

  @property
  def workers(self) -> int:
    return sum(n.workers for n in self.nodes)


@dataclasses.dataclass
class CreateSpec:
  accelerator: str
  version: str | None = None
  spot: bool = False
  queued: bool = False
  slices: int = 1
  valid_until: str | None = None
  extra: Sequence[str] = ()


@dataclasses.dataclass
class SetupSpec:
  python: str | None = None
  venv: str = "~/jaxgan/venv"
  skip_install: bool = False
  extras: str = "tpu"
  prepare: str | None = None
  max_upload_mb: float = 100.0


@dataclasses.dataclass
class WorkerRun:
  """One worker's run as tpu/worker.sh status reports it."""
  worker: int             # number across the slice(s), -1 if its address is not listed
  host: str
  state: str              # running | exited | stopped | dead | none
  code: str               # exit status, "-" while there is none
  cmd: str                # hash of the command, "-" before any launch
  last: str               # the last line of its log


STATUS_LINE = re.compile(
    r"JAXGAN-STATUS host=(\S+) ip=(\S+) state=(\S+) code=(\S+) cmd=(\S+) \| ?(.*)")


def default_version(accelerator: str) -> str:
  kind = accelerator.rsplit("-", 1)[0]
  if kind not in DEFAULT_VERSIONS:
    raise PodError(f"no default TPU software version for {accelerator!r}: give --version "
                   "(see https://cloud.google.com/tpu/docs/runtimes)")
  return DEFAULT_VERSIONS[kind]


def command_text(command: Sequence[str]) -> str:
  """The shell command the workers run: one argument is taken as a shell string as it is."""
  if not command:
    raise PodError("no command given: put it after `--`, e.g. -- jaxgan train --config ...")
  return command[0] if len(command) == 1 else shlex.join(command)


def command_hash(text: str) -> str:
  # What worker.sh reports: the first 12 hex digits of the sha256 of its command file.
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def encode(text: str) -> str:
  return base64.b64encode(text.encode()).decode()


class Pod:
  """One slice (a TPU VM or a queued resource) and the run on its workers."""

  def __init__(self, gcloud: Gcloud, name: str, *, internal_ip: bool = False,
               retry_wait: float = 15.0):
    self.gcloud, self.name = gcloud, name
    self.internal_ip = internal_ip
    self.retry_wait = retry_wait
    self.queued: bool | None = None   # found out by describe()
    self._nodes: list[Node] = []

  # --- what the cloud says ---

  def describe(self) -> SliceState:
    if self.queued is not False:
      qr = self.gcloud.json(["queued-resources", "describe", self.name])
      if qr is not None:
        self.queued = True
        return self._remember(self._from_queued(qr))
      if self.queued:
        return self._remember(SliceState("MISSING", "queued resource not found", [], True))
    node = self.gcloud.json(["tpu-vm", "describe", self.name])
    if node is None:
      self.queued = None
      return self._remember(SliceState("MISSING", "not found", [], None))
    self.queued = False
    return self._remember(self._from_nodes([node], node["state"]))

  def _remember(self, state: SliceState) -> SliceState:
    self._nodes = state.nodes
    return state

  @staticmethod
  def _node(js: dict) -> Node:
    endpoints = js.get("networkEndpoints") or []
    return Node(js["name"].rsplit("/", 1)[-1], js.get("state", "UNKNOWN"),
                max(1, len(endpoints)), [e.get("ipAddress", "") for e in endpoints])

  def _from_nodes(self, found: list[dict], detail: str) -> SliceState:
    nodes = [self._node(js) for js in found]
    states = {n.state for n in nodes}
    if states == {"READY"}:
      return SliceState("READY", detail, nodes, self.queued)
    lost = [n for n in nodes if n.state != "READY" and n.state not in NODE_PENDING]
    if lost:
      return SliceState("LOST", ", ".join(f"{n.name} {n.state}" for n in lost), nodes,
                        self.queued)
    return SliceState("PENDING", ", ".join(f"{n.name} {n.state}" for n in nodes), nodes,
                      self.queued)

  def _from_queued(self, qr: dict) -> SliceState:
    state = (qr.get("state") or {}).get("state", "UNKNOWN")
    if state in QR_PENDING:
      return SliceState("PENDING", f"queued resource {state}", [], True)
    if state != "ACTIVE":
      return SliceState("LOST", f"queued resource {state}", [], True)
    # The nodes: NAME for one slice, PREFIX-0 .. PREFIX-(N-1) for several.
    names, expected = set(), 0
    for spec in (qr.get("tpu") or {}).get("nodeSpec", []):
      multi = spec.get("multisliceParams")
      if multi:
        count = int(multi.get("nodeCount", 0))
        prefix = multi.get("nodeIdPrefix") or self.name
        names.update(f"{prefix}-{i}" for i in range(count))
        expected += count
      else:
        names.add(spec.get("nodeId", self.name))
        expected += 1
    listing = self.gcloud.json(["tpu-vm", "list"]) or []
    owner = f"/queuedResources/{self.name}"
    found = [js for js in listing if js["name"].rsplit("/", 1)[-1] in names
             or js.get("queuedResource", "").endswith(owner)]
    found.sort(key=lambda js: [int(t) if t.isdigit() else t
                               for t in re.split(r"(\d+)", js["name"].rsplit("/", 1)[-1])])
    if len(found) < expected:
      return SliceState("LOST", f"queued resource ACTIVE but {expected - len(found)} of its "
                        f"{expected} nodes are gone", [self._node(js) for js in found], True)
    return self._from_nodes(found, "queued resource ACTIVE")

  def nodes(self) -> list[Node]:
    if not self._nodes:
      state = self.describe()
      if state.status != "READY":
        raise PodError(f"{self.name} is not ready: {state.status} ({state.detail})")
    return self._nodes

  def wait_ready(self, poll: float, timeout: float | None = None) -> SliceState:
    start, said = time.time(), None
    while True:
      state = self.describe()
      if state.status == "READY":
        return state
      if state.status in ("LOST", "MISSING"):
        raise PodError(f"{self.name}: {state.detail} while waiting for it to be ready")
      if state.detail != said:
        log(f"{self.name}: {state.detail}: waiting")
        said = state.detail
      if timeout is not None and time.time() - start > timeout:
        raise PodError(f"{self.name} is still {state.detail} after {timeout:.0f} s")
      time.sleep(poll)

  # --- create and delete ---

  def create(self, spec: CreateSpec) -> None:
    version = spec.version or default_version(spec.accelerator)
    if spec.queued or spec.slices > 1:
      args = ["queued-resources", "create", self.name, f"--accelerator-type={spec.accelerator}",
              f"--runtime-version={version}"]
      args += ([f"--node-count={spec.slices}", f"--node-prefix={self.name}"] if spec.slices > 1
               else [f"--node-id={self.name}"])
      if spec.valid_until:
        args.append(f"--valid-until-duration={spec.valid_until}")
      self.queued = True
    else:
      args = ["tpu-vm", "create", self.name, f"--accelerator-type={spec.accelerator}",
              f"--version={version}"]
      self.queued = False
    if spec.spot:
      args.append("--spot")
    args += list(spec.extra)
    self.gcloud.run(args, capture=False, echo=True)
    self._nodes = []

  def delete(self) -> bool:
    """Deletes the slice (a queued resource with its nodes); False when there was none."""
    state = self.describe()
    if state.status == "MISSING":
      return False
    if self.queued:
      self.gcloud.run(["queued-resources", "delete", self.name, "--force", "--quiet"],
                      capture=False, echo=True)
    else:
      self.gcloud.run(["tpu-vm", "delete", self.name, "--quiet"], capture=False, echo=True)
    self._nodes = []
    self.queued = None
    return True

  # --- commands on the workers ---

  def _remote(self, verb: str, node: str, args: Sequence[str]) -> list[str]:
    remote = ["tpu-vm", verb, *args] if verb == "scp" else ["tpu-vm", verb, node, *args]
    # --quiet: never prompt (a first ssh makes a key without a passphrase instead of asking).
    remote.append("--quiet")
    if self.internal_ip:
      remote.append("--internal-ip")
    return remote

  def ssh(self, command: str, *, worker: str = "all", nodes: Sequence[Node] | None = None,
          capture: bool = True, retries: int = 0,
          timeout: float | None = None) -> list[subprocess.CompletedProcess]:
    """Runs `command` on `worker` of every node (concurrently), retrying failed connections."""
    nodes = list(nodes if nodes is not None else self.nodes())

    def one(node: Node) -> subprocess.CompletedProcess:
      args = self._remote("ssh", node.name, [f"--worker={worker}", f"--command={command}"])
      for attempt in range(retries + 1):
        proc = self.gcloud.run(args, capture=capture, check=False, timeout=timeout)
        if proc.returncode == 0 or attempt == retries:
          return proc
        log(f"ssh to {node.name} failed (exit {proc.returncode}); retrying in "
            f"{self.retry_wait:.0f} s")
        time.sleep(self.retry_wait)
      return proc

    return parallel(one, nodes)

  def scp(self, local: str, remote: str, *, retries: int = 0) -> None:
    def one(node: Node) -> None:
      args = self._remote("scp", node.name, [local, f"{node.name}:{remote}", "--worker=all"])
      for attempt in range(retries + 1):
        proc = self.gcloud.run(args, check=False)
        if proc.returncode == 0:
          return
        if attempt == retries:
          raise PodError(f"copying {local} to {node.name} failed:\n{tail_text(proc.stderr)}")
        log(f"scp to {node.name} failed (exit {proc.returncode}); retrying in "
            f"{self.retry_wait:.0f} s")
        time.sleep(self.retry_wait)

    parallel(one, self.nodes())

  def setup(self, spec: SetupSpec) -> None:
    """Uploads this checkout to every worker and makes its Python environment there."""
    nodes = self.nodes()
    total = sum(n.workers for n in nodes)
    with tempfile.TemporaryDirectory() as tmp:
      tarball = make_tarball(ROOT, os.path.join(tmp, "jaxgan-src.tgz"), spec.max_upload_mb)
      log(f"{self.name}: uploading {os.path.getsize(tarball) / 2**20:.1f} MB of code to "
          f"{total} workers")
      self.scp(tarball, "jaxgan-src.tgz", retries=3)   # relative to the home folder
    args = ["--venv", spec.venv, "--extras", spec.extras]
    if spec.python:
      args += ["--python", spec.python]
    if spec.skip_install:
      args.append("--skip-install")
    unpack = ("set -e; mkdir -p ~/jaxgan; rm -rf ~/jaxgan/src.new; mkdir ~/jaxgan/src.new; "
              "tar xzf ~/jaxgan-src.tgz -C ~/jaxgan/src.new; rm -f ~/jaxgan-src.tgz; "
              "bash ~/jaxgan/src.new/tpu/worker.sh setup " + shlex.join(args))
    log(f"{self.name}: setting up the environment on every worker"
        + (" (reusing " + spec.venv + ")" if spec.skip_install else ""))
    procs = self.ssh(unpack, nodes=nodes)
    out = "".join(p.stdout + p.stderr for p in procs)
    ready = re.findall(r"JAXGAN-SETUP-OK host=(\S+) python=(\S+)", out)
    if len(ready) < total:
      raise PodError(f"setup finished on {len(ready)} of {total} workers:\n{tail_text(out, 40)}")
    log(f"{self.name}: {total} workers ready (Python {ready[0][1]})")
    if spec.prepare:
      self.run_on_worker0(f"jaxgan prepare {spec.prepare}")

  def run_on_worker0(self, command: str) -> None:
    log(f"{self.name}: worker 0: {command}")
    proc = self.ssh(f"{WORKER} exec {encode(command)}", worker="0", nodes=self.nodes()[:1],
                    capture=False)[0]
    if proc.returncode:
      raise PodError(f"`{command}` failed on worker 0 (exit {proc.returncode})")

  def launch(self, command: str) -> None:
    """Starts `command` in the background on every worker, after clearing stale processes."""
    nodes = self.nodes()
    total = sum(n.workers for n in nodes)
    procs = self.ssh(f"{WORKER} launch {encode(command)}", nodes=nodes)
    out = "".join(p.stdout + p.stderr for p in procs)
    started = re.findall(r"JAXGAN-LAUNCHED host=(\S+)", out)
    if len(started) < total:
      raise PodError(f"the run started on {len(started)} of {total} workers:\n"
                     f"{tail_text(out, 40)}")
    log(f"{self.name}: launched on {total} workers: {command}")

  def runs(self, timeout: float = 120) -> list[WorkerRun]:
    """Each worker's run, in worker order; a worker that does not answer is missing."""
    nodes = self.nodes()
    procs = self.ssh(STATUS, nodes=nodes, timeout=timeout)
    found, offset = [], 0
    for node, proc in zip(nodes, procs):
      for line in proc.stdout.splitlines():
        m = STATUS_LINE.search(line)
        if m:
          host, ip, *rest = m.groups()
          index = offset + list(node.ips).index(ip) if ip in node.ips else -1
          found.append(WorkerRun(index, host, *rest))
      offset += node.workers
    return sorted(found, key=lambda r: (r.worker < 0, r.worker))

  def stop(self, grace: int = 30) -> None:
    self.ssh(f"{WORKER} stop {int(grace)}")

  def tail(self, worker: int = 0, lines: int = 100, follow: bool = True) -> int:
    node, index = self.locate(worker)
    flags = f"--lines {int(lines)}" + (" --follow" if follow else "")
    return self.ssh(f"{WORKER} tail {flags}", worker=str(index), nodes=[node],
                    capture=False)[0].returncode

  def locate(self, worker: int) -> tuple[Node, int]:
    """The node and in-node index of a worker numbered across all nodes."""
    for node in self.nodes():
      if worker < node.workers:
        return node, worker
      worker -= node.workers
    raise PodError(f"{self.name} has no worker {worker}")


def parallel(fn: Callable, items: Sequence) -> list:
  """fn over items in threads (one gcloud per node), results in order, first error raised."""
  if len(items) == 1:
    return [fn(items[0])]
  results, errors = [None] * len(items), []

  def run(i):
    try:
      results[i] = fn(items[i])
    except Exception as e:  # re-raised below, in the caller's thread
      errors.append(e)

  threads = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  if errors:
    raise errors[0]
  return results


# --- the upload ----------------------------------------------------------------------------------

def upload_files(root: str) -> list[tuple[str, str]]:
  """(path, name in the archive) of every file of the checkout worth sending to the workers."""
  files = []
  for folder, dirs, names in os.walk(root):
    rel = os.path.relpath(folder, root)
    top = rel == "."

    def keep(name: str) -> bool:
      return not (name in SKIP_ANYWHERE or name.startswith(".venv") or name.endswith(".egg-info")
                  or (top and name in SKIP_TOP))

    dirs[:] = sorted(d for d in dirs if keep(d))
    for name in sorted(names):
      path = os.path.join(folder, name)
      if keep(name) and (os.path.isfile(path) or os.path.islink(path)):
        files.append((path, os.path.normpath(os.path.join(rel, name))))
  return files


def make_tarball(root: str, out: str, max_mb: float) -> str:
  files = upload_files(root)
  sizes = [(os.path.getsize(p) if not os.path.islink(p) else 0, arc) for p, arc in files]
  total = sum(s for s, _ in sizes)
  if total > max_mb * 2**20:
    biggest = ", ".join(f"{arc} ({s / 2**20:.0f} MB)" for s, arc in sorted(sizes)[::-1][:5])
    raise PodError(f"the code upload would be {total / 2**20:.0f} MB (over --max-upload-mb "
                   f"{max_mb:g}); the largest files: {biggest}. Move data and runs out of the "
                   "checkout (they belong on shared storage) or raise the limit.")
  with tarfile.open(out, "w:gz") as tar:
    for path, arc in files:
      tar.add(path, arcname=arc, recursive=False)
  return out


# --- the babysitter ----------------------------------------------------------------------------

def judge(runs: list[WorkerRun]) -> str:
  """running | done | failed | interrupted, from every worker's state."""
  if any(r.state == "exited" and r.code != "0" for r in runs):
    return "failed"
  if all(r.state == "exited" for r in runs):
    return "done"
  if any(r.state in ("stopped", "dead", "none") for r in runs):
    return "interrupted"
  return "running"


def worker_tail(pod: Pod, worker: int, lines: int = 20) -> None:
  print(f"--- last lines of worker {worker}'s log ---", flush=True)
  pod.tail(worker, lines=lines, follow=False)
  print("---", flush=True)


class Babysitter:
  """Keeps `command` running on the slice until it exits 0 on every worker.

  Each check looks at the slice, then at the run on its workers, and does one thing:
  - no slice, or a lost one (preempted, deleted, a suspended or failed queued resource):
    create it again, set it up and relaunch. `jaxgan train` resumes from the last checkpoint
    in its workdir, which must be on storage that outlives the VMs (gs://);
  - a run interrupted on a live slice (stopped by a signal, killed): relaunch. Both count
    against `max_restarts`;
  - the command exited non-zero: show that worker's log and relaunch, up to `max_failures`
    times (a bug fails every time);
  - exit 0 on every worker, seen twice in a row (a clean exit may race a preemption): done.
  A run of the same command already going when it starts is watched, not restarted.
  """

  def __init__(self, pod: Pod, create: CreateSpec, setup: SetupSpec, command: str, *,
               max_restarts: int, max_failures: int, poll: float,
               delete_when_done: bool = False):
    self.pod, self.setup, self.command = pod, setup, command
    self.create = dataclasses.replace(create)
    self.max_restarts, self.max_failures = max_restarts, max_failures
    self.poll, self.delete_when_done = poll, delete_when_done
    self.want = command_hash(command)
    self.restarts = self.failures = self.silent = 0
    self.created = self.launched = self.finishing = False
    self.said: str | None = None
    self.shown: str | None = None

  def say(self, message: str) -> None:
    log(f"babysit {self.pod.name}: {message}")

  def run(self) -> int:
    """Checks every `poll` seconds until done; returns the exit status (0 done, 1 gave up)."""
    errors = 0
    while True:
      try:
        code = self.check()
        errors = 0
      except PodError as e:   # gcloud or the network failing: try again, a few times
        errors += 1
        self.say(f"{e} ({errors} errors in a row)")
        if errors >= 10:
          self.say("giving up")
          return 1
        code = None
      if code is not None:
        return code
      time.sleep(self.poll)

  def check(self) -> int | None:
    state = self.pod.describe()
    if state.queued and not self.create.queued:
      self.create.queued = True   # made as a queued resource: made again as one
    if state.status in ("MISSING", "LOST"):
      return self.recreate(state)
    if state.status == "PENDING":
      if state.detail != self.said:
        self.say(f"{state.detail}: waiting")
        self.said = state.detail
      return None
    self.said = None

    runs = self.pod.runs()
    if len(runs) < state.workers:
      self.silent += 1
      self.say(f"{state.workers - len(runs)} of {state.workers} workers did not answer "
               f"({self.silent} checks in a row)")
      if self.silent >= 5 and self.launched:
        self.say("taking the slice for lost")
        self.pod.delete()
      return None
    self.silent = 0
    if not self.launched:
      return self.start(runs)

    verdict = judge(runs)
    if verdict != "done":
      self.finishing = False
    if verdict == "done":
      if not self.finishing:
        self.finishing = True
        return None
      self.say("the run finished: exit 0 on every worker")
      worker_tail(self.pod, 0)
      if self.delete_when_done:
        self.pod.delete()
      return 0
    if verdict == "failed":
      bad = next(r for r in runs if r.state == "exited" and r.code != "0")
      self.failures += 1
      self.say(f"the command exited {bad.code} on worker {bad.worker} ({bad.host}; "
               f"{self.failures} of {self.max_failures + 1} tries)")
      worker_tail(self.pod, max(bad.worker, 0))
      self.pod.stop()
      if self.failures > self.max_failures:
        self.say(f"giving up (--max-failures {self.max_failures})")
        return 1
      self.pod.launch(self.command)
    elif verdict == "interrupted":
      how = ", ".join(sorted({r.state for r in runs if r.state != "running"}))
      if self.restarts >= self.max_restarts:
        self.say(f"the run was interrupted ({how}); giving up after {self.restarts} restarts "
                 f"(--max-restarts {self.max_restarts})")
        return 1
      self.restarts += 1
      self.say(f"the run was interrupted ({how}) on a live slice: relaunching (restart "
               f"{self.restarts} of {self.max_restarts})")
      self.pod.stop()
      self.pod.launch(self.command)
    elif runs[0].last != self.shown:
      self.say(f"running: {runs[0].last}")
      self.shown = runs[0].last
    return None

  def recreate(self, state: SliceState) -> int | None:
    if self.created or self.launched or state.status == "LOST":
      if self.restarts >= self.max_restarts:
        self.say(f"{state.detail}; giving up after {self.restarts} restarts (--max-restarts "
                 f"{self.max_restarts})")
        return 1
      self.restarts += 1
      self.say(f"{state.detail}: creating it again (restart {self.restarts} of "
               f"{self.max_restarts})")
    else:
      self.say("no such slice yet: creating it")
    self.created, self.launched, self.finishing = True, False, False
    if state.status == "LOST":
      self.pod.delete()
    self.pod.create(self.create)
    return None

  def start(self, runs: list[WorkerRun]) -> int | None:
    """The first look at a ready slice: watch a run of this command, or set up and launch."""
    active = [r for r in runs if r.state == "running"]
    if active and all(r.cmd == self.want for r in active):
      self.say(f"the run is already going on {len(active)} workers: watching it")
      self.launched = True
      return None
    if active:
      self.say(f"a different command is running on {self.pod.name} ({active[0].host}); stop "
               "it (tpu/pod.sh stop) or babysit that command")
      return 1
    try:
      self.pod.setup(self.setup)
      self.pod.launch(self.command)
      self.launched = True
    except PodError as e:
      self.failures += 1
      self.say(f"set-up or launch failed ({self.failures} of {self.max_failures + 1} tries): "
               f"{e}")
      if self.failures > self.max_failures:
        return 1
    return None


# --- the command line --------------------------------------------------------------------------

def env_flag(name: str) -> bool:
  return os.environ.get(name, "") not in ("", "0", "false", "no")


def build_parser() -> argparse.ArgumentParser:
  common = argparse.ArgumentParser(add_help=False)
  g = common.add_argument_group("the slice")
  g.add_argument("--name", default=os.environ.get("TPU"),
                 help="TPU VM or queued resource name (default $TPU)")
  g.add_argument("--zone", default=os.environ.get("ZONE"),
                 help="e.g. us-central2-b (default $ZONE)")
  g.add_argument("--project", help="Google Cloud project (default: gcloud's configured one)")
  g.add_argument("--internal-ip", action="store_true",
                 help="ssh/scp over internal IPs (from a VM in the same network)")
  g.add_argument("--verbose", "-v", action="store_true", help="print every gcloud command")

  creating = argparse.ArgumentParser(add_help=False)
  g = creating.add_argument_group("creating a slice")
  g.add_argument("--accelerator-type", default=os.environ.get("ACCEL"),
                 help="v5litepod-16, v4-32, v6e-8, ... (default $ACCEL)")
  g.add_argument("--version", default=os.environ.get("RUNTIME"),
                 help="TPU software version (default $RUNTIME, else the usual one for the chip: "
                      + ", ".join(f"{k}: {v}" for k, v in DEFAULT_VERSIONS.items()) + ")")
  g.add_argument("--spot", action="store_true", default=env_flag("SPOT"),
                 help="spot capacity: much cheaper, preemptible at any time (default $SPOT)")
  g.add_argument("--queued", action="store_true",
                 help="ask through a queued resource, which waits for capacity instead of "
                      "failing when there is none")
  g.add_argument("--slices", type=int, default=1,
                 help="multi-slice: N slices joined over the data-center network (implies "
                      "--queued; the TPU runtime sets MEGASCALE_* on the workers)")
  g.add_argument("--valid-until", metavar="DURATION",
                 help="queued: stop waiting for capacity after this long, e.g. 6h")
  g.add_argument("--create-flag", action="append", default=[], metavar="FLAG",
                 help="an extra flag for the gcloud create command, e.g. "
                      "--create-flag=--network=my-net (repeatable)")
  g.add_argument("--poll", type=float, default=60.0,
                 help="seconds between checks while waiting and babysitting (default 60)")

  setting_up = argparse.ArgumentParser(add_help=False)
  g = setting_up.add_argument_group("setting up the workers")
  g.add_argument("--python", metavar="PY",
                 help="interpreter on the workers to build the venv with (default: python3.13, "
                      "3.12 or 3.11 if the image has one, else uv with Python 3.12)")
  g.add_argument("--venv", default="~/jaxgan/venv",
                 help="where the environment lives on the workers (default ~/jaxgan/venv)")
  g.add_argument("--skip-install", action="store_true",
                 help="use --venv as it is (an image that already holds jaxgan's dependencies): "
                      "only the code is uploaded, and it runs from ~/jaxgan/src")
  g.add_argument("--extras", default="tpu", help="jaxgan extras to install (default tpu)")
  g.add_argument("--prepare", metavar="ARGS",
                 help='run `jaxgan prepare ARGS` once, on worker 0, e.g. '
                      '"jsb_chorales --data-dir gs://BUCKET/tfds" (shared storage: every worker '
                      "reads it, and a built data set is reused)")
  g.add_argument("--max-upload-mb", type=float, default=100.0,
                 help="refuse to upload a checkout larger than this (default 100)")

  parser = argparse.ArgumentParser(
      prog="tpu/pod.sh", description="Cloud TPU slices for jaxgan: create, set up, launch, "
      "watch, babysit and delete. Commands for the workers go after `--`.")
  sub = parser.add_subparsers(dest="action", required=True, metavar="COMMAND")

  p = sub.add_parser("create", parents=[common, creating], help="create the slice")
  p.add_argument("--no-wait", action="store_true", help="return before the slice is ready")
  sub.add_parser("setup", parents=[common, setting_up],
                 help="upload this checkout, make the Python environment on every worker")
  p = sub.add_parser("launch", parents=[common],
                     help="start `-- COMMAND` on every worker in the background, follow worker 0")
  p.add_argument("--no-tail", action="store_true", help="return once the run has started")
  sub.add_parser("status", parents=[common], help="the slice's state and each worker's run")
  p = sub.add_parser("tail", parents=[common], help="a worker's log (follows a live run)")
  p.add_argument("--worker", type=int, default=0, help="worker number across the slice(s)")
  p.add_argument("--lines", type=int, default=100)
  p.add_argument("--no-follow", action="store_true", help="print and return")
  p = sub.add_parser("stop", parents=[common],
                     help="SIGTERM the run on every worker (it saves a checkpoint), SIGKILL later")
  p.add_argument("--grace", type=int, default=60, help="seconds before SIGKILL (default 60)")
  p = sub.add_parser("ssh", parents=[common],
                     help="run `-- COMMAND` on the workers, with the run's environment")
  p.add_argument("--worker", default="all", help="all (default), or a number within the slice")
  p = sub.add_parser("babysit", parents=[common, creating, setting_up],
                     help="keep `-- COMMAND` running until it exits 0: recreate a lost slice, "
                          "set it up, relaunch (the run resumes from its checkpoint)")
  p.add_argument("--max-restarts", type=int, default=20,
                 help="slice losses and interruptions to recover from (default 20)")
  p.add_argument("--max-failures", type=int, default=2,
                 help="relaunches after the command exits non-zero (default 2)")
  p.add_argument("--delete-when-done", action="store_true",
                 help="delete the slice once the run has finished")
  sub.add_parser("delete", parents=[common], help="delete the slice (and its queued resource)")
  return parser


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  argv = list(argv)
  if "--" in argv:
    i = argv.index("--")
    return argv[:i], argv[i + 1:]
  return argv, []


def create_spec(args) -> CreateSpec:
  if not args.accelerator_type:
    raise PodError("give --accelerator-type (or set $ACCEL), e.g. v5litepod-16")
  if args.slices < 1:
    raise PodError(f"--slices {args.slices}: must be at least 1")
  return CreateSpec(args.accelerator_type, args.version, args.spot, args.queued, args.slices,
                    args.valid_until, args.create_flag)


def setup_spec(args) -> SetupSpec:
  return SetupSpec(args.python, args.venv, args.skip_install, args.extras, args.prepare,
                   args.max_upload_mb)


def run(argv: Sequence[str]) -> int:
  ours, command = split_command(argv)
  args = build_parser().parse_args(ours)
  takes_command = args.action in ("launch", "ssh", "babysit")
  if command and not takes_command:
    raise PodError(f"{args.action} takes no command after `--`")
  if not args.name:
    raise PodError("give --name (or set $TPU): the TPU VM or queued resource")
  if not args.zone:
    raise PodError("give --zone (or set $ZONE), e.g. us-central2-b")
  poll = getattr(args, "poll", 10.0)
  pod = Pod(Gcloud(args.zone, args.project, args.verbose), args.name,
            internal_ip=args.internal_ip, retry_wait=min(15.0, poll))

  if args.action == "create":
    spec = create_spec(args)
    if pod.describe().status != "MISSING":
      raise PodError(f"{args.name} already exists (tpu/pod.sh status); delete it first")
    pod.create(spec)
    if not args.no_wait:
      state = pod.wait_ready(poll=args.poll)
      log(f"{args.name} is ready: {len(state.nodes)} node(s), {state.workers} worker(s)")
    return 0
  if args.action == "setup":
    pod.setup(setup_spec(args))
    return 0
  if args.action == "launch":
    text = command_text(command)
    pod.launch(text)
    if args.no_tail:
      return 0
    return follow_worker0(pod, command_hash(text))
  if args.action == "status":
    return print_status(pod)
  if args.action == "tail":
    return pod.tail(args.worker, args.lines, follow=not args.no_follow)
  if args.action == "stop":
    pod.stop(args.grace)
    log(f"{args.name}: stopped")
    return 0
  if args.action == "ssh":
    text = command_text(command)
    nodes = pod.nodes()
    if args.worker == "all":
      procs = pod.ssh(f"{WORKER} exec {encode(text)}", nodes=nodes, capture=False)
    else:
      node, index = pod.locate(int(args.worker))
      procs = pod.ssh(f"{WORKER} exec {encode(text)}", worker=str(index), nodes=[node],
                      capture=False)
    return max(p.returncode for p in procs)
  if args.action == "babysit":
    return Babysitter(pod, create_spec(args), setup_spec(args), command_text(command),
                      max_restarts=args.max_restarts, max_failures=args.max_failures,
                      poll=args.poll, delete_when_done=args.delete_when_done).run()
  if args.action == "delete":
    if not pod.delete():
      log(f"{args.name}: nothing to delete")
    return 0
  raise AssertionError(args.action)


def follow_worker0(pod: Pod, want: str) -> int:
  """Follows worker 0's log until the run ends there; its exit status is ours."""
  try:
    pod.tail(0, lines=100, follow=True)
  except KeyboardInterrupt:
    print(f"\nstopped following; the run goes on (tpu/pod.sh tail, tpu/pod.sh stop)",
          file=sys.stderr)
    return 130
  first = [r for r in pod.runs() if r.worker == 0]
  if not first or first[0].cmd != want:
    return 1
  return int(first[0].code) if first[0].state == "exited" else 1


def print_status(pod: Pod) -> int:
  state = pod.describe()
  kind = {True: "queued resource", False: "TPU VM", None: "slice"}[state.queued]
  print(f"{pod.name} ({kind}): {state.status} ({state.detail})")
  if state.status != "READY":
    return 0
  for node in state.nodes:
    print(f"  node {node.name}: {node.state}, {node.workers} worker(s)")
  for r in pod.runs():
    code = f" {r.code}" if r.code != "-" else ""
    print(f"  worker {r.worker} {r.host}: {r.state}{code}  {r.last}")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  try:
    return run(sys.argv[1:] if argv is None else argv)
  except PodError as e:
    print(f"tpu/pod.sh: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("\ntpu/pod.sh: interrupted; a launched run goes on (tpu/pod.sh status)",
          file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
