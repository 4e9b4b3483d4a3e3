"""Pure helpers of the checks tools and the redactor, without MCP or a sandbox."""

import base64
from urllib.parse import quote

import pytest

from coderx_mcp.errors import ToolInputError
from coderx_mcp.redact import Redactor
from coderx_mcp.tools import checks_core as core

PYTEST_XML = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest"
errors="1" failures="1" skipped="2" tests="5" time="0.5">
<testcase classname="tests.test_a.TestK" name="test_p[2]" file="tests/test_a.py" line="11"
 time="0.001"><failure message="assert 2 == 1">tests/test_a.py:13: in test_p
    assert v == 1
E   assert 2 == 1</failure></testcase>
<testcase classname="tests" name="test_b" file="tests/test_b.py" line="0">
 <error message="collection failure">ImportError: no module</error></testcase>
<testcase classname="tests.test_a" name="test_ok" file="tests/test_a.py" line="1"/>
<testcase classname="tests.test_a" name="test_x" file="tests/test_a.py" line="3">
 <skipped type="pytest.xfail" message="known"/></testcase>
<testcase classname="tests.test_a" name="test_s" file="tests/test_a.py" line="5">
 <skipped type="pytest.skip" message="later"/></testcase>
</testsuite></testsuites>"""


def test_parse_junit_counts_ids_and_locations() -> None:
    counts, failures, collection = core.parse_junit(PYTEST_XML)
    assert (counts.tests, counts.passed, counts.failed, counts.errors, counts.skipped,
            counts.xfailed) == (5, 1, 1, 1, 1, 1)
    assert collection
    first = failures[0]
    assert (first.id, first.file, first.line, first.message) == (
        "tests/test_a.py::TestK::test_p[2]", "tests/test_a.py", 13, "assert 2 == 1")


@pytest.mark.parametrize("text", ["not xml", "<html><body/></html>", ""])
def test_parse_junit_refuses_what_is_not_junit(text: str) -> None:
    with pytest.raises(ValueError):
        core.parse_junit(text)


def test_entity_expansion_is_refused() -> None:
    bomb = ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
            + "".join(f'<!ENTITY {c} "{("&" + p + ";") * 10}">'
                      for p, c in zip("abcdefgh", "bcdefghi", strict=True))
            + ']><testsuites><testsuite><testcase name="&i;"/></testsuite></testsuites>')
    with pytest.raises(ValueError):
        core.parse_junit(bomb)


def test_operands_never_become_options() -> None:
    argv = core.pytest_argv(["python3", "-m", "pytest"], "t; touch /tmp/pwn", ["-k", "x"],
                            "/tmp/j.xml")
    assert argv[-2:] == ["--", "t; touch /tmp/pwn"]
    with pytest.raises(ToolInputError, match="must not start with '-'"):
        core.ruff_check_argv("--fix", None, False)


def test_parse_ruff_diagnostics() -> None:
    out = ('[{"code": "F401", "message": "`os` imported but unused", "filename": '
           '"/workspace/pkg/m.py", "location": {"row": 1, "column": 8}, "fix": '
           '{"applicability": "safe"}, "url": "https://docs.astral.sh/ruff/rules/x"},'
           '{"code": "E711", "message": "cmp", "filename": "/workspace/pkg/m.py", '
           '"location": {"row": 5, "column": 30}, "fix": {"applicability": "unsafe"}, '
           '"url": null}]')
    d1, d2 = core.parse_ruff(out)
    assert (d1.file, d1.line, d1.column, d1.code, d1.fixable) == ("pkg/m.py", 1, 8, "F401", True)
    assert not d2.fixable and d2.url is None


def test_redactor_forms_edges_and_data() -> None:
    secret = "s3cr3t-Value/+?"
    r = Redactor([("TOKEN", secret)])
    b64 = base64.b64encode(secret.encode()).decode()
    text = f"a {secret} b {b64} c {quote(secret, safe='')} d"
    assert r.redact(text) == "a [redacted:TOKEN] b [redacted:TOKEN] c [redacted:TOKEN] d"
    assert r.redact("head " + secret[:5]) == "head [redacted:TOKEN]"
    assert r.redact(secret[-4:] + " tail") == "[redacted:TOKEN] tail"
    assert r.redact("s3 short fragments stay") == "s3 short fragments stay"
    assert r.redact_data({"k": [secret, 1, {"x": secret}]}) == {
        "k": ["[redacted:TOKEN]", 1, {"x": "[redacted:TOKEN]"}]}
    assert not Redactor([("TINY", "abc")])  # too short to redact: ignored
