# Two steps, each a client of the Dask cluster that `daskstep run` starts before cwltool:
# `compute` sums a range on the cluster, `check` reads the sum and checks it there.
cwlVersion: v1.2
class: Workflow

inputs:
  n: int
  sum_script: File
  check_script: File

outputs:
  checked:
    type: File
    outputSource: check/checked

steps:
  compute:
    run: sum.cwl
    in:
      script: sum_script
      n: n
    out: [total]
  check:
    run: check.cwl
    in:
      script: check_script
      n: n
      total: compute/total
    out: [checked]
