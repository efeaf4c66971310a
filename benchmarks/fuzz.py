"""A longer fuzzing campaign of the readers (``make fuzz``): the mutations of the test suite's
short campaign (tests/fuzzkit.py), from a seeded random source, for a number of inputs or minutes.

    .venv/bin/python benchmarks/fuzz.py                      # every reader, 5 minutes in all
    .venv/bin/python benchmarks/fuzz.py nrrd markups -n 5000 # 5000 inputs each
    .venv/bin/python benchmarks/fuzz.py --minutes 2 --seed 7 --out out/fuzz

Every failing input is written to the output folder (``<reader>/<id>.<ext>`` beside a ``.txt``
with the mutations, the failure and its traceback); a summary lists, per reader, the inputs
tried and the distinct failures. Exit status 1 when something failed.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import random
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import fuzzkit  # noqa: E402


def plan_seed(folder: Path) -> Path:
    """A plan.json written by the planner on the demo thorax (two trajectories)."""
    import planner

    planner.plan(ROOT / "assets/demo/thorax/ct", procedure="lung-biopsy", target=(-85, -14, 39), n=2,
                 structures=ROOT / "assets/demo/thorax/structures.nii.gz").write(folder)
    return folder / "plan.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("readers", nargs="*", help=f"readers to fuzz (default all): {', '.join(fuzzkit.READERS)}")
    ap.add_argument("-n", "--examples", type=int, help="inputs per reader (default: as many as --minutes allow)")
    ap.add_argument("--minutes", type=float, default=5.0, help="time for the whole campaign (default 5; at most 9.5)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (the same seed replays the same inputs)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "fuzz", help="folder for failing inputs")
    args = ap.parse_args(argv)

    names = args.readers or list(fuzzkit.READERS)
    unknown = [n for n in names if n not in fuzzkit.READERS]
    if unknown:
        ap.error(f"unknown reader(s) {', '.join(unknown)}; choose from {', '.join(fuzzkit.READERS)}")
    budget = min(args.minutes, 9.5) * 60
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="planner-fuzz-"))
    if "plan_json" in names:
        fuzzkit.PLAN_SEED = plan_seed(work / "plan")
    ws = fuzzkit.Workspace(work / "ws")
    current = args.out / "current-input.bin"  # what a hard crash or a hang in C code was reading
    faulthandler.enable()
    warnings.simplefilter("ignore")  # libraries warn about every damaged header; the summary is what counts
    logging.getLogger("nibabel").setLevel(logging.ERROR)

    start = time.monotonic()
    rows = []
    all_failed = 0
    for n_reader, name in enumerate(names):
        seed = ws.seed(name)
        reader = fuzzkit.READERS[name]
        rng = random.Random(f"{args.seed}:{name}")
        deadline = start + budget * (n_reader + 1) / len(names)
        tried, failures, signatures = 0, 0, Counter()
        while (tried < args.examples) if args.examples else (time.monotonic() < deadline):
            data, ops = fuzzkit.mutate(seed, reader, fuzzkit.RandomChooser(rng))
            current.write_bytes(data)
            faulthandler.dump_traceback_later(fuzzkit.TIME_LIMIT_S * 3, exit=True)
            failure = fuzzkit.check(ws, name, data)
            faulthandler.cancel_dump_traceback_later()
            tried += 1
            if failure is None:
                continue
            failures += 1
            first = failure.signature not in signatures
            signatures[failure.signature] += 1
            if first or signatures[failure.signature] <= 5:
                folder = args.out / name
                folder.mkdir(exist_ok=True)
                stem = fuzzkit.input_id(data)
                (folder / f"{stem}-{reader.filename}").write_bytes(data)
                (folder / f"{stem}.txt").write_text(
                    f"{failure}\nmutations: {ops}\nsignature: {failure.signature}\n\n{failure.traceback}")
            if first:
                print(f"  {failure.signature}", flush=True)
        all_failed += failures
        rows.append((name, len(seed), tried, failures, signatures))
        print(f"{name}: {tried} inputs, {failures} failing, {len(signatures)} distinct", flush=True)
    current.unlink(missing_ok=True)

    print(f"\nfuzzing summary ({time.monotonic() - start:.0f} s, seed {args.seed}, failing inputs in {args.out}):")
    print(f"  {'reader':<14}{'seed bytes':>11}{'inputs':>9}{'failing':>9}{'distinct':>10}")
    for name, size, tried, failures, signatures in rows:
        print(f"  {name:<14}{size:>11}{tried:>9}{failures:>9}{len(signatures):>10}")
        for sig, count in signatures.most_common():
            print(f"      {count:>5} x {sig}")
    return 1 if all_failed else 0


if __name__ == "__main__":
    sys.exit(main())
