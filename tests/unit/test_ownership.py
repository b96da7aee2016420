"""Who may change or delete a stack, from the tags CloudFormation shows for it."""

from __future__ import annotations

import pytest

from syncd.core.ownership import OWNER_TAG, change_refused, delete_refused, owner_tags


def test_every_change_set_of_a_repo_names_it():
    assert owner_tags("team2") == {OWNER_TAG: "team2"}


@pytest.mark.parametrize(
    ("tags", "adopt", "applied_before", "refused"),
    [
        ({OWNER_TAG: "team2"}, False, False, None),
        ({OWNER_TAG: "team1"}, True, True, "belongs to repo 'team1'"),  # never, even adopted
        ({}, False, False, "did not create it"),
        ({"team": "x"}, True, False, None),  # adopted by the config
        ({}, False, True, None),  # deployed by syncd before it tagged its stacks
    ],
)
def test_who_may_change_a_stack(tags, adopt, applied_before, refused):
    why = change_refused("team2", tags, adopt=adopt, applied_before=applied_before)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why


@pytest.mark.parametrize(
    ("tags", "refused"),
    [
        ({OWNER_TAG: "team2"}, None),
        ({OWNER_TAG: "team1"}, "belongs to repo 'team1'"),
        ({}, "does not show the stack as this repo's"),  # the journal alone never deletes
    ],
)
def test_prune_deletes_only_what_cloudformation_shows_as_the_repos(tags, refused):
    why = delete_refused("team2", tags)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why
