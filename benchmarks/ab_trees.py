"""Run one synaug command alternately from two source trees (A, B, A, B, ...) and compare them.

Each run is a fresh interpreter with ``PYTHONPATH=TREE/src``, so two commits can be compared
on the same machine under the same load (check one out with ``git worktree add``). For every
run it prints the wall time, user and system CPU seconds, the system share of the CPU time,
the minor page faults (of the command and its children) and the command's last output line;
``{out}`` in the command becomes a fresh folder per run, and with ``--digest GLOB`` a SHA-256
over the files under it that match (names and bytes) shows whether the runs wrote the same
files; ``--logs DIR`` keeps each run's whole output as ``DIR/NAME-ROUND.log`` (e.g. a demo's table). Usage::

    python benchmarks/ab_trees.py --tree base=../base --tree new=. --rounds 2 -- \\
        synaug bench --batch-size 256 --batches 2 --out {out}/bench.json
    python benchmarks/ab_trees.py --tree base=../base --tree new=. --digest '**/*.png' -- \\
        synaug generate --plan plan.json --out {out}/store
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(tree: Path, command: list[str], out: Path, log: Path | None = None) -> dict:
    """Run ``command`` with ``tree``'s sources first on the path; its costs and last output line."""
    environment = {**os.environ, "PYTHONPATH": str(tree / "src")}
    arguments = [part.replace("{out}", str(out)) for part in command]
    if arguments[0] == "synaug":
        arguments = [sys.executable, "-m", "synaug", *arguments[1:]]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(arguments, env=environment, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = (result.stdout + result.stderr).strip().splitlines()
    if log is not None:
        log.write_text(result.stdout + result.stderr)
    return {
        "wall": wall, "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
        "faults": after.ru_minflt - before.ru_minflt, "rc": result.returncode, "last": lines[-1] if lines else "",
    }


def digest(folder: Path, pattern: str) -> str:
    """SHA-256 (first 12 hex digits) over the relative names and bytes of ``folder``'s files matching ``pattern``."""
    hasher = hashlib.sha256()
    files = sorted(path for path in folder.glob(pattern) if path.is_file())
    for path in files:
        hasher.update(str(path.relative_to(folder)).encode())
        hasher.update(path.read_bytes())
    return f"{hasher.hexdigest()[:12]} ({len(files)} files)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH of a source tree (give two or more)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds over the trees")
    parser.add_argument("--digest", help="glob of output files to fingerprint, relative to {out}")
    parser.add_argument("--logs", help="folder to keep each run's whole output in, as NAME-ROUND.log")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="after --: the command; {out} is a fresh folder per run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.logs is not None:
        Path(args.logs).mkdir(parents=True, exist_ok=True)
    trees = [(name, Path(path).resolve()) for name, path in (tree.split("=", 1) for tree in args.tree)]
    print(f"command: {' '.join(command)}")
    print("| round | tree | wall s | user s | sys s | sys share | minor faults | files | last line |")
    print("|---:|---|---:|---:|---:|---:|---:|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for round_number in range(1, args.rounds + 1):
            for name, tree in trees:
                out = Path(scratch) / f"{name}-{round_number}"
                out.mkdir()
                log = None if args.logs is None else Path(args.logs) / f"{name}-{round_number}.log"
                cost = run_once(tree, command, out, log)
                files = digest(out, args.digest) if args.digest else ""
                share = cost["sys"] / max(cost["user"] + cost["sys"], 1e-9)
                status = "" if cost["rc"] == 0 else f" (exit {cost['rc']})"
                print(f"| {round_number} | {name} | {cost['wall']:.1f} | {cost['user']:.1f} | {cost['sys']:.1f} | "
                      f"{100 * share:.1f} % | {cost['faults'] / 1e6:.2f} M | {files} | {cost['last']}{status} |", flush=True)


if __name__ == "__main__":
    main()
