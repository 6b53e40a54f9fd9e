"""The input stage: a reana.yaml read the way REANA reads it (reana.py, spec.py), checked
against the platform's limits (limits.py, limits.yaml), its problems collected (findings.py),
and its input files staged into the workspace (inputs.py)."""
