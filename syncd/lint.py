"""Template checks with cfn-lint, for `syncd validate` (no AWS calls).

The only importer of `cfnlint`. Errors fail validation; warnings and informational findings
are shown but do not.
"""

from __future__ import annotations

from dataclasses import dataclass

from syncd.core.text import bounded


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # error | warning | informational
    line: int
    message: str

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


def lint_template(body: str, region: str) -> list[Finding]:
    from cfnlint.api import ManualArgs, lint  # imported late: it takes ~0.3 s

    matches = lint(body, config=ManualArgs(regions=[region]))
    return [
        Finding(
            m.rule.id, str(m.rule.severity).lower(), int(m.linenumber), bounded(str(m.message), 500)
        )
        for m in matches
    ]
