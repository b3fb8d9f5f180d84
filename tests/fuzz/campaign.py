"""The long fuzzing campaign: the suite's strategies, at random, for a given time, counting bugs.

Usage (from the repository root)::

    python benchmarks/fuzz_campaign.py --minutes 10            # all targets, round robin
    python benchmarks/fuzz_campaign.py --examples 200 --targets vhd,vhdx --max-memory 2G

Prints examples run and failures per target, and one line per distinct crash signature; each crashing
input is kept gzip'd in ``--keep`` (default ``fuzz-crashes/``) to become a regression fixture.
``--max-memory`` caps the address space (RLIMIT_AS), so a header field that drives a huge allocation
shows up as a MemoryError crash instead of swapping the machine. Exit status 1 if anything crashed.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
ROOT = TESTS.parent
for entry in (str(TESTS), str(ROOT)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fuzz.harness import Crash, exercise, watchdog  # noqa: E402
from fuzz.mutate import apply_bytes, make_case, store_regression  # noqa: E402

TARGETS = ("vhd", "vhdx", "tables", "hives", "fixtures")


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


class Campaign:
    """Counts examples and crashes, keeps one input per crash signature."""

    def __init__(self, keep: Path, inspect: bool, time_limit: float) -> None:
        self.keep = keep
        self.inspect = inspect
        self.time_limit = time_limit
        self.examples: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.crashes: dict[str, tuple[str, Crash, str]] = {}
        self._volumes: Any = None

    def volumes(self) -> Any:
        if self._volumes is None:
            from support.strategies import make_volumes

            self._volumes = make_volumes(Path(tempfile.mkdtemp(prefix="vhdtool-campaign-volumes-")))
        return self._volumes

    def record(self, target: str, crash: Crash | None, path: Path | None, what: str) -> None:
        self.examples[target] += 1
        if crash is None:
            return
        self.failures[target] += 1
        if crash.signature not in self.crashes:
            kept = ""
            if path is not None and path.exists():
                self.keep.mkdir(parents=True, exist_ok=True)
                kept = str(self.keep / f"{target}-{len(self.crashes) + 1:03d}{path.suffix}.gz")
                store_regression(path, kept)
            self.crashes[crash.signature] = (target, crash, kept)
            print(f"NEW CRASH [{target}] {crash.signature}\n  case: {what[:600]}\n  kept: {kept}\n"
                  f"{crash.detail[-1500:]}", flush=True)

    # -- targets ------------------------------------------------------------------------------------

    def run_case_strategy(self, target: str, strategy: st.SearchStrategy[Any], batch: int, seed: int,
                          convert: bool = True) -> None:
        @settings(max_examples=batch, database=None, deadline=None, derandomize=False,
                  suppress_health_check=list(HealthCheck))
        @hypothesis_seed(seed)
        @given(strategy)
        def body(case: Any) -> None:
            with tempfile.TemporaryDirectory(prefix="vhdtool-campaign-") as folder:
                try:
                    path = case.build(Path(folder))
                except OSError:
                    return
                outcome = exercise(path, work_dir=folder, seed=seed, inspect=self.inspect, check=self.inspect,
                                   convert=convert, time_limit=self.time_limit)
                self.record(target, outcome.crash, path, repr(case))

        body()

    def run_hives(self, batch: int, seed: int) -> None:
        from support.strategies import hive_mutations

        images = self.volumes().images
        names = [n for n in ("hive_software", "hive_system") if n in images]
        if not names:
            return
        from vhdtool.errors import VhdtoolError

        @settings(max_examples=batch, database=None, deadline=None, suppress_health_check=list(HealthCheck))
        @hypothesis_seed(seed)
        @given(st.data())
        def body(data: st.DataObject) -> None:
            from fuzz.test_fuzz_tables import _read_hive

            name = data.draw(st.sampled_from(names))
            ops = data.draw(hive_mutations(len(images[name])))
            damaged = apply_bytes(images[name], ops)
            crash: Crash | None = None
            try:
                with watchdog(self.time_limit):
                    _read_hive(damaged)
            except VhdtoolError:
                pass
            except BaseException as err:  # noqa: BLE001 - every other exception is the finding
                import traceback

                from fuzz.harness import signature_of
                crash = Crash("hive", signature_of(err), "".join(traceback.format_exception(err)))
            path = None
            if crash is not None:
                path = Path(tempfile.mkdtemp()) / f"{name}.hive"
                path.write_bytes(damaged)
            self.record("hives", crash, path, f"{name} {ops}")

        body()

    def run_fixtures(self, batch: int, seed: int) -> None:
        from fuzz.test_fuzz_fixtures import ALL_FIXTURES

        rng = random.Random(seed)
        for _ in range(batch):
            self.run_fixture(rng.choice(ALL_FIXTURES), rng.randrange(1 << 30), seed)

    def run_fixture(self, name: str, case_seed: int, seed: int) -> None:
        from fuzz.test_fuzz_fixtures import WITH_FILESYSTEMS, base, fixture_mutations

        image = base(name)

        @settings(max_examples=1, database=None, deadline=None, suppress_health_check=list(HealthCheck))
        @hypothesis_seed(case_seed)
        @given(fixture_mutations(image))
        def body(ops: list[Any]) -> None:
            with tempfile.TemporaryDirectory(prefix="vhdtool-campaign-") as folder:
                path = make_case(image, ops, Path(folder) / Path(name).name.removesuffix(".gz"))
                deep = self.inspect and name in WITH_FILESYSTEMS
                outcome = exercise(path, work_dir=folder, seed=seed, inspect=deep, check=deep,
                                   time_limit=self.time_limit)
                self.record("fixtures", outcome.crash, path, f"{name} {ops}")

        body()

    def run(self, target: str, batch: int, seed: int) -> None:
        from support.strategies import table_cases, vhd_cases, vhdx_cases

        runners: dict[str, Callable[[], None]] = {
            "vhd": lambda: self.run_case_strategy("vhd", vhd_cases(), batch, seed),
            "vhdx": lambda: self.run_case_strategy("vhdx", vhdx_cases(), batch, seed),
            "tables": lambda: self.run_case_strategy("tables", table_cases(self.volumes()), batch, seed,
                                                     convert=False),
            "hives": lambda: self.run_hives(batch * 4, seed),
            "fixtures": lambda: self.run_fixtures(batch, seed),
        }
        runners[target]()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=None, help="run for this long (default: one round)")
    parser.add_argument("--examples", type=int, default=None, help="stop after about this many examples")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {TARGETS}")
    parser.add_argument("--batch", type=int, default=50, help="examples per target per round")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-inspect", action="store_true", help="skip inspect and check (faster)")
    parser.add_argument("--case-seconds", type=float, default=20.0, help="time bound of one case")
    parser.add_argument("--max-memory", default=None, help="RLIMIT_AS for this process, e.g. 2G")
    parser.add_argument("--keep", default="fuzz-crashes", help="folder for crashing inputs")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.CRITICAL)  # dissect's readers log every damaged structure they meet
    if args.max_memory:
        limit = parse_size(args.max_memory)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}")
    seed = random.randrange(1 << 30) if args.seed is None else args.seed
    campaign = Campaign(Path(args.keep), not args.no_inspect, args.case_seconds)
    started = time.monotonic()
    deadline = started + 60 * args.minutes if args.minutes is not None else None
    print(f"fuzz campaign: seed {seed}, targets {','.join(targets)}", flush=True)
    round_ = 0
    while True:
        for target in targets:
            campaign.run(target, args.batch, seed + round_)
            if deadline is not None and time.monotonic() > deadline:
                break
            if args.examples is not None and sum(campaign.examples.values()) >= args.examples:
                break
        round_ += 1
        total = sum(campaign.examples.values())
        print(f"round {round_}: {total} examples, {sum(campaign.failures.values())} failures, "
              f"{time.monotonic() - started:.0f} s", flush=True)
        if deadline is None and args.examples is None:
            break
        if deadline is not None and time.monotonic() > deadline:
            break
        if args.examples is not None and total >= args.examples:
            break
    elapsed = time.monotonic() - started
    print(f"\nexamples run: {sum(campaign.examples.values())} in {elapsed:.0f} s (seed {seed})")
    for target in targets:
        print(f"  {target:9s} {campaign.examples[target]:7d} examples, {campaign.failures[target]} failures")
    print(f"failures: {sum(campaign.failures.values())}, distinct crashes: {len(campaign.crashes)}")
    for sig, (target, _crash, kept) in campaign.crashes.items():
        print(f"  [{target}] {sig}  {kept}")
    return 1 if campaign.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
