"""Rendering benchmark: ``k3snet render manifests`` of a small and of a 10k-destination spec.

Run: ``.venv/bin/python benchmarks/bench_render.py [--repeat 7] [--quick]``

Cold figures: the median wall time of a fresh ``k3snet render manifests -f SPEC``
(stdout to /dev/null), for the seed spec and for a spec of 10,000 destinations, as a
later run finds it (the spec cache filled) and as a first run does
(``K3SNET_SPEC_CACHE=off``: the file parsed). In-process figures: the YAML dump alone
(CPU time, median), by libyaml's emitter and by PyYAML's own (``CSafeDumper`` hidden,
as on an install without libyaml): the manifests of the 10k spec as the CLI renders them
(the spec's text carried verbatim) and the library's spec text of it
(``render_manifests(spec)`` without ``spec_text`` writes ``spec.to_dict()``).
"""

from __future__ import annotations

import argparse
import compileall
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_cli import K3SNET, SEED, big_spec
from goals import Figure, Sample, measure, record

ROOT = Path(__file__).resolve().parents[1]
# The k3snet of this checkout, whichever one the console script was installed from.
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def cold(argv: list[str], repeat: int, env: dict[str, str]) -> Sample:
    def run() -> None:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True, env=env)
    return measure(run, repeat)


def in_process(path: str, repeat: int) -> list[tuple[str, str, float]]:
    # This checkout's k3snet, as the cold runs' PYTHONPATH gives it.
    sys.path.insert(0, str(ROOT))
    import yaml  # noqa: PLC0415 - after the path above

    from k3snet.render import manifests  # noqa: PLC0415 - after the path above
    from k3snet.spec import load_spec  # noqa: PLC0415 - after the path above

    spec = load_spec(path)
    objs = manifests.render_manifests(spec, spec_text=Path(path).read_text())
    rows = []
    for emitter in ("libyaml", "pyyaml"):
        hidden = getattr(yaml, "CSafeDumper", None) if emitter == "pyyaml" else None
        if hidden is not None:
            del yaml.CSafeDumper
        try:
            if emitter == "libyaml" and not hasattr(yaml, "CSafeDumper"):
                continue
            dump = measure(lambda: manifests.dump_manifests(objs), repeat)
            text = measure(lambda: manifests._spec_text(spec), max(1, repeat // 3))
        finally:
            if hidden is not None:
                yaml.CSafeDumper = hidden
        rows += [("dump_manifests, 10k (CLI)", emitter, dump.cpu),
                 ("spec text, 10k (library)", emitter, text.cpu)]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 runs a case")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 3
    # Bytecode for this checkout's k3snet too (goals compiles the installed one's).
    compileall.compile_dir(str(ROOT / "k3snet"), quiet=1)
    with tempfile.TemporaryDirectory(prefix="k3snet-bench-render-") as tmp:
        env = {**ENV, "K3SNET_STATE_DIR": str(Path(tmp) / "state")}
        big = big_spec(Path(tmp), 10_000)
        render = [*K3SNET, "render", "manifests", "-f"]
        cases = [
            ("k3snet render manifests seed", [*render, SEED], env),
            ("k3snet render manifests 10k", [*render, big], env),
            ("k3snet render manifests 10k, first run", [*render, big],
             {**env, "K3SNET_SPEC_CACHE": "off"}),
        ]
        subprocess.run([*render, big], stdout=subprocess.DEVNULL, check=True, env=env)  # cache
        print(f"{'case':44} {'median':>10} {'CPU':>10}")
        for label, argv, case_env in cases:
            sample = cold(argv, args.repeat, case_env)
            print(f"{label:44} {sample.wall * 1000:8.1f} ms {sample.cpu * 1000:8.1f} ms")
            record(Figure(label, "-", sample.wall * 1000, "ms", None,
                          cpu_value=sample.cpu * 1000,
                          detail=f"fresh process, median of {args.repeat}"))
        print(f"\n{'in process (CPU)':44} {'emitter':>8} {'median':>10}")
        for label, emitter, seconds in in_process(big, args.repeat):
            print(f"{label:44} {emitter:>8} {seconds * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
