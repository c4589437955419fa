"""glibc's malloc arenas bounded in pipeline processes (s2core.allocator): counted with glibc's own
``malloc_info`` in fresh processes whose threads allocate at the same time."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from s2core.run.cluster import worker_env

#: A child process: optionally bound the arenas, then 8 threads allocate 4 MB blocks at once; prints
#: what bound_malloc_arenas returned and the number of heaps that malloc_info lists.
CHILD = r"""
import ctypes, os, sys, tempfile, threading
import numpy as np
from s2core.allocator import bound_malloc_arenas
bound = bound_malloc_arenas() if sys.argv[1] == "bound" else None
barrier = threading.Barrier(8)
def work():
    barrier.wait()
    for _ in range(20):
        blocks = [np.ones(1 << 20, np.float32) for _ in range(4)]
        del blocks
threads = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
path = tempfile.mktemp()
fp = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(fp)); libc.fclose(ctypes.c_void_p(fp))
print(bound, open(path).read().count("<heap nr="), os.environ.get("MALLOC_ARENA_MAX"))
"""


def _child(mode: str, **env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", CHILD, mode], env={**base, **env}, capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")
def test_arenas_are_bounded_for_the_process_and_its_children():
    bound, heaps, env = _child("bound")
    assert (bound, env) == ("True", "2")
    assert int(heaps) <= 2
    _, unbounded, env = _child("plain")  # the same threads without the bound: glibc's many arenas
    assert int(unbounded) > 2 and env == "None"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")
def test_the_users_own_setting_wins():
    bound, heaps, env = _child("bound", MALLOC_ARENA_MAX="3")
    assert (bound, env) == ("False", "3")
    assert int(heaps) <= 3


def test_dask_workers_get_the_bound(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert worker_env(1)["MALLOC_ARENA_MAX"] == "2"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert worker_env(1)["MALLOC_ARENA_MAX"] == "4"


#: A child process with two arenas: a thread fills 600 MB of 1 MB blocks from its arena (glibc serves a
#: run's strip buffers so once its dynamic threshold has grown; set here outright), frees all but every
#: 50th (the kept ones pin the heap, as a stage's survivors do), then the resident set before and after.
TRIM_CHILD = r"""
import ctypes, threading
import numpy as np
from s2core.allocator import bound_malloc_arenas, release_free_memory
bound_malloc_arenas()
ctypes.CDLL(None).mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: 1 MB blocks come from an arena, as strip buffers do
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 1e6
kept = []
def work():
    blocks = [np.ones(1 << 18, np.float32) for _ in range(600)]
    kept.extend(blocks[::50])
thread = threading.Thread(target=work)
thread.start()
thread.join()
before = rss()
print(release_free_memory(), round(before), round(rss()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")
def test_free_memory_is_given_back():
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    child = subprocess.run([sys.executable, "-c", TRIM_CHILD], env=base, capture_output=True, text=True,
                           timeout=120, check=True)
    done, before, after = child.stdout.split()[0], float(child.stdout.split()[1]), float(child.stdout.split()[2])
    assert before > 500, child.stderr  # the blocks were resident
    assert done == "True"
    assert before - after > 400, (before, after)  # most of the 588 MB freed but held by the arena
