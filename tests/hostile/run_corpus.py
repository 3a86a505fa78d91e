"""Read every corpus input in this process, bounded; print one JSON result per input.

Run by ``test_corpus.py`` in a child process: each input gets a 2-second alarm,
and the process reports its peak memory, so a slow or greedy input shows up as
a failure rather than a hung or killed test run.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
import time
from pathlib import Path

from k3snet.errors import SpecError
from k3snet.spec import load_spec

SECONDS = 2


class _Timeout(Exception):  # noqa: N818 - a signal's message, not an error type of k3snet
    pass


def _alarm(_signum: int, _frame: object) -> None:
    raise _Timeout


def _peak_kib() -> int:
    """This process's peak resident memory since its exec.

    ``VmHWM`` belongs to the process's own address space. ``ru_maxrss`` is not
    enough: across fork and exec Linux keeps the larger of the parent's size at the
    fork, so under a pytest session that has grown to 300 MiB it reports 300 MiB
    for a reader that used 25.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(directory: str) -> int:
    signal.signal(signal.SIGALRM, _alarm)
    results: dict[str, dict[str, object]] = {}
    for path in sorted(Path(directory).iterdir()):
        start = time.perf_counter()
        signal.alarm(SECONDS)
        try:
            load_spec(path)
        except SpecError as exc:
            outcome, detail = "refused", str(exc)[:300]
        except _Timeout:
            outcome, detail = "timeout", f"over {SECONDS} s"
        except BaseException as exc:  # noqa: BLE001 - any other escape is the finding
            outcome, detail = "crash", f"{type(exc).__name__}: {str(exc)[:300]}"
        else:
            outcome, detail = "read", ""
        finally:
            signal.alarm(0)
        results[path.name] = {"outcome": outcome, "detail": detail,
                              "seconds": round(time.perf_counter() - start, 4)}
    peak_kib = _peak_kib()
    print(json.dumps({"results": results, "peak_mib": peak_kib / 1024}))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
