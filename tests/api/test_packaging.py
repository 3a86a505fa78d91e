"""The wheel is complete: installed into a fresh venv, the documented first steps work."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

import k3snet

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_installs_and_runs_the_getting_started_path(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("k3snet-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "k3snet/py.typed" in names
    assert {f"k3snet/schemas/{n}.json" for n in ("plan", "state", "object", "log",
                                                "spec.schema")} <= set(names)
    assert {n.split("/")[0] for n in names} == {"k3snet", f"k3snet-{k3snet.__version__}.dist-info"}
    assert "k3snet/lab/seed.yaml" in names  # python -m k3snet.demo's spec
    metadata = zipfile.ZipFile(wheel).read(f"k3snet-{k3snet.__version__}.dist-info/METADATA")
    assert f"\nVersion: {k3snet.__version__}\n" in metadata.decode()
    # License-Expression: Apache-2.0 asks for its text with every copy (section 4a)
    assert "\nLicense-File: LICENSE\n" in metadata.decode()
    license_text = zipfile.ZipFile(wheel).read(
        f"k3snet-{k3snet.__version__}.dist-info/licenses/LICENSE").decode()
    assert license_text.split()[:4] == ["Apache", "License", "Version", "2.0,"]

    env_dir = tmp_path / "venv"
    # No pip of its own (ensurepip took most of the test's time): this pip installs into it.
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    f"{wheel}[spec]"], check=True, capture_output=True)
    version = subprocess.run([str(env_dir / "bin" / "k3snet"), "--version"], check=True,
                             capture_output=True, text=True)
    assert version.stdout.startswith("k3snet ")
    code = ("import k3snet\n"
            "spec = k3snet.Spec.from_yaml('apiVersion: k3snet.io/v1alpha1\\nkind: EgressSpec\\n"
            "destinations:\\n  - cidr: 192.168.2.0/24\\n')\n"
            "print(len(k3snet.compile(spec).owned))\n"
            "from k3snet.schemas import load_schema; load_schema('plan')\n"
            # python -m k3snet.demo's spec: examples/seed.yaml, which the wheel ships
            "from k3snet.demo import SPEC_PATH\n"
            "assert len(k3snet.compile(k3snet.load_spec(SPEC_PATH)).owned) > 0, SPEC_PATH\n")
    done = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True,
                          cwd=tmp_path)
    assert int(done.stdout) > 0


@pytest.mark.parametrize("module", ["k3snet.testing", "k3snet.testing.kube",
                                    "k3snet.testing.strategies"])
def test_the_testing_helpers_without_hypothesis_name_the_extra_to_install(module: str) -> None:
    # a user without the `testing` extra gets the pip line, not a bare "No module named"
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.modules['hypothesis'] = None; import {module}"],
        capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 1
    assert "pip install 'k3snet[testing]'" in done.stderr.splitlines()[-1]


def test_import_hypothesis_loads_no_strategy_until_a_test_asks_for_one() -> None:
    # The plugin entry point runs in every Hypothesis session of a machine with k3snet
    # installed: it registers the type strategies, and must not import the strategies,
    # the conformance suite, the planner or the backends for a session that uses none.
    code = ("import sys, hypothesis\n"
            "from hypothesis import strategies as st\n"
            "import k3snet\n"
            "print(sorted(m for m in sys.modules if m.startswith(('k3snet.testing.',"
            " 'k3snet.planner', 'k3snet.backends'))))\n"
            "print(type(st.from_type(k3snet.Route).example()).__name__)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
    loaded, drawn = done.stdout.splitlines()
    assert loaded == "['k3snet.testing._hypothesis_entry']"
    assert drawn == "Route"


def test_the_hypothesis_plugin_and_the_testing_helpers_work_without_the_other_extras() -> None:
    # `pip install k3snet hypothesis`: attrs alone besides. The plugin runs in every
    # Hypothesis session of such a machine; resolving k3snet's types, the strategies and
    # the conformance suite on the memory backend must not need PyYAML or a backend's library.
    blocked = ["yaml", "pyroute2", "nftables", "iptc", "kubernetes", "prometheus_client"]
    code = ("import sys\n"
            f"for name in {blocked!r}: sys.modules[name] = None\n"
            "from hypothesis import strategies as st\n"
            "import k3snet\n"
            "from k3snet.model import NetObject\n"
            "for cls in (k3snet.Route, k3snet.SnatRule, k3snet.State, k3snet.Spec, NetObject):\n"
            "    st.from_type(cls).example()\n"
            "from k3snet.testing import run_conformance, strategies\n"
            "from k3snet.backends.memory import MemoryBackend\n"
            "k3snet.compile(strategies.specs().example())\n"
            "run_conformance(MemoryBackend, max_examples=3)\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ok"]


_SPEC_JSON = ('{"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec", "destinations": '
              '[{"cidr": "192.168.2.0/24", "gateway": "192.168.1.1", "device": "eth0"}]}')


def _cli_without_yaml(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``k3snet ARGS`` as after ``pip install k3snet`` (no PyYAML), on a JSON spec."""
    (tmp_path / "spec.json").write_text(_SPEC_JSON)
    code = ("import sys; sys.modules['yaml'] = None\n"
            f"sys.argv = ['k3snet', *{args!r}]\n"
            "from k3snet.__main__ import main\n"
            "sys.exit(main())\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=120, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("args", [("render", "manifests", "-f", "spec.json"),
                                  ("render", "netplan", "-f", "spec.json", "-o", "netplan")])
