"""REANA's workflow tests: the Gherkin feature files of a reana.yaml's `tests.files`, checked
against the last run in a workspace (`daskstep test`, `daskstep run --test`).

features.py reads a file with the official Gherkin parser and binds its steps to the
vocabulary (step_definitions.py), whose checks (checks.py) look at the run through
last_run.py; suite.py runs the scenarios and report.py prints them and writes the JUnit XML.
"""

from daskstep.workflow_tests.suite import check_run, find_reana_yaml, load_features

__all__ = ["check_run", "find_reana_yaml", "load_features"]
