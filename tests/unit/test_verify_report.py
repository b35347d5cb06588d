"""The reports of `invoke verify`: the merged JUnit XML (against the JUnit schema GitLab reads), the table,
the one-line problems and the exit codes, from per-host results as the checks produce them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
from rich.console import Console

from berth.checks.verify import CheckResult, HostChecks, exit_code, host_status, junit_xml, problem_lines, table
from berth.errors import ExitCode

SCHEMA = xmlschema.XMLSchema(Path(__file__).parents[1] / "schemas" / "junit.xsd")


def check(name: str, status: str, message: str = "", cis: tuple[str, ...] = (),
          role: str = "docker_tls") -> CheckResult:
    return CheckResult(f"{role}/{name}", role, name, status, list(cis), message,
                       detail=f"long text of {name}" if status != "passed" else "",
                       file=f"roles/{role}/verify/test_{role}.py", seconds=0.01)


def host(name: str, *checks: CheckResult, error: str | None = None) -> HostChecks:
    return HostChecks(name, host_status(checks, error), checks=list(checks), commands=1, seconds=1.25,
                      started=1_800_000_000.0, finished=1_800_000_001.25, error=error)


@pytest.fixture
def results() -> list[HostChecks]:
    return [
        host("r1", check("tls_file[key.pem]", "failed", "key.pem root:root 0644, want root:root 0400",
                         ("3.13", "3.14")),
             check("mutual_tls_ping", "passed"),
             check("daemon_option[icc]", "risk", "icc is on; accepted: links", ("2.2",), role="docker_engine")),
        host("r2", check("tls_file[key.pem]", "passed", cis=("3.13", "3.14")), check("mutual_tls_ping", "passed"),
             check("daemon_option[icc]", "risk", "icc is on; accepted: links", ("2.2",), role="docker_engine")),
        host("r3", check("tls_file[key.pem]", "unreachable", "r3: cannot connect to 10.0.0.3:22", ("3.13", "3.14")),
             check("mutual_tls_ping", "passed")),
    ]


def test_junit_is_valid_and_has_one_testcase_per_host_and_check(results):
    xml = junit_xml(results)
    SCHEMA.validate(xml.decode())
    root = ET.fromstring(xml)
    assert root.tag == "testsuites"
    assert [s.get("name") for s in root] == ["r1", "r2", "r3"]
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("8", "1", "1")
    r1 = root[0]
    assert (r1.get("tests"), r1.get("failures"), r1.get("errors"), r1.get("skipped")) == ("3", "1", "0", "0")
    cases = {(c.get("classname"), c.get("name")): c for s in root for c in s.iter("testcase")}
    assert len(cases) == 8
    key = cases[("r1.docker_tls", "docker_tls: tls_file[key.pem] [CIS 3.13 3.14]")]
    failure = key.find("failure")
    assert failure is not None and failure.get("message") == "key.pem root:root 0644, want root:root 0400"
    assert failure.text == "long text of tls_file[key.pem]"
    assert [p.get("value") for p in key.iter("property")] == ["3.13", "3.14"]
    risk = cases[("r1.docker_engine", "docker_engine: daemon_option[icc] [CIS 2.2]")]
    assert risk.find("failure") is None and risk.find("error") is None
    assert risk.findtext("system-out") == "ACCEPTED RISK: icc is on; accepted: links"
    lost = cases[("r3.docker_tls", "docker_tls: tls_file[key.pem] [CIS 3.13 3.14]")].find("error")
    assert lost is not None and lost.get("type") == "unreachable"


def test_a_host_whose_checks_did_not_run_is_an_error_case(results):
    results.append(host("r4", error="pytest exited 4 without results: usage error"))
    root = ET.fromstring(junit_xml(results))
    SCHEMA.validate(ET.tostring(root, encoding="unicode"))
    r4 = root[3]
    assert (r4.get("tests"), r4.get("errors")) == ("1", "1")
    assert r4.find("testcase/error").get("message") == "pytest exited 4 without results: usage error"


def test_the_schema_rejects_what_gitlab_could_not_read(results):
    root = ET.fromstring(junit_xml(results))
    del root[0][1].attrib["name"]             # a testcase without a name
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        SCHEMA.validate(ET.tostring(root, encoding="unicode"))


def test_table_has_a_row_per_check_and_a_column_per_host(results):
    console = Console(width=160, record=True)
    console.print(table(results))
    text = console.export_text()
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
             for line in text.splitlines() if line.startswith("│")}
    assert lines["docker_tls/tls_file[key.pem]"] == ["3.13 3.14", "FAIL", "pass", "unreachable"]
    assert lines["docker_engine/daemon_option[icc]"] == ["2.2", "risk", "risk", "-"]   # r3 has no docker_engine
    assert lines["ssh commands"] == ["", "1", "1", "1"]


def test_one_line_per_problem_and_hosts_sharing_one_share_the_line(results):
    assert problem_lines(results) == [
        "r3: UNREACHABLE: r3: cannot connect to 10.0.0.3:22",
        "r1 docker_tls/tls_file[key.pem] [CIS 3.13 3.14]: FAIL: key.pem root:root 0644, want root:root 0400",
        "r1, r2 docker_engine/daemon_option[icc] [CIS 2.2]: accepted risk: icc is on; accepted: links",
    ]


def test_exit_codes(results):
    assert exit_code(results) == ExitCode.HOST_FAILED                 # a failed check wins over unreachable
    assert exit_code(results[2:]) == ExitCode.HOST_UNREACHABLE
    assert exit_code(results[1:2]) == ExitCode.OK                     # accepted risks pass
    assert exit_code([host("r4", check("x", "error", "KeyError: 'y'"))]) == ExitCode.HOST_FAILED


def test_a_roles_checks_are_picked_up_as_soon_as_its_verify_folder_exists(tmp_path):
    from berth.checks.verify import verify_dirs
    from berth.inventory.loader import Host

    for role in ("docker_engine", "docker_tls", "gitlab_runner"):
        (tmp_path / role).mkdir()
    (tmp_path / "docker_engine" / "verify").mkdir()
    (tmp_path / "docker_tls" / "verify").mkdir()
    h = Host("r1", ["all"], {}, {}, ["docker_engine", "gitlab_runner", "docker_tls"])
    assert verify_dirs(h, tmp_path) == [tmp_path / "docker_engine" / "verify", tmp_path / "docker_tls" / "verify"]
    (tmp_path / "gitlab_runner" / "verify").mkdir()      # the role's checks land: nothing else to change
    assert verify_dirs(h, tmp_path)[1] == tmp_path / "gitlab_runner" / "verify"
