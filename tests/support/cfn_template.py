"""What the in-memory CloudFormation (`cfn_memory`) reads from a template: parameters resolved
against the template's declarations, outputs evaluated for the simple cases, resource changes
between two versions, and the AWS query protocol's XML.

Outputs: literal values, `Ref` (a parameter, a pseudo parameter, or a resource: its made-up
physical id), `Fn::Sub` (`${Param}`, `${AWS::StackName}`, `${Resource}`, `${Res.Attr}`),
`Fn::GetAtt` (a made-up `<physical id>.<Attr>`) and `Fn::Join`. Anything else becomes
`<not evaluated: Fn::X>`: enough for chains of stacks passing outputs, no more.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

ACCOUNT = "123456789012"
NO_ECHO_MASK = "****"
_SUB = re.compile(r"\$\{([^}!][^}]*)\}")


class TemplateError(ValueError):
    """A ValidationError CloudFormation would send for these parameters or this template."""


def resolve_parameters(
    template: dict[str, Any], given: dict[str, str], previous: dict[str, str], keep: set[str]
) -> dict[str, str]:
    """Every declared parameter's value: given, the previous one (UsePreviousValue), else its
    Default. Raises TemplateError for undeclared or missing values, in CloudFormation's words."""
    declared = template.get("Parameters") or {}
    unknown = sorted((set(given) | keep) - set(declared))
    if unknown:
        raise TemplateError(f"Parameters: [{', '.join(unknown)}] do not exist in the template")
    values: dict[str, str] = {}
    missing = []
    for name, spec in declared.items():
        default = spec.get("Default") if isinstance(spec, dict) else None
        if name in keep and name in previous:
            values[name] = previous[name]
        elif name in given:
            values[name] = given[name]
        elif default is not None:
            values[name] = (
                ",".join(map(str, default)) if isinstance(default, list) else str(default)
            )
        else:
            missing.append(name)
    if missing:
        raise TemplateError(f"Parameters: [{', '.join(missing)}] must have values")
    return values


def no_echo(template: dict[str, Any]) -> set[str]:
    declared = template.get("Parameters") or {}
    return {
        n
        for n, s in declared.items()
        if isinstance(s, dict) and str(s.get("NoEcho")) in ("True", "true")
    }


def physical_id(stack_id: str, logical: str) -> str:
    """A resource's made-up physical id: stable for the stack's life, like AWS's."""
    suffix = hashlib.sha256(f"{stack_id}/{logical}".encode()).hexdigest()[:12].upper()
    return f"{stack_id.split('/')[1]}-{logical}-{suffix}"


def evaluate_outputs(
    template: dict[str, Any], params: dict[str, str], stack_name: str, stack_id: str, region: str
) -> list[dict[str, str]]:
    pseudo = {
        "AWS::StackName": stack_name,
        "AWS::StackId": stack_id,
        "AWS::Region": region,
        "AWS::AccountId": ACCOUNT,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
    }
    resources = template.get("Resources") or {}

    def ref(name: str) -> str:
        if name in params:
            return params[name]
        if name in pseudo:
            return pseudo[name]
        if name in resources:
            return physical_id(stack_id, name)
        return f"<not evaluated: Ref {name}>"

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if not isinstance(v, dict) or len(v) != 1:
            return v if isinstance(v, str) else json.dumps(v)
        ((fn, arg),) = v.items()
        if fn == "Ref" and isinstance(arg, str):
            return ref(arg)
        if fn == "Fn::GetAtt" and isinstance(arg, list) and len(arg) == 2:
            return f"{ref(str(arg[0]))}.{arg[1]}"
        if fn == "Fn::Join" and isinstance(arg, list) and len(arg) == 2:
            return str(arg[0]).join(value(x) for x in arg[1])
        if fn == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            local = {k: value(x) for k, x in extra.items()}

            def sub(m: re.Match[str]) -> str:
                name = m.group(1)
                if name in local:
                    return local[name]
                if "." in name and name.split(".", 1)[0] in resources:
                    res, attr = name.split(".", 1)
                    return f"{ref(res)}.{attr}"
                return ref(name)

            return _SUB.sub(sub, text).replace("${!", "${")
        return f"<not evaluated: {fn}>"

    outputs = []
    for key, spec in (template.get("Outputs") or {}).items():
        if not isinstance(spec, dict):
            continue
        out = {"OutputKey": key, "OutputValue": value(spec.get("Value", ""))}
        if "Description" in spec:
            out["Description"] = str(spec["Description"])
        export = spec.get("Export")
        if isinstance(export, dict) and "Name" in export:
            out["ExportName"] = value(export["Name"])
        outputs.append(out)
    return outputs


def resource_changes(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    old_params: dict[str, str],
    new_params: dict[str, str],
    tags_changed: bool,
    stack_id: str,
) -> list[dict[str, Any]]:
    """DescribeChangeSet's `Changes`: Add for a new resource, Remove for a gone one, Modify for
    one whose definition changed, that names a parameter whose value changed, or (new stack
    tags) every kept one. `old` None: a new stack, every resource added."""
    before = (old or {}).get("Resources") or {}
    after = new.get("Resources") or {}
    changed_params = {
        k for k in set(old_params) | set(new_params) if old_params.get(k) != new_params.get(k)
    }
    out = []
    for logical, spec in after.items():
        rtype = str(spec.get("Type", "")) if isinstance(spec, dict) else ""
        change: dict[str, Any] = {"LogicalResourceId": logical, "ResourceType": rtype}
        if logical not in before:
            change.update(Action="Add", Scope=[], Details=[])
        else:
            text = json.dumps(spec, sort_keys=True, default=str)
            uses = any(f'"{p}"' in text or "${" + p + "}" in text for p in changed_params)
            scope = ["Properties"] if spec != before[logical] or uses else []
            if tags_changed:
                scope.append("Tags")
            if not scope:
                continue
            change.update(
                Action="Modify",
                PhysicalResourceId=physical_id(stack_id, logical),
                Replacement="False",
                Scope=scope,
                Details=[],
            )
        out.append({"Type": "Resource", "ResourceChange": change})
    for logical, spec in before.items():
        if logical not in after:
            rtype = str(spec.get("Type", "")) if isinstance(spec, dict) else ""
            change = {
                "Action": "Remove",
                "LogicalResourceId": logical,
                "PhysicalResourceId": physical_id(stack_id, logical),
                "ResourceType": rtype,
                "Scope": [],
                "Details": [],
            }
            out.append({"Type": "Resource", "ResourceChange": change})
    return out


# -- the AWS query protocol's XML ------------------------------------------------------------
def to_xml(value: Any) -> str:
    """A result's value as query-protocol XML: mappings as elements, lists as <member>s, None
    left out, datetimes in ISO 8601 (UTC), booleans as true/false."""
    if isinstance(value, dict):
        return "".join(f"<{k}>{to_xml(v)}</{k}>" for k, v in value.items() if v is not None)
    if isinstance(value, list):
        return "".join(f"<member>{to_xml(v)}</member>" for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return escape(str(value))
