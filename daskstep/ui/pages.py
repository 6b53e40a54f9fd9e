"""The pages of `daskstep ui`: jinja2 templates (jinja2 comes with distributed's dashboard),
with their styles and scripts inline, so a page needs nothing but this server. The scripts
poll the JSON API: the list every 2 s, a run's page and its open log every second while the
run lives.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from daskstep.record import Workspace

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}
header{background:#1f3b57;color:#fff;padding:8px 16px}header a{color:#fff;text-decoration:none}
main{padding:12px 16px}table{border-collapse:collapse}td,th{padding:4px 10px;text-align:left;
border-bottom:1px solid #ddd}.running{color:#b36b00}.finished{color:#176b2c}
.failed,.stopped{color:#a11}.tabs button{margin-right:4px}.tabs button.on{font-weight:bold}
pre#log{background:#111;color:#ddd;padding:8px;max-height:60vh;overflow:auto;white-space:pre-wrap}
img.output{max-width:640px;display:block;margin:6px 0}
"""

BASE = """<!doctype html><html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>{{ style }}</style></head><body{% block data %}{% endblock %}>
<header><a href="/">daskstep</a> {{ title }}</header>
<main>{% block main %}{% endblock %}</main></body></html>"""

RUNS = """{% extends "base.html" %}{% block main %}
<table id="runs"><thead><tr><th>workflow</th><th>run</th><th>status</th><th>step</th>
<th>started</th><th>duration</th><th>exit</th><th>backend</th><th></th></tr></thead>
<tbody></tbody></table>
<script>{{ script("runs.js") }}</script>{% endblock %}"""

RUN = """{% extends "base.html" %}
{% block data %} data-workspace="{{ run.workspace }}" data-run="{{ run.run }}"{% endblock %}
{% block main %}
<p>status <b id="status" class="{{ run.status }}">{{ run.status }}</b>
 · step <span id="steps">{{ run.steps|length }}</span> · <span id="links"></span></p>
<h3>steps</h3><table id="step-table"><tbody></tbody></table>
<h3>events</h3><table id="events"><tbody></tbody></table>
<h3>cluster</h3><table id="cluster"><tbody></tbody></table>
<h3>logs</h3><div class="tabs" id="tabs"></div>
<button id="older">older lines</button><pre id="log"></pre>
<h3>files</h3><div id="files"></div>
<script>{{ script("run.js") }}</script>{% endblock %}"""

_templates = jinja2.Environment(
    loader=jinja2.DictLoader({"base.html": BASE, "runs.html": RUNS, "run.html": RUN}),
    autoescape=True,
)


@functools.cache
def script(name: str) -> markupsafe.Markup:
    """A script of this package, inlined: a page needs no other request to work."""
    text = (Path(__file__).parent / name).read_text()
    return markupsafe.Markup(text.replace("</", "<\\/"))


def render(name: str, **values: Any) -> str:
    title = "runs" if name == "runs.html" else f"{values['run']['name']} #{values['run']['run']}"
    template = _templates.get_template(name)
    return template.render(style=STYLE, title=title, script=script, **values)


def outputs_of(workspace: Workspace) -> tuple[str, ...]:
    """The reana.yaml's `outputs` (files and directories): shown first. Nothing when it
    cannot be read: the files are still listed."""
    import yaml

    with contextlib.suppress(Exception):
        document = yaml.safe_load((workspace.root / "reana.yaml").read_text())
        outputs = document.get("outputs") or {}
        found = [*(outputs.get("files") or []), *(outputs.get("directories") or [])]
        return tuple(str(o) for o in found)
    return ()
