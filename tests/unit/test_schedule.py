"""The scheduler's pure parts: critical-path heights, who gets the next slot, and the order a
pass starts its stacks in; and the shared slots that apply that choice across threads."""

from __future__ import annotations

import threading
import time

from syncd.apply import Outcome
from syncd.core.schedule import Request, heights, pick
from syncd.reconcile import run_in_dependency_order
from syncd.slots import Slots


def test_a_stack_nothing_waits_for_has_height_one():
    assert heights({"a": set(), "b": set()}) == {"a": 1, "b": 1}


def test_height_counts_the_longest_chain_waiting_behind_a_stack():
    # net <- app <- web, net <- db: net heads a chain of three
    deps = {"net": set(), "app": {"net"}, "web": {"app"}, "db": {"net"}, "solo": set()}
    assert heights(deps) == {"net": 3, "app": 2, "web": 1, "db": 1, "solo": 1}


def test_a_diamond_takes_its_longest_side():
    deps = {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b", "c"}, "e": {"d"}}
    assert heights(deps) == {"a": 4, "b": 3, "c": 3, "d": 2, "e": 1}


def test_dependencies_outside_the_set_and_on_itself_do_not_count():
    assert heights({"a": {"elsewhere", "a"}, "b": {"a"}}) == {"a": 2, "b": 1}


def test_a_cycle_does_not_hang():
    # Stacks on a cycle are never applied (a pass refuses them first); their heights only need
    # to exist, and a stack off the cycle still counts as usual.
    deps = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    found = heights(deps)
    assert set(found) == {"a", "b", "c"} and found["c"] == 1 and min(found.values()) >= 1


def test_a_chain_of_ten_thousand_is_walked_without_recursion():
    deps = {f"s{i}": ({f"s{i - 1}"} if i else set()) for i in range(10_000)}
    found = heights(deps)
    assert found["s0"] == 10_000 and found["s9999"] == 1


def r(repo: str, stack: str, height: int, seq: int) -> Request:
    return Request(repo, stack, height, seq)


def test_pick_prefers_the_critical_path():
    waiting = [r("x", "leaf", 1, 0), r("x", "head", 3, 1), r("x", "mid", 2, 2)]
    assert waiting[pick(waiting, {})].stack == "head"


def test_pick_among_equals_prefers_the_repo_holding_fewest_slots():
    waiting = [r("big", "b1", 1, 0), r("big", "b2", 1, 1), r("small", "s1", 1, 2)]
    assert waiting[pick(waiting, {"big": 5, "small": 1})].stack == "s1"
    assert waiting[pick(waiting, {"big": 1, "small": 1})].stack == "b1"  # then first come


def test_a_pass_starts_the_critical_path_first_when_slots_are_few():
    deps = {"leaf1": set(), "leaf2": set(), "head": set(), "tail": {"head"}}
    started: list[str] = []

    def run(name: str, done: object) -> Outcome:
        started.append(name)
        return Outcome.SUCCEEDED

    run_in_dependency_order(deps, run, 1, heights(deps))
    assert started == ["head", "leaf1", "leaf2", "tail"]


def test_a_stack_starts_as_soon_as_its_own_dependency_is_done():
    # slow is independent and long; fast -> after must not wait for slow.
    deps = {"slow": set(), "fast": set(), "after": {"fast"}}
    finished: dict[str, float] = {}
    release = threading.Event()

    def run(name: str, done: object) -> Outcome:
        if name == "slow":
            release.wait(5)
        finished[name] = time.monotonic()
        if name == "after":
            release.set()
        return Outcome.SUCCEEDED

    run_in_dependency_order(deps, run, 50, heights(deps))
    assert finished["after"] <= finished["slow"]


def _queue_behind(
    slots: Slots, asks: list[tuple[str, str, int]]
) -> tuple[list[str], list[threading.Thread]]:
    """Each ask queues (in this order) while every slot is held; returns the order granted."""
    order: list[str] = []
    threads = []
    for repo, stack, height in asks:
        t = threading.Thread(target=lambda a=(repo, stack, height): _take(slots, a, order))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 5
        while len(slots._waiting) < len(threads):  # in line before the next one asks
            assert time.monotonic() < deadline
            time.sleep(0.001)
    return order, threads


def _take(slots: Slots, ask: tuple[str, str, int], order: list[str]) -> None:
    repo, stack, height = ask
    with slots.take(repo, stack, height):
        order.append(stack)


def test_slots_go_to_the_critical_path_first():
    slots = Slots(1)
    gate = threading.Event()
    holder = threading.Thread(target=lambda: _hold(slots, "big", gate))
    holder.start()
    while slots.in_use() < 1:
        time.sleep(0.001)
    order, threads = _queue_behind(
        slots, [("big", "big-leaf", 1), ("small", "small-leaf", 1), ("big", "big-head", 3)]
    )
    gate.set()
    for t in [holder, *threads]:
        t.join(5)
    assert order == ["big-head", "big-leaf", "small-leaf"]  # then first come, first served


def test_slots_among_equals_go_to_the_repo_holding_fewest():
    slots = Slots(2)
    keep, gate = threading.Event(), threading.Event()
    holders = [
        threading.Thread(target=lambda: _hold(slots, "big", keep)),  # big keeps one slot
        threading.Thread(target=lambda: _hold(slots, "big", gate)),
    ]
    for t in holders:
        t.start()
    while slots.in_use() < 2:
        time.sleep(0.001)
    order, threads = _queue_behind(slots, [("big", "big-leaf", 1), ("small", "small-leaf", 1)])
    gate.set()  # one slot frees while big still holds the other: small goes first
    deadline = time.monotonic() + 5
    while len(order) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.001)
        if order == ["small-leaf"]:
            keep.set()
    keep.set()
    for t in [*holders, *threads]:
        t.join(5)
    assert order == ["small-leaf", "big-leaf"]
    assert slots.in_use() == 0


def _hold(slots: Slots, repo: str, until: threading.Event) -> None:
    with slots.take(repo, "holder"):
        until.wait(5)


def test_slots_never_hand_out_more_than_their_capacity():
    slots = Slots(3)
    peak = 0
    lock = threading.Lock()
    current = 0

    def work(i: int) -> None:
        nonlocal peak, current
        with slots.take(f"repo{i % 4}", f"s{i}"):
            with lock:
                current += 1
                peak = max(peak, current)
            time.sleep(0.01)
            with lock:
                current -= 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak == 3 and slots.in_use() == 0
