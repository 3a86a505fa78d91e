"""Arguments given in ways nobody tested: each a usage error (exit 64) that says what."""

from __future__ import annotations

from pathlib import Path

import pytest

from k3snet import BackendGroup, ModelError
from k3snet.backends.memory import MemoryBackend
from k3snet.cli import EXIT_USAGE
from k3snet.cli import main as cli_main

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"


def main(argv: list[str]) -> int:
    """The command's exit code, an argparse usage error's (SystemExit) too."""
    try:
        return cli_main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize("name", ["a/b", "../etc", "", ".", "..", "x" * 256])
@pytest.mark.parametrize("command", [["plan", "-f", str(SEED), "--no-facts"],
                                     ["observe"], ["doctor", "--from", "10.42.0.5",
                                                   "--to", "192.168.2.10"]])
def test_an_invalid_netns_name_is_a_usage_error(
    name: str, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A name `ip netns` can never give ended as the backend's error, exit 1, as a
    namespace that is not there; it is a malformed argument (exit 64)."""
    assert main([*command, "--netns", name]) == EXIT_USAGE
    assert "argument --netns:" in capsys.readouterr().err


@pytest.mark.parametrize("backends", [["netlink", "netlink"], ["netlink", "netlink:route"],
                                      ["nftables:nat", "nftables:nat,forward"]])
def test_a_backend_given_twice_with_kinds_in_common_is_a_usage_error(
    backends: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "both 'netlink' and 'netlink' would manage sysctl", exit 1."""
    argv = ["plan", "-f", str(SEED), "--no-facts"]
    for backend in backends:
        argv += ["--backend", backend]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"backend {backends[0].partition(':')[0]!r} is given twice" in err
    assert "both" not in err


def test_a_group_of_two_backends_of_one_name_says_so() -> None:
    with pytest.raises(ModelError, match=r"^two backends named 'memory' would manage"):
        BackendGroup([MemoryBackend(), MemoryBackend()])


@pytest.mark.parametrize("flags", [["-q", "-v"], ["-v", "-q"], ["--quiet", "-vv"]])
def test_quiet_and_verbose_together_are_a_usage_error(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """-q won over -v without a word: a run asked to say more said less."""
    assert main(["plan", "-f", str(SEED), "--backend", "memory", "--no-facts", *flags]) == (
        EXIT_USAGE)
    assert "not allowed with argument" in capsys.readouterr().err
    assert main([flags[0], "plan", "-f", str(SEED), "--backend", "memory", "--no-facts",
                 flags[1]]) == EXIT_USAGE
