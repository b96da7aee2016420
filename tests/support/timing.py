"""How long a test waits for something that must happen.

CI shares its machine: under load a pass, a fetch or a process start takes many times its quiet
time. A test therefore waits for events, not for time, and the bound on such a wait is one only a
hang reaches: `PATIENCE`. A test never asserts that something was fast; how fast syncd is, is
measured in `bench/`, as medians against peers. A test may assert that a deliberate delay (a
deadline, a back-off) was not cut short: a lower bound cannot fail because the machine is busy.
"""

PATIENCE = 60.0  # seconds
