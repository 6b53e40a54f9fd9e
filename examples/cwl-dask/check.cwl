cwlVersion: v1.2
class: CommandLineTool
hints:
  DockerRequirement:
    dockerPull: docker.io/daskstep/examples:2026.8
baseCommand: python
arguments:
  - position: 4
    valueFrom: checked.txt
inputs:
  script:
    type: File
    inputBinding:
      position: 1
  n:
    type: int
    inputBinding:
      position: 2
  total:
    type: File
    inputBinding:
      position: 3
outputs:
  checked:
    type: File
    outputBinding:
      glob: checked.txt
