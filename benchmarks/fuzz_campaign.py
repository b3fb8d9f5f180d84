"""Run the fuzzing campaign of tests/fuzz/campaign.py: ``python benchmarks/fuzz_campaign.py --minutes N``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.campaign import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
