"""syncd.core.order: `stack-output` dependencies, their cycles and the order they impose."""

from __future__ import annotations

import pytest

from syncd.core.order import dependency_cycles, ready

Deps = dict[str, set[str]]


def waves(deps: Deps) -> list[list[str]]:
    """What a pass does with `ready`: start every ready stack, let them all settle, repeat."""
    finished: set[str] = set()
    started: set[str] = set()
    out: list[list[str]] = []
    while wave := ready(deps, finished, started):
        out.append(wave)
        started |= set(wave)
        finished |= set(wave)
    return out


def test_no_dependencies_no_cycles() -> None:
    deps: Deps = {"a": set(), "b": set()}
    assert dependency_cycles(deps) == {}
    assert waves(deps) == [["a", "b"]]


def test_empty_set() -> None:
    assert dependency_cycles({}) == {}
    assert waves({}) == []
    assert ready({}, set(), set()) == []


def test_self_cycle() -> None:
    deps: Deps = {"a": {"a"}, "b": set()}
    assert dependency_cycles(deps) == {"a": "a -> a"}
    assert waves(deps) == [["b"]]


def test_two_cycle() -> None:
    deps: Deps = {"a": {"b"}, "b": {"a"}, "c": set()}
    assert dependency_cycles(deps) == {"a": "a -> b -> a", "b": "a -> b -> a"}
    assert waves(deps) == [["c"]]


def test_three_cycle() -> None:
    deps: Deps = {"net": {"app"}, "app": {"db"}, "db": {"net"}}
    cycles = dependency_cycles(deps)
    assert set(cycles) == {"net", "app", "db"}
    assert len(set(cycles.values())) == 1
    assert cycles["app"] == "app -> db -> net -> app"
    assert waves(deps) == []


def test_a_stack_depending_on_a_cycle_is_not_on_it_but_never_ordered() -> None:
    deps: Deps = {"a": {"b"}, "b": {"a"}, "c": {"a"}, "d": set()}
    assert set(dependency_cycles(deps)) == {"a", "b"}
    assert waves(deps) == [["d"]]
    assert ready(deps, finished={"d"}, started={"d"}) == []


def test_every_stack_on_a_cycle_is_reported() -> None:
    # d sits on the cycle a -> d -> c -> a, found after the cycle a -> b -> c -> a was.
    deps: Deps = {"a": {"b", "d"}, "b": {"c"}, "c": {"a"}, "d": {"c"}}
    cycles = dependency_cycles(deps)
    assert set(cycles) == {"a", "b", "c", "d"}
    assert "d" in cycles["d"].split(" -> ")


def test_two_separate_cycles() -> None:
    deps: Deps = {"a": {"b"}, "b": {"a"}, "x": {"y"}, "y": {"x"}}
    cycles = dependency_cycles(deps)
    assert cycles["a"] == cycles["b"] == "a -> b -> a"
    assert cycles["x"] == cycles["y"] == "x -> y -> x"


def test_dependencies_outside_the_set_are_ignored() -> None:
    deps: Deps = {"app": {"shared-vpc"}, "db": {"app", "other-repo-stack"}}
    assert dependency_cycles(deps) == {}
    assert waves(deps) == [["app"], ["db"]]
    assert ready(deps, finished=set(), started=set()) == ["app"]


def test_every_stack_starts_after_its_dependencies_have_settled() -> None:
    deps: Deps = {
        "app": {"db", "network"},
        "db": {"network"},
        "network": set(),
        "dns": set(),
        "cdn": {"app", "dns"},
    }
    assert waves(deps) == [["dns", "network"], ["db"], ["app"], ["cdn"]]


@pytest.mark.parametrize(
    ("finished", "started", "expected"),
    [
        (set(), set(), ["dns", "network"]),
        (set(), {"network"}, ["dns"]),
        ({"network"}, {"network"}, ["db", "dns"]),
        ({"network", "db"}, {"network", "db", "dns"}, ["app"]),
        ({"network", "db", "dns"}, {"network", "db", "dns"}, ["app"]),
        ({"network", "db", "dns", "app"}, {"network", "db", "dns", "app"}, []),
    ],
)
def test_ready(finished: set[str], started: set[str], expected: list[str]) -> None:
    deps: Deps = {"app": {"db", "network"}, "db": {"network"}, "network": set(), "dns": set()}
    assert ready(deps, finished, started) == expected


def test_ready_waits_for_a_started_but_unfinished_dependency() -> None:
    deps: Deps = {"app": {"network"}, "network": set()}
    assert ready(deps, finished=set(), started={"network"}) == []
    assert ready(deps, finished={"network"}, started={"network"}) == ["app"]


def test_a_long_cycle_is_described_in_bounded_words() -> None:
    # A ring of 2,000 stacks: every member gets the same short description, not 2,000 names.
    names = [f"s{i:04d}" for i in range(2000)]
    deps = {name: {names[(i + 1) % len(names)]} for i, name in enumerate(names)}
    cycles = dependency_cycles(deps)
    assert set(cycles) == set(names)
    text = cycles["s0000"]
    assert len(text) < 200 and "(1993 more)" in text
    assert text.startswith("s0000 -> s0001") and text.endswith("-> s0000")
