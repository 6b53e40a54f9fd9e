"""The post-mortem report (recorder.py: what a run records, and the process that draws it;
data.py: what is drawn; html.py, png.py, tables.py: the drawings)."""

from daskstep.report.recorder import (
    DATA,
    MAX_POINTS,
    PENDING,
    RunRecorder,
    write_report,
    write_report_later,
)

__all__ = ["DATA", "MAX_POINTS", "PENDING", "RunRecorder", "write_report", "write_report_later"]
