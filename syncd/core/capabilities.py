"""Which CloudFormation capabilities a template needs, seen from the template itself.

CloudFormation refuses a change set whose template creates IAM resources (CAPABILITY_IAM),
names them (CAPABILITY_NAMED_IAM) or uses a macro or transform (CAPABILITY_AUTO_EXPAND) unless
the caller acknowledges it. syncd acknowledges only what the config allows a stack (none by
default), and says which capability is missing, and why, before it calls CloudFormation. Nested
stacks are not opened: what their templates need shows in CloudFormation's own answer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

IAM = "CAPABILITY_IAM"
NAMED_IAM = "CAPABILITY_NAMED_IAM"
AUTO_EXPAND = "CAPABILITY_AUTO_EXPAND"
ALL = (IAM, NAMED_IAM, AUTO_EXPAND)

# The property that names each IAM resource type that can be given a name.
_NAME_PROPERTY = {
    "AWS::IAM::Role": "RoleName",
    "AWS::IAM::User": "UserName",
    "AWS::IAM::Group": "GroupName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::IAM::InstanceProfile": "InstanceProfileName",
}


def needed(template: Mapping[str, Any]) -> dict[str, str]:
    """Each capability the template needs, with the first thing in it that needs it."""
    found: dict[str, str] = {}
    if template.get("Transform"):
        found[AUTO_EXPAND] = "its Transform"
    resources = template.get("Resources")
    if not isinstance(resources, Mapping):
        return found
    for logical_id, resource in resources.items():
        if not isinstance(resource, Mapping):
            continue
        kind = str(resource.get("Type", ""))
        properties = resource.get("Properties")
        if kind.startswith("AWS::IAM::"):
            found.setdefault(IAM, f"{logical_id} ({kind})")
            name = _NAME_PROPERTY.get(kind)
            if name and isinstance(properties, Mapping) and name in properties:
                found.setdefault(NAMED_IAM, f"{logical_id} ({kind} with {name})")
        if isinstance(properties, Mapping) and "Fn::Transform" in properties:
            found.setdefault(AUTO_EXPAND, f"{logical_id} (Fn::Transform)")
    return found


def missing(needs: Mapping[str, str], allowed: Collection[str]) -> str | None:
    """Why a template that `needs` these capabilities (from `needed`) cannot be applied with
    the capabilities `allowed`, or None. CAPABILITY_NAMED_IAM covers CAPABILITY_IAM, as on
    CloudFormation."""
    granted = set(allowed) | ({IAM} if NAMED_IAM in allowed else set())
    lacking = {cap: why for cap, why in needs.items() if cap not in granted}
    if not lacking:
        return None
    caps = sorted(lacking)
    reasons = "; ".join(f"{cap} for {lacking[cap]}" for cap in caps)
    return (
        f"the template needs {reasons}, which the config does not allow this stack: add "
        f"{', '.join(caps)} to its capabilities (defaults, the repo, or repos[].stacks.<name>)"
    )
