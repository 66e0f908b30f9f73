# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""The audit reports for people: one self-contained HTML file per host and one for the fleet.

Self-contained means inline CSS, no script, no fonts, images or links outside
the file (links between the fleet summary and the host reports are relative),
so a report opens the same in an air-gapped auditor's browser years later.
Every piece of text from the evidence goes through :func:`text`, which escapes
it; host output is arbitrary bytes and markup, and must show as such.

Each control's row has the control ID as its element id and its status as a
``status-<status>`` class, so a reader (or a test) can find it by ID.
"""

from __future__ import annotations

import html
import json

from ansible_collections.enclave.llm.plugins.module_utils.evidence.common import (
    MAPPING_LABELS,
    STATUS_LABELS,
    STATUSES,
    parse_iso,
    printable,
)

CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d8dee4; --soft:#f6f8fa;
  --passed:#1a7f37; --failed:#cf222e; --not_verified:#bc4c00; --waived:#6639ba;
  --not_applicable:#6e7781; --not_audited:#bc4c00; --brand:#0b3954; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 14px/1.5 -apple-system, "Segoe UI", "Helvetica Neue", Arial, "Liberation Sans", "DejaVu Sans", sans-serif; }
.wrap { max-width: 1200px; margin: 0 auto; padding: 0 28px; }
header.banner { background: var(--brand); color: #fff; padding: 22px 0 20px; border-bottom: 6px solid var(--verdict); }
.eyebrow { text-transform: uppercase; letter-spacing: .08em; font-size: 12px; opacity: .8; }
header h1 { margin: 4px 0 12px; font-size: 26px; font-weight: 600; overflow-wrap: anywhere; }
.verdict { display: inline-block; padding: 4px 14px; border-radius: 4px; font-weight: 700;
  letter-spacing: .06em; text-transform: uppercase; background: var(--verdict); color: #fff; }
dl.meta { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 10px 24px;
  margin: 16px 0 0; }
dl.meta dt { font-size: 11px; text-transform: uppercase; letter-spacing: .06em; opacity: .75; }
dl.meta dd { margin: 0; font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  font-size: 13px; overflow-wrap: anywhere; }
h2 { font-size: 18px; margin: 32px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
.cards { display: grid; grid-template-columns: repeat(6, 1fr); gap: 12px; }
.card { border: 1px solid var(--line); border-top: 4px solid var(--c, var(--ink)); border-radius: 6px;
  padding: 10px 14px; background: #fff; }
.card .count { display: block; font-size: 28px; font-weight: 600; color: var(--c, var(--ink)); line-height: 1.2; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .05em; }
.problems { border: 1px solid var(--failed); background: #ffebe9; border-radius: 6px; padding: 10px 16px;
  margin-top: 14px; }
.problems ul { margin: 4px 0 0; padding-left: 20px; }
table { width: 100%; border-collapse: collapse; font-size: 13px; }
th { text-align: left; font-size: 11px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted);
  background: var(--soft); border-bottom: 1px solid var(--line); padding: 8px; }
td { border-bottom: 1px solid var(--line); padding: 7px 8px; vertical-align: top; }
td.id, td.host { white-space: nowrap; font-weight: 600; }
td.maps { color: var(--muted); font-size: 12px; }
.ref { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
a { color: #0969da; text-decoration: none; }
a:hover { text-decoration: underline; }
.status { display: inline-block; min-width: 92px; text-align: center; padding: 1px 8px; border-radius: 10px;
  font-size: 12px; font-weight: 600; color: #fff; background: var(--c); white-space: nowrap; }
.status-passed { --c: var(--passed); } .status-failed { --c: var(--failed); }
.status-not_verified { --c: var(--not_verified); } .status-waived { --c: var(--waived); }
.status-not_applicable { --c: var(--not_applicable); } .status-not_audited { --c: var(--not_audited); }
tr.status-failed td, tr.status-not_verified td, tr.status-not_audited td { background: #fff8f7; }
details.control { border: 1px solid var(--line); border-left: 5px solid var(--c); border-radius: 6px;
  margin: 10px 0; background: #fff; }
details.control > summary { cursor: pointer; padding: 9px 14px; font-weight: 600; list-style-position: inside; }
details.control > summary .status { margin-right: 8px; }
details.control .body { padding: 4px 16px 14px; border-top: 1px solid var(--line); }
.why { color: var(--muted); }
.message-line { margin: 10px 0; }
.waiver { border: 1px solid var(--waived); background: #fbefff; border-radius: 6px; padding: 8px 12px; margin: 10px 0; }
.waiver.expired { border-color: var(--failed); background: #ffebe9; }
.test { border: 1px solid var(--line); border-radius: 6px; margin: 10px 0; }
.test-head { background: var(--soft); padding: 6px 10px; border-bottom: 1px solid var(--line); }
.test-body { padding: 6px 10px 8px; }
.outcome { display: inline-block; padding: 0 6px; border-radius: 3px; font-size: 12px; font-weight: 600;
  color: #fff; background: var(--not_applicable); text-transform: uppercase; }
.outcome-passed { background: var(--passed); } .outcome-failed, .outcome-error { background: var(--failed); }
.muted { color: var(--muted); font-size: 12px; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 4px; padding: 8px 10px; margin: 4px 0 8px;
  white-space: pre-wrap; overflow-wrap: anywhere; max-height: 28em; overflow: auto; }
pre.stderr { border-left: 3px solid var(--not_verified); }
pre.failure { border-left: 3px solid var(--failed); }
ol.commands { margin: 6px 0 0; padding-left: 22px; }
ol.commands li { margin-bottom: 6px; }
.cmd code { font-weight: 600; }
.rc { font-size: 12px; font-weight: 600; }
.rc-ok { color: var(--passed); } .rc-bad { color: var(--failed); }
.stream-label { font-size: 11px; color: var(--muted); text-transform: uppercase; letter-spacing: .05em; }
details.fact { border: 1px solid var(--line); border-radius: 6px; margin: 8px 0; }
details.fact > summary { cursor: pointer; padding: 7px 12px; font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
details.fact pre { margin: 0 10px 10px; }
footer { margin: 40px 0 30px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line);
  padding-top: 12px; }
@media print { header.banner { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  pre { max-height: none; overflow: visible; } }
"""


