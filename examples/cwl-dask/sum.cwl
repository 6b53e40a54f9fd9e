cwlVersion: v1.2
class: CommandLineTool
hints:
  DockerRequirement:
    dockerPull: docker.io/daskstep/examples:2026.8
baseCommand: python
arguments:
  - position: 3
    valueFrom: sum.txt
inputs:
  script:
    type: File
    inputBinding:
      position: 1
  n:
    type: int
    inputBinding:
      position: 2
outputs:
  total:
    type: File
    outputBinding:
      glob: sum.txt
