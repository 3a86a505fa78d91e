"""The netlink link dump's decode cost per link, this codec against older ones.

As root: a fresh network namespace with ``--links`` interfaces (veth pairs with both
ends inside, a bridge holding some of them), one ``RTM_GETLINK`` dump through the
socket driver kept as raw messages, then ``decode_link`` of every message by this
checkout's codec and by the codec of each ``--before`` commit (read with ``git show``;
default ``3eb88600~``, before links carried their hardware addresses), in turn,
``--runs`` times; prints the medians per link (docs/performance.md, "The link
records' decode cost"). The namespace is deleted at the end.

    python benchmarks/bench_link_decode.py [--links 1000] [--runs 31] [--before COMMIT ...]
                                            [--netns NAME]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _older import older_module  # benchmarks/_older.py

from k3snet.backends.netlink import codec
from k3snet.backends.netlink.socket_driver import open_dump_driver
from k3snet.backends.netns import NetnsRunner
from k3snet.lab.netns import create_netns, delete_netns, exit_on_signals, unique_name

CODEC = "k3snet/backends/netlink/codec.py"
ROOT = Path(__file__).resolve().parent.parent




def populate(ns: str, count: int, tmp: Path) -> None:
    """About ``count`` interfaces in ``ns``: veth pairs (both ends here; a kernel may
    lack the dummy type), half of them with one end a port of a bridge, as a node's
    cni0 holds its pods' host ends."""
    lines = ["link add br0 type bridge", "link set br0 up"]
    for i in range(count // 2):
        lines.append(f"link add v{i} type veth peer name w{i}")
        if i % 2:
            lines.append(f"link set v{i} master br0")
    batch = tmp / "links.batch"
    batch.write_text("\n".join(lines) + "\n")
    subprocess.run(["ip", "-n", ns, "-batch", str(batch)], check=True, capture_output=True)


def per_link(decoders: dict[str, Callable[[bytes], object]], messages: list[bytes],
             runs: int) -> dict[str, tuple[float, float]]:
    """Median microseconds per message of each decoder over every message, the decoders
    in turn within each run (the machine's load moves between runs): wall, and CPU (this
    thread's, which a shared machine moves much less)."""
    walls: dict[str, list[float]] = {name: [] for name in decoders}
    cpus: dict[str, list[float]] = {name: [] for name in decoders}
    for _ in range(runs):
        for name, decode in decoders.items():
            cpu, start = time.thread_time(), time.perf_counter()
            for msg in messages:
                decode(msg)
            walls[name].append(time.perf_counter() - start)
            cpus[name].append(time.thread_time() - cpu)
    return {name: (statistics.median(walls[name]) / len(messages) * 1e6,
                   statistics.median(cpus[name]) / len(messages) * 1e6) for name in decoders}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=31)
    parser.add_argument("--netns", default=None, help="the namespace's name (made and deleted)")
    parser.add_argument("--before", nargs="+", default=["3eb88600~"],
                        help="the commits whose codecs to compare with this one (default: "
                             "the one before links carried their hardware addresses)")
    args = parser.parse_args()
    exit_on_signals()
    ns = create_netns(args.netns or unique_name("links"))
    try:
        with tempfile.TemporaryDirectory(prefix="k3snet-links-") as name:
            tmp = Path(name)
            populate(ns, args.links, tmp)
            runner = NetnsRunner(ns)
            driver = open_dump_driver(runner)
            try:
                request = codec.link_dump_request()
                dump_times, messages = [], []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    messages = driver.dump(codec.RTM_GETLINK, request)
                    dump_times.append(time.perf_counter() - start)
            finally:
                driver.close()
                runner.close()
            size = sum(map(len, messages)) / len(messages)
            print(f"{len(messages)} links, {size:.0f} bytes a message; the dump alone "
                  f"(socket, no decode): {statistics.median(dump_times) * 1000:.2f} ms")
            decoders = {commit: older_module(CODEC, commit, tmp, f"codec_{n}").decode_link
                        for n, commit in enumerate(args.before)}
            decoders |= {f"this codec ({Path(codec.__file__).parents[3]})": codec.decode_link}
            for label, (wall, cpu) in per_link(decoders, messages, args.runs).items():
                print(f"  decode_link, {label}: {wall:.2f} us a link (CPU {cpu:.2f} us)")
    finally:
        delete_netns(ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
