"""docs/doctor.md's table of findings names every code a finding can carry, and no other.

Read from the source: a finding's code is the first argument of ``Finding(...)`` or a
``code = "..."`` it is given; a drop in a prerouting or postrouting chain carries its
step's code (``_hook_drop``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import k3snet.doctor
from k3snet.doctor import findings

DOC = Path(__file__).parents[2] / "docs" / "doctor.md"


def _codes_in_the_source() -> set[str]:
    codes = {code for code, explain in findings._EXPLAINERS.items()
             if explain is findings._hook_drop}
    for path in Path(k3snet.doctor.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "Finding" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                codes.add(str(node.args[0].value))
            elif (path.name == "findings.py" and isinstance(node, ast.Assign)
                  and [ast.unparse(t) for t in node.targets] == ["code"]
                  and isinstance(node.value, ast.Constant)):
                codes.add(str(node.value.value))
    return codes


def _codes_in_the_table() -> set[str]:
    section = DOC.read_text().partition("\n## Findings\n")[2].partition("\n## ")[0]
    return {code for line in section.splitlines() if line.startswith("| `")
            for code in re.findall(r"`([a-z0-9-]+)`", line.split(" | ")[0])}


def test_the_findings_table_names_every_code_a_finding_carries_and_no_other() -> None:
    assert _codes_in_the_table() == _codes_in_the_source()
