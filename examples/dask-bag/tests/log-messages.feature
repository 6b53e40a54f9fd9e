# Tests for the expected log messages, in the style of REANA's demo workflows.
# `daskstep run --test` runs them after the workflow; `daskstep test` against the last run.

Feature: Log messages

    As a researcher,
    I want to be able to see the log messages of my workflow execution,
    So that I can verify that the workflow ran correctly.

    Scenario: The generation step has produced the expected messages
        When the workflow is finished
        Then the job logs for the "generate" step should contain "wrote 8 files x 20000 records to data/"

    Scenario: The analysis step has selected the expected records on the cluster
        When the workflow is finished
        Then the job logs for the "analyse" step should contain "with 2 workers"
        And the job logs for the "analyse" step should contain
            """
            kept 110,705 records with value > 0, mean 2.019
            histogram written to
            """

    Scenario: The engine has run both steps in order
        When the workflow is finished
        Then the engine logs should contain "step generate (1/2) started"
        And the engine logs should contain "step analyse (2/2) started"
        And the workflow status should be "finished"

    Scenario: The Dask cluster has served the analysis
        When the workflow is finished
        Then the cluster should have 2 workers
        And the scheduler logs should contain "Receive client connection"
        And the worker logs should contain "Threads:"