def test_a_render_needing_pyyaml_without_it_names_the_extra_not_an_internal_error(
        tmp_path: Path, args: tuple[str, ...]) -> None:
    # render manifests and render netplan -o DIR beside another netplan file: a bare
    # ModuleNotFoundError was "internal error ... a bug: please report it"
    (tmp_path / "netplan").mkdir()
    (tmp_path / "netplan" / "01-netcfg.yaml").write_text("network: {version: 2}\n")
    done = _cli_without_yaml(tmp_path, *args)
    assert done.returncode == 1, done.stderr
    assert "internal error" not in done.stderr
    assert "needs PyYAML" in done.stderr
    assert "(pip install 'k3snet[cli]')" in done.stderr.splitlines()[-1]


def test_render_netplan_printed_needs_no_pyyaml(tmp_path: Path) -> None:
    # the file is written by k3snet's own code; only the other netplan files are YAML to read
    done = _cli_without_yaml(tmp_path, "render", "netplan", "-f", "spec.json")
    assert done.returncode == 0, done.stderr
    assert "192.168.2.0/24" in done.stdout


def test_the_version_is_written_in_one_place_the_package_metadata_and_the_image_read() -> None:
    # pyproject.toml's version and k3snet/_version.py were two copies: a release bumping
    # one gave a wheel whose metadata (pip, importlib.metadata) said another version
    # than `k3snet --version`, plan files and the agent's image tag
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["hatch"]["version"]["path"] == "k3snet/_version.py"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^VERSION := .*k3snet/_version\.py\)$", makefile, re.MULTILINE)


def test_the_changelog_has_a_section_for_the_version() -> None:
    # a development version's changes are Unreleased; a release's have its own heading
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(
        encoding="utf-8"), re.MULTILINE)
    version = k3snet.__version__
    if re.search(r"(\.dev|a|b|rc)\d+$", version):
        assert headings[0] == "Unreleased"
    else:
        assert version in headings


@pytest.mark.parametrize("extra", ["kube", "agent"])
def test_the_kubernetes_client_an_extra_admits_is_one_k3snet_works_with(extra: str) -> None:
    # kubernetes>=29 let pip keep a client 29-36: 29-35 refused _content_type (an
    # ApiTypeError on every server-side apply and merge patch: Calico pools, the agent's
    # Node report and Lease); 36 dropped the Accept header k3snet asks and the
    # connectivity Job's result read nothing. tests/cluster and tests/agent pass from
    # 37.0.0 on (run against 29.0.0, 36.0.0, 37.0.0 and 37.0.2)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = [r for r in pyproject["project"]["optional-dependencies"][extra]
              if re.match(r"kubernetes\b", r)]
    assert len(wanted) == 1
    bound = re.fullmatch(r"kubernetes>=(\d+)(\.\d+)*", wanted[0])
    assert bound is not None, wanted
    assert int(bound.group(1)) >= 37


def test_the_testing_extra_admits_no_hypothesis_that_hides_a_backend_s_bug_as_flaky() -> None:
    # hypothesis>=6.100 let pip keep 6.100-6.122, with which run_conformance on a broken
    # backend ended in hypothesis.errors.Flaky ("Inconsistent test results! ...") rather
    # than the bug it found: tests/backends/test_conformance_broken.py fails 5 tests with
    # 6.100.0, 6.115.0, 6.120.0 and 6.122.0, and passes with 6.125.0 and 6.135.0
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = pyproject["project"]["optional-dependencies"]["testing"]
    bound = re.fullmatch(r"hypothesis>=6\.(\d+)(\.\d+)?", wanted[0])
    assert len(wanted) == 1
    assert bound is not None, wanted
    assert int(bound.group(1)) >= 125
