"""The one JUnit XML writer (verify's checks, the smoke's runners): GitLab shows these in merge requests.

Callers describe suites and cases; this module alone knows the schema (tests/schemas/junit.xsd): the order
of a testcase's children (properties, then failure/error, then system-out), the counts on every suite and on
<testsuites>, and the encoding. Text is written as given: the caller redacts (berth.cli writes the file
through berth/redact.py).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field

PASSED, FAILURE, ERROR = "passed", "failure", "error"


@dataclass
class Case:
    name: str
    classname: str
    seconds: float = 0.0
    outcome: str = PASSED               # passed, failure or error
    message: str = ""                   # failure/error message attribute
    kind: str = ""                      # failure/error type attribute
    text: str = ""                      # failure/error body
    system_out: str | None = None
    file: str | None = None
    properties: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Suite:
    name: str
    cases: list[Case] = field(default_factory=list)
    seconds: float | None = None        # None: the sum of its cases
    hostname: str | None = None
    timestamp: str | None = None
    properties: list[tuple[str, str]] = field(default_factory=list)


def _counts(cases: Sequence[Case]) -> dict[str, str]:
    return {"tests": str(len(cases)), "failures": str(sum(c.outcome == FAILURE for c in cases)),
            "errors": str(sum(c.outcome == ERROR for c in cases)), "skipped": "0"}


def junit_xml(title: str, suites: Sequence[Suite], *, seconds: float | None = None) -> bytes:
    """<testsuites name=title> with one <testsuite> per suite, one <testcase> per case."""
    every = [c for s in suites for c in s.cases]
    attrs = {"name": title, **_counts(every)}
    if seconds is not None:
        attrs["time"] = f"{seconds:.3f}"
    root = ET.Element("testsuites", attrs)
    for suite in suites:
        total = suite.seconds if suite.seconds is not None else sum(c.seconds for c in suite.cases)
        sattrs = {"name": suite.name, **_counts(suite.cases), "time": f"{total:.3f}"}
        if suite.hostname is not None:
            sattrs["hostname"] = suite.hostname
        if suite.timestamp is not None:
            sattrs["timestamp"] = suite.timestamp
        node = ET.SubElement(root, "testsuite", sattrs)
        if suite.properties:
            props = ET.SubElement(node, "properties")
            for name, value in suite.properties:
                ET.SubElement(props, "property", name=name, value=value)
        for case in suite.cases:
            cattrs = {"name": case.name, "classname": case.classname, "time": f"{case.seconds:.3f}"}
            if case.file is not None:
                cattrs["file"] = case.file
            element = ET.SubElement(node, "testcase", cattrs)
            if case.properties:      # first: the schema orders a testcase's children
                cprops = ET.SubElement(element, "properties")
                for name, value in case.properties:
                    ET.SubElement(cprops, "property", name=name, value=value)
            if case.outcome in (FAILURE, ERROR):
                ET.SubElement(element, case.outcome, message=case.message, type=case.kind).text = case.text
            if case.system_out is not None:
                ET.SubElement(element, "system-out").text = case.system_out
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
