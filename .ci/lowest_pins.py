"""Print the lowest versions pyproject.toml's bounds allow, as pip ``==`` pins.

``make test-lowest`` installs k3snet with every extra into .venv-lowest at these pins and
runs the root-free tests there: CI and ``make test`` install the newest releases, and a
lower bound nothing installs is a guess. pip has no ``--resolution lowest`` (uv's), so the
pins are written out here: one ``NAME==VERSION`` line for each distinct requirement of
``[project] dependencies`` and of every extra, taken from its ``>=`` bound.

Every requirement must have one ``>=`` bound, naming a version that was released (pip
then finds it; ``>=0.9`` where the first release is 0.9.1 fails the install, which is the
point: the bound says a version nobody can install). A name given in several extras takes
the highest of its bounds, as pip would when installing them together. Other specifiers
(``<2``, ``!=1.3``) are left to the bound; the standard library's tomllib reads the file,
so any Python 3.11 runs this, without the venv.

    python3 .ci/lowest_pins.py [pyproject.toml] > lowest.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<specs>[^;]*)(?:;.*)?$")


def _key(name: str) -> str:
    """The name as pip compares names (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _release(version: str) -> tuple[int, ...]:
    """The numeric release part of a version, for comparing two bounds."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+", maxsplit=1)[0]))


def lowest_pins(pyproject: dict[str, object], project_name: str) -> list[str]:
    """The ``==`` pins, sorted by name; a ValueError names a requirement without a bound."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    lowest: dict[str, tuple[str, str]] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match is None:
            raise ValueError(f"cannot read the requirement {requirement!r}")
        name = match["name"]
        if _key(name) == _key(project_name):
            continue  # k3snet[spec,...]: the `all` extra names the others
        bounds = [spec.strip()[2:].strip() for spec in match["specs"].split(",")
                  if spec.strip().startswith(">=")]
        if len(bounds) != 1:
            raise ValueError(f"{requirement!r} needs exactly one >= bound")
        bound = bounds[0]
        known = lowest.get(_key(name))
        if known is None or _release(bound) > _release(known[1]):
            lowest[_key(name)] = (name, bound)
    return [f"{name}=={bound}" for _, (name, bound) in sorted(lowest.items())]


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parents[1]
    path = Path(argv[1]) if len(argv) > 1 else root / "pyproject.toml"
    pyproject = tomllib.loads(path.read_text())
    try:
        pins = lowest_pins(pyproject, pyproject["project"]["name"])
    except ValueError as exc:
        sys.stderr.write(f"{path}: {exc}\n")
        return 1
    sys.stdout.write("".join(f"{pin}\n" for pin in pins))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
