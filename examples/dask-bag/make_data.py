"""Write a small, reproducible JSON-lines data set for the Dask bag example.

Real analyses read their input from EOS or XRootD; a fixed seed makes this stand-in give the same
histogram on every run, so a changed picture means a changed analysis.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

N_FILES = 8
RECORDS_PER_FILE = 20_000
NAMES = ["muon", "electron", "photon", "jet", "tau"]


def write_file(path: Path, first_id: int, rng: random.Random) -> None:
    """One file per partition: Dask reads each file as one task."""
    with path.open("w") as out:
        for i in range(first_id, first_id + RECORDS_PER_FILE):
            record = {"id": i, "value": round(rng.gauss(1.0, 2.0), 6), "name": rng.choice(NAMES)}
            out.write(json.dumps(record) + "\n")


def main() -> None:
    rng = random.Random(20250213)
    data = Path("data")
    data.mkdir(exist_ok=True)
    for n in range(N_FILES):
        write_file(data / f"part-{n:02d}.jsonl", n * RECORDS_PER_FILE, rng)
    print(f"wrote {N_FILES} files x {RECORDS_PER_FILE} records to {data}/")


if __name__ == "__main__":
    main()
