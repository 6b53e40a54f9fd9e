"""Kubernetes: the objects of a run as pure `build_*` functions (render), and later the loop
that drives them through one thin API layer."""
