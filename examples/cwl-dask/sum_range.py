"""Step 1: sum a range on the Dask cluster the run started, and write the sum down."""

import os
import sys

import dask.bag as db
from distributed import Client

n, out = int(sys.argv[1]), sys.argv[2]
with Client(os.environ["DASK_SCHEDULER_URI"]) as client:
    workers = len(client.scheduler_info(n_workers=-1)["workers"])
    total = db.range(n, npartitions=4).sum().compute()
print(f"sum of range({n}) = {total}, computed on {workers} workers")
with open(out, "w") as f:
    f.write(f"{total}\n")
