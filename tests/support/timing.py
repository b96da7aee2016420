"""How long a test waits for something that must happen.

CI shares its machine: under load a pass, a fetch or a process start takes many times its quiet
time. A test therefore waits for events, not for time, and the bound on such a wait is one only a
hang reaches: `PATIENCE`. A test never asserts that something was fast; how fast syncd is, is
measured in `bench/`, as medians against peers. A test may assert that a deliberate delay (a
deadline, a back-off) was not cut short: a lower bound cannot fail because the machine is busy.
"""

import time
from collections.abc import Callable

PATIENCE = 60.0  # seconds


def eventually(check: Callable[[], bool], timeout: float = PATIENCE, pause: float = 0.02) -> None:
    """Wait until `check()` is true (AssertionError after `timeout`): for a state another
    thread reaches just after the event the test saw."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"not true after {timeout} s")
        time.sleep(pause)
