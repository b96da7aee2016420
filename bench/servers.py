"""The AWS world of a benchmark in a process of its own (it must not share the bench's
interpreter): moto's server, or the in-memory CloudFormation of the test layer.

`start_moto()` runs the plain `moto_server` command. `start_moto(patched=True)` runs syncd's
embedded emulator (`syncd.emulator.start_emulator`, moto's server with syncd's fix for outputs,
parameters and tags after `ExecuteChangeSet`) in a Python process of its own instead, for
benchmarks whose stacks are deployed through change sets and read back with `DescribeStacks`.
`start_memory()` runs `tests/support/cfn_memory.py` (CloudFormation only, instant), for scales
moto cannot reach.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The patched emulator's process: syncd's start_emulator on the given port, until killed.
# With "serial", one request at a time: moto's backends are not thread-safe (DescribeStacks by
# name iterates the stacks while a concurrent create adds one: a 500 "OrderedDict mutated
# during iteration", seen with 1,000 stacks and 4 clients), and moto holds the GIL anyway.
_PATCHED = """\
import logging, sys, threading
sys.path.insert(0, sys.argv[2])
logging.disable(logging.WARNING)  # moto's and werkzeug's per-request lines
if sys.argv[3] == "serial":
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    lock, call = threading.Lock(), DomainDispatcherApplication.__call__
    def serial_call(self, environ, start_response):
        with lock:
            return list(call(self, environ, start_response))
    DomainDispatcherApplication.__call__ = serial_call
from syncd.emulator import start_emulator
start_emulator(int(sys.argv[1]))
threading.Event().wait()
"""


def start_moto(patched: bool = False, serial: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """moto's server on a free loopback port; returns the process and its URL.

    `patched`: syncd's emulator (moto with syncd's ExecuteChangeSet fix) in a process of its
    own, rather than the `moto_server` command; with `serial` too, it answers one request at a
    time. `BENCH_MOTO_STDERR=1` in the environment shows the server's stderr (its tracebacks).
    """
    port = free_port()
    if patched:
        root = str(Path(__file__).resolve().parent.parent)
        cmd = [sys.executable, "-c", _PATCHED, str(port), root, "serial" if serial else "-"]
    else:
        server = shutil.which("moto_server", path=str(Path(sys.executable).parent))
        cmd = [server or "moto_server", "-H", "127.0.0.1", "-p", str(port)]
    stderr = None if os.environ.get("BENCH_MOTO_STDERR") else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)
    return proc, _listening(proc, port, "moto_server")


def start_memory() -> tuple[subprocess.Popen[bytes], str]:
    """The in-memory CloudFormation (`tests/support/cfn_memory.py`: instant, thread-safe, paged
    listings at a page's cost) in a process of its own on a free loopback port; returns the
    process and its URL. It answers moto's reset path too."""
    port = free_port()
    root = str(Path(__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, "-m", "tests.support.cfn_memory", "--port", str(port)]
    stderr = None if os.environ.get("BENCH_MOTO_STDERR") else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    return proc, _listening(proc, port, "the in-memory CloudFormation")


def _listening(proc: subprocess.Popen[bytes], port: int, what: str) -> str:
    """The URL once `proc` listens on `port` (10 s at most)."""
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{what} did not start")
