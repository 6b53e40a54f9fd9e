# Tests for the presence of the expected workflow files

Feature: Workspace files

    As a researcher,
    I want to make sure that my workflow produces the expected files,
    So that I can be sure that the workflow outputs are correct.

    Scenario: The workspace contains the expected input files
        When the workflow is finished
        Then the workspace should include "make_data.py"
        And the workspace should include "analysis.py"

    Scenario: The generation step creates the same data on every run
        When the workflow is finished
        Then the workspace should contain "data/part-00.jsonl"
        And the size of the file "data/part-00.jsonl" should be between 900KiB and 1MiB
        And the sha256 checksum of the file "data/part-00.jsonl" should be "d5d014327dcb93232c419911dc8e3c4e25dc6f1ab540c5c1f7c8200d38ee43f9"

    Scenario: The workflow produces the histogram
        When the workflow is finished
        Then all the outputs should be included in the workspace
        And the size of the file "histogram.png" should be more than 5KiB

    Scenario: The total workspace size remains within reasonable limits
        When the workflow is finished
        Then the workspace size should be more than 5MiB
        And the workspace size should be less than 50MiB

    Scenario: The workflow terminates in a reasonable amount of time
        When the workflow is finished
        Then the workflow run duration should be less than 5 minutes
        And the duration of the step "analyse" should be less than 3 minutes
