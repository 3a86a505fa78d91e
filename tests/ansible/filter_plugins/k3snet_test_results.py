"""The filter tests/ansible's plays save their registered results with (for the test to read).

It runs in ansible-playbook itself, where the ``ansible.builtin.copy`` task it replaces ran
two more modules (``stat``, then ``copy``), each a fresh Python process: a third of a
playbook's time went to saving what the test reads.
"""

from __future__ import annotations

from pathlib import Path


def saved_to(text: str, path: str) -> str:
    """Write ``text`` (the play's results as JSON) to ``path``; return the path."""
    Path(path).write_text(text, encoding="utf-8")
    return path


class FilterModule:
    """Ansible's entry point of a filter plugin file."""

    def filters(self) -> dict[str, object]:
        return {"k3snet_test_saved_to": saved_to}