def text(value):
    """Escaped, printable text of any value; None is empty."""
    if value is None:
        return ""
    return html.escape(printable(value), quote=True)


def _status_badge(status):
    return f'<span class="status status-{text(status)}">{text(STATUS_LABELS.get(status, status))}</span>'


def _page(title, verdict, body):
    colour = f"var(--{verdict})" if verdict in (*STATUSES, "not_audited") else "var(--muted)"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{text(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f'<body style="--verdict: {colour}">\n{body}\n</body>\n</html>\n'
    )


def _meta(items):
    cells = "".join(f"<div><dt>{text(label)}</dt><dd>{text(value) or '&mdash;'}</dd></div>" for label, value in items)
    return f'<dl class="meta">{cells}</dl>'


def _cards(counts, extra=()):
    cards = []
    for status in STATUSES:
        cards.append(
            f'<div class="card status-{status}" style="--c: var(--{status})">'
            f'<span class="count">{int(counts.get(status, 0))}</span>'
            f'<span class="label">{text(STATUS_LABELS[status])}</span></div>'
        )
    for label, value, colour in extra:
        cards.append(
            f'<div class="card" style="--c: {colour}"><span class="count">{int(value)}</span>'
            f'<span class="label">{text(label)}</span></div>'
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def _problems(problems):
    if not problems:
        return ""
    items = "".join(f"<li>{text(problem)}</li>" for problem in problems)
    return f'<div class="problems"><strong>Problems with this run</strong><ul>{items}</ul></div>'


def _mappings(control, key):
    # One reference never breaks across lines ("Art. 32(1)(b)", "SYS.1.1.A16").
    values = control.get("mappings", {}).get(key) or []
    return ", ".join(f'<span class="ref">{text(value)}</span>' for value in values) or "&mdash;"


def _controls_table(controls):
    heads = "".join(f"<th>{label}</th>" for _key, label in MAPPING_LABELS)
    rows = []
    for control in controls:
        status = control["status"]
        maps = "".join(f'<td class="maps">{_mappings(control, key)}</td>' for key, _label in MAPPING_LABELS)
        rows.append(
            f'<tr id="{text(control["id"])}" class="control-row status-{text(status)}">'
            f'<td class="id"><a href="#evidence-{text(control["id"])}">{text(control["id"])}</a></td>'
            f"<td>{text(control['title'])}</td><td>{_status_badge(status)}</td>{maps}"
            f'<td class="maps">{text(control.get("role"))}<br><code>{text(control.get("tag"))}</code></td></tr>'
        )
    return (
        '<table class="controls"><thead><tr><th>Control</th><th>Title</th><th>Status</th>'
        f"{heads}<th>Role / tag</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _run_length(run):
    started, finished = parse_iso(run.get("started")), parse_iso(run.get("finished"))
    if not started or not finished:
        return ""
    return f"{(finished - started).total_seconds():.1f} s"


def _seconds(value):
    try:
        return f"{float(value):.2f} s"
    except (TypeError, ValueError):
        return ""


def _command(command):
    rc = command.get("rc")
    rc_class = "rc-ok" if rc == 0 else "rc-bad"
    parts = [
        f'<li><div class="cmd"><code>$ {text(command.get("command"))}</code> '
        f'<span class="rc {rc_class}">rc {text(rc if rc is not None else "none")}</span> '
        f'<span class="muted">{text(command.get("phase"))} {text(command.get("started"))} '
        f"{text(_seconds(command.get('duration_s')))}</span></div>"
    ]
    if command.get("error"):
        parts.append(f'<pre class="stderr">{text(command["error"])}</pre>')
    for stream in ("stdout", "stderr"):
        if command.get(stream):
            parts.append(f'<div class="stream-label">{stream}</div><pre class="{stream}">{text(command[stream])}</pre>')
    parts.append("</li>")
    return "".join(parts)


def _test(test):
    outcome = test.get("outcome")
    commands = test.get("commands") or []
    head = (
        f'<div class="test-head"><span class="outcome outcome-{text(outcome)}">{text(outcome)}</span> '
        f"<code>{text(test.get('nodeid'))}</code> "
        f'<span class="muted">started {text(test.get("started"))}, {text(_seconds(test.get("duration_s")))}, '
        f"{len(commands)} command(s)</span></div>"
    )
    body = []
    if test.get("message"):
        css = "failure" if outcome in ("failed", "error") else "note"
        body.append(f'<pre class="{css}">{text(test["message"])}</pre>')
    if commands:
        body.append(f'<ol class="commands">{"".join(_command(c) for c in commands)}</ol>')
    elif outcome == "passed":
        body.append('<p class="muted">This test ran no command on the host.</p>')
    return f'<div class="test">{head}<div class="test-body">{"".join(body)}</div></div>'


def _waiver_box(waiver):
    if not waiver:
        return ""
    expired = waiver.get("state") == "expired"
    hosts = ", ".join(waiver.get("hosts") or []) or "every host"
    label = "Expired waiver" if expired else "Waiver"
    return (
        f'<div class="waiver{" expired" if expired else ""}"><strong>{label}</strong> '
        f"through {text(waiver.get('expires'))}, approved by {text(waiver.get('approver'))} "
        f"(covers {text(hosts)})<br>{text(waiver.get('reason'))}</div>"
    )


def _control_evidence(control):
    status = control["status"]
    is_open = " open" if status in ("failed", "not_verified") else ""
    references = "".join(
        f"<li><code>{text(r['reference'])}</code>: "
        + (
            f"{int(r['results'])} result(s) {text(', '.join(r['outcomes']))}"
            if r["in_host_audit"]
            else "not part of the host audit (verified by another suite)"
        )
        + "</li>"
        for r in control.get("references", [])
    )
    tests = "".join(_test(test) for test in control.get("tests", []))
    underlying = ""
    if control.get("result_status") and control["result_status"] != status:
        label = text(STATUS_LABELS.get(control["result_status"]))
        underlying = f' <span class="muted underlying">(the tests&#x27; own result: {label})</span>'
    return (
        f'<details id="evidence-{text(control["id"])}" class="control status-{text(status)}"{is_open}>'
        f"<summary>{_status_badge(status)}{text(control['id'])} &middot; {text(control['title'])}</summary>"
        f'<div class="body"><p class="message-line">{text(control.get("message"))}{underlying}</p>'
        f'<p class="why"><strong>Rationale:</strong> {text(control.get("rationale"))}</p>'
        f"{_waiver_box(control.get('waiver'))}"
        f"<p><strong>Tests named by the catalogue</strong></p><ul>{references}</ul>{tests}</div></details>"
    )


def _waivers_section(evidence):
    applied = evidence.get("waivers", {}).get("applied") or []
    if not applied:
        defined = evidence.get("waivers", {}).get("defined", 0)
        note = (
            f"{int(defined)} waiver(s) defined, none covering this host." if defined else "No waivers file was given."
        )
        return f'<section id="waivers"><h2>Waivers</h2><p class="muted">{text(note)}</p></section>'
    rows = "".join(
        f'<tr class="status-{"waived" if w.get("state") == "active" else "failed"}">'
        f'<td class="id"><a href="#{text(w["control"])}">{text(w["control"])}</a></td>'
        f"<td>{_status_badge('waived' if w.get('state') == 'active' else 'failed')}</td>"
        f"<td>{text(w.get('expires'))}</td><td>{text(w.get('approver'))}</td><td>{text(w.get('reason'))}</td>"
        f"<td>{text(', '.join(w.get('hosts') or []) or 'every host')}</td></tr>"
        for w in applied
    )
    return (
        '<section id="waivers"><h2>Waivers</h2><table><thead><tr><th>Control</th><th>Effect</th><th>Expires</th>'
        f"<th>Approver</th><th>Reason</th><th>Hosts</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _fact_value(value):
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _facts_section(facts):
    if not facts:
        return '<section id="facts"><h2>Host facts</h2><p class="muted">No host facts were recorded.</p></section>'
    items = "".join(
        f'<details class="fact" id="fact-{text(key)}"><summary>{text(key)}</summary>'
        f"<pre>{text(_fact_value(facts[key]))}</pre></details>"
        for key in sorted(facts)
    )
    return f'<section id="facts"><h2>Host facts</h2>{items}</section>'


def _unreferenced_section(tests):
    if not tests:
        return ""
    return (
        '<section id="other-tests"><h2>Tests outside the catalogue</h2>'
        '<p class="muted">These host tests ran but verify no catalogued control; they do not change any '
        f"control's status.</p>{''.join(_test(t) for t in tests)}</section>"
    )


def _sources(evidence):
    sources = evidence.get("sources") or {}
    rows = "".join(
        f"<tr><td>{text(name)}</td><td><code>{text(info.get('path'))}</code></td>"
        f"<td><code>{text(info.get('sha256'))}</code></td></tr>"
        for name, info in sorted(sources.items())
        if isinstance(info, dict)
    )
    if not rows:
        return ""
    return (
        '<section id="sources"><h2>Inputs</h2><table><thead><tr><th>Input</th><th>Path</th><th>SHA-256</th>'
        f"</tr></thead><tbody>{rows}</tbody></table></section>"
    )


def render_report(evidence):
    """The host's report.html as text."""
    run = evidence.get("test_run") or {}
    counts = evidence.get("summary") or {}
    header = (
        '<header class="banner"><div class="wrap">'
        '<div class="eyebrow">enclave.llm &middot; compliance evidence</div>'
        f"<h1>{text(evidence['host'])}</h1>"
        f'<span class="verdict">{text(evidence["status"])}</span>'
        + _meta(
            [
                ("Audited at", evidence.get("audited_at")),
                ("Collection version", evidence.get("collection_version")),
                ("Git commit", evidence.get("git_commit")),
                ("Host suites started", run.get("started")),
                ("Host suites took", _run_length(run)),
                ("pytest exit code", run.get("pytest_exit")),
                ("Waivers valid on", evidence.get("today")),
                ("Bundle written", evidence.get("generated_at")),
            ]
        )
        + "</div></header>"
    )
    outcomes = run.get("outcomes") or {}
    tests_line = ", ".join(f"{int(outcomes.get(k, 0))} {k}" for k in ("passed", "failed", "error", "skipped"))
    summary = (
        '<section id="summary"><h2>Summary</h2>'
        + _cards(counts, [("Controls", counts.get("total", 0), "var(--brand)")])
        + f'<p class="muted">{int(run.get("tests") or 0)} test results: {text(tests_line)}. '
        "A control passes only on a passed test; one whose tests did not run is <em>not verified</em> and "
        "fails the audit.</p>" + _problems(evidence.get("problems")) + "</section>"
    )
    controls = evidence.get("controls") or []
    body = (
        header
        + '<main class="wrap">'
        + summary
        + f'<section id="controls"><h2>Controls</h2>{_controls_table(controls)}</section>'
        + '<section id="evidence"><h2>Evidence per control</h2>'
        + "".join(_control_evidence(c) for c in controls)
        + "</section>"
        + _waivers_section(evidence)
        + _unreferenced_section(evidence.get("unreferenced_tests"))
        + _facts_section(evidence.get("facts"))
        + _sources(evidence)
        + "<footer>Check this bundle: <code>sha256sum -c SHA256SUMS</code>, and when signed "
        "<code>gpg --verify SHA256SUMS.asc SHA256SUMS</code>. evidence.json holds everything shown here.</footer>"
        + "</main>"
    )
    return _page(f"Audit evidence: {evidence['host']} ({evidence['status']})", evidence["status"], body)


def render_summary(summary, links):
    """The fleet's summary.html; ``links`` maps a host to its report's relative path (or None)."""
    hosts = summary["hosts"]
    rows = []
    for host in sorted(hosts):
        entry = hosts[host]
        counts = entry.get("summary") or {}
        link = links.get(host)
        name = f'<a href="{text(link)}">{text(host)}</a>' if link else text(host)
        failing = entry.get("failed_controls", []) + entry.get("not_verified_controls", [])
        problem = entry.get("integrity_problem")
        failing_html = text(", ".join(failing)) or "&mdash;"
        if problem:
            failing_html += f"<br><strong>{text(problem)}</strong>"
        nums = "".join(f'<td class="num">{int(counts.get(s, 0))}</td>' for s in STATUSES)
        rows.append(
            f'<tr id="host-{text(host)}" class="status-{text(entry["status"])}"><td class="host">{name}</td>'
            f"<td>{_status_badge(entry['status'])}</td>{nums}<td>{failing_html}</td>"
            f"<td>{text(entry.get('audited_at'))}</td>"
            f"<td><code>{text((entry.get('bundle_digest') or '')[:16])}</code></td></tr>"
        )
    for host in summary["not_audited"]:
        blanks = '<td class="num">&mdash;</td>' * len(STATUSES)
        rows.append(
            f'<tr id="host-{text(host)}" class="status-not_audited"><td class="host">{text(host)}</td>'
            f'<td><span class="status status-not_audited">Not audited</span></td>{blanks}'
            "<td>the audit could not reach this host: nothing was verified</td><td></td><td></td></tr>"
        )
    heads = "".join(f'<th class="num">{text(STATUS_LABELS[s])}</th>' for s in STATUSES)
    totals = summary.get("totals") or {}
    header = (
        '<header class="banner"><div class="wrap">'
        '<div class="eyebrow">enclave.llm &middot; compliance evidence &middot; fleet summary</div>'
        f"<h1>{len(hosts) + len(summary['not_audited'])} host(s)</h1>"
        f'<span class="verdict">{text(summary["status"])}</span>'
        + _meta(
            [
                ("Summary written", summary.get("generated_at")),
                ("Hosts audited", len(hosts)),
                ("Hosts not audited", len(summary["not_audited"])),
            ]
        )
        + "</div></header>"
    )
    body = (
        header
        + '<main class="wrap"><section id="summary"><h2>Controls across the fleet</h2>'
        + _cards(totals, [("Hosts not audited", len(summary["not_audited"]), "var(--not_audited)")])
        + "</section>"
        + '<section id="hosts"><h2>Hosts</h2><table><thead><tr><th>Host</th><th>Status</th>'
        + heads
        + "<th>Failed or not verified</th><th>Audited at</th><th>Bundle digest</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></section>"
        + "<footer>Each host's bundle holds its report.html, evidence.json, junit.xml and SHA256SUMS; "
        "the digest shown is the start of the SHA-256 of its SHA256SUMS.</footer></main>"
    )
    verdict = "passed" if summary["status"] == "passed" else "failed"
    return _page(f"Audit summary ({summary['status']})", verdict, body)
