"""Hostile spec inputs: every one is read or refused with a SpecError, in bounded time and memory.

The corpus (``corpus/``, made by ``make_corpus.py``) holds alias bombs, deep
nesting, duplicate keys, missing headers, non-UTF-8 files, huge numbers and
strings, YAML tags, and a hostile value in every field of the spec that reaches
a rule, a route, a config file or a manifest. ``expected.json`` says which must
be refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
EXPECTED: dict[str, str] = json.loads((HERE / "expected.json").read_text())
MAX_MIB = 200


@pytest.fixture(scope="module")
def outcomes() -> dict[str, object]:
    done = subprocess.run([sys.executable, str(HERE / "run_corpus.py"), str(HERE / "corpus")],
                          capture_output=True, text=True, check=True, timeout=600)
    report: dict[str, object] = json.loads(done.stdout)
    return report


def test_the_corpus_has_at_least_300_inputs_and_each_is_expected() -> None:
    on_disk = {p.name for p in (HERE / "corpus").iterdir()}
    assert len(on_disk) >= 300
    assert on_disk == set(EXPECTED)


def test_every_input_is_read_or_refused_never_a_crash_or_a_timeout(
        outcomes: dict[str, object]) -> None:
    results = outcomes["results"]
    assert isinstance(results, dict)
    bad = {name: r for name, r in results.items() if r["outcome"] in ("crash", "timeout")}
    assert not bad, json.dumps(bad, indent=1)[:3000]


def test_inputs_that_must_be_refused_are(outcomes: dict[str, object]) -> None:
    results = outcomes["results"]
    assert isinstance(results, dict)
    accepted = sorted(name for name, expectation in EXPECTED.items()
                      if expectation == "refuse" and results[name]["outcome"] != "refused")
    assert not accepted, f"read although hostile: {accepted[:20]}"


def test_the_corpus_stays_within_memory(outcomes: dict[str, object]) -> None:
    peak = outcomes["peak_mib"]
    assert isinstance(peak, float)
    assert peak < MAX_MIB


@pytest.mark.parametrize("name", ["alias-bomb.yaml", "deep-list-5000.yaml", "latin-1.yaml",
                                  "huge-number.yaml", "python-tag.yaml", "empty.yaml",
                                  "duplicate-destinations.yaml", "long-key.yaml"])
def test_the_cli_reports_hostile_files_in_one_message_without_a_traceback(name: str) -> None:
    done = subprocess.run([sys.executable, "-m", "k3snet.cli", "validate", "-f",
                           str(HERE / "corpus" / name)], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("k3snet: error:")
    assert len(done.stderr) < 5000


@pytest.mark.parametrize("path", ["/", "/dev/zero", "/proc/self/mem", "/nonexistent"])
def test_paths_that_are_not_spec_files(path: str) -> None:
    done = subprocess.run([sys.executable, "-m", "k3snet.cli", "validate", "-f", path],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
