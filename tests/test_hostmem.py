"""runtime.keep_freed_memory: with the malloc setting on, a large block freed and allocated again keeps its pages."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Allocates and fills a 64 MB array (above glibc's largest mmap threshold, like XLA's scratch
# buffer of a GAN step) ten times and prints the minor page faults of the last nine rounds.
PROBE = """
import resource, sys
import numpy as np
from jaxgan import runtime
try:  # numpy asks for huge pages on big arrays; XLA's buffers get none: count 4 KiB pages
  np._core.multiarray._set_madvise_hugepage(False)
except AttributeError:
  np.core.multiarray._set_madvise_hugepage(False)
applied = runtime.keep_freed_memory()
np.ones(16 * 2**20, np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
  np.ones(16 * 2**20, np.float32)
print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(env_value):
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("JAXGAN_KEEP_HOST_MEMORY", None)
  if env_value is not None:
    env["JAXGAN_KEEP_HOST_MEMORY"] = env_value
  out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                       check=True).stdout.split()
  return bool(int(out[0])), int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc setting")
def test_freed_blocks_keep_their_pages_and_the_switch_turns_it_off():
  applied, faults = _probe(None)
  if not applied:
    pytest.skip("this C library has no mallopt (not glibc)")
  off, faults_off = _probe("0")
  assert not off
  pages = 9 * 64 * 2**20 // 4096
  # Off: every round maps a fresh block and faults in all its 16,384 pages.
  assert faults_off > 0.9 * pages
  # On: the block comes back from the heap already mapped.
  assert faults < 0.05 * pages
