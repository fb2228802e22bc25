"""How long `data check` takes on the shared datasets: header-only (default) against full decoding.

Run by hand:  python bench/data_check.py  (prints seconds per dataset and the decode/header ratio).
The baseline is the full decode (``--decode``) measured in the same run on the same files.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from sound2image.data import scan_pairs
from sound2image.data.check import check_dataset

SHARED = Path(os.environ.get("SOUND2IMAGE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATASETS = {
    "pseudo-advance (132 pairs)": SHARED / "data" / "pseudo-advance",
    "av-digits (2500 pairs)": SHARED / "data" / "av-digits" / "pairs.csv",
}
REPEATS = 3


def best_of(function, repeats: int = REPEATS) -> float:
    """Fastest of ``repeats`` runs, in seconds (the least disturbed by other processes)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, best of {REPEATS}")
    for name, source in DATASETS.items():
        scan = best_of(lambda source=source: scan_pairs(source))
        header = best_of(lambda source=source: check_dataset(source))
        decode = best_of(lambda source=source: check_dataset(source, decode=True))
        pairs = len(scan_pairs(source).pairs)
        print(
            f"{name}: scan {scan:.3f} s | check (headers) {header:.3f} s = {1e3 * header / pairs:.2f} ms/pair"
            f" | check --decode {decode:.3f} s | decode/headers = {decode / header:.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
