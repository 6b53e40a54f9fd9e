"""Step 2: read the sum of step 1 and check it against n(n-1)/2, computed on the cluster."""

import os
import sys

from distributed import Client

n, path, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(path) as f:
    total = int(f.read())
with Client(os.environ["DASK_SCHEDULER_URI"]) as client:
    expected = client.submit(lambda k: k * (k - 1) // 2, n).result()
if total != expected:
    print(f"wrong sum: {total}, expected {expected}")
    sys.exit(1)
print(f"checked on the cluster: {total} == {expected}")
with open(out, "w") as f:
    f.write(f"checked {total}\n")
