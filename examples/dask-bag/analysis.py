"""Keep the positive values of a JSON-lines data set and histogram them on the Dask cluster.

REANA starts the cluster and passes its address in DASK_SCHEDULER_URI; nothing here is specific
to where the cluster runs.
"""

from __future__ import annotations

import json
import os

import dask
import dask.array as da
import dask.bag as db
import matplotlib
from dask.distributed import Client

matplotlib.use("Agg")  # no display in a workflow step
import matplotlib.pyplot as plt

OUTPUT = "histogram.png"


def main() -> None:
    client = Client(os.environ["DASK_SCHEDULER_URI"])
    print(f"connected to {client.scheduler.address} with {len(client.nthreads())} workers")

    # The pipeline from the talk: read in parallel, parse, select, turn into a dataframe.
    records = db.read_text("data/*.jsonl").map(json.loads).filter(lambda d: d["value"] > 0)
    df = records.to_dataframe().persist()  # keep it on the workers: we read it twice below

    kept, mean, top = dask.compute(df["value"].count(), df["value"].mean(), df["value"].max())
    # Each worker bins its own partitions; only the 50 counts come back.
    counts, edges = da.histogram(df["value"].to_dask_array(), bins=50, range=(0.0, top))
    counts = counts.compute()

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.stairs(counts, edges, fill=True, alpha=0.7)
    ax.set_title(f"Positive values ({kept:,} records)")
    ax.set_xlabel("value")
    ax.set_ylabel("records per bin")
    fig.tight_layout()
    fig.savefig(OUTPUT, dpi=100)

    print(f"kept {kept:,} records with value > 0, mean {mean:.3f}")
    print(f"histogram written to {os.path.abspath(OUTPUT)}")
    client.close()


if __name__ == "__main__":
    main()
