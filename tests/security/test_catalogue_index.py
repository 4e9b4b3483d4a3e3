"""No catalogue case is skipped silently: each id has a test named after it or a README line.

The catalogue is the committed copy in ``docs/security-catalogue.md``; the table is
``tests/security/README.md``. A test covers an id when its name starts with that id, alone
or in a chain (``test_pf03_pf07_...`` covers PF-03 and PF-07).
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "docs" / "security-catalogue.md"
README = Path(__file__).with_name("README.md")

CASE = re.compile(r"^- \*\*([A-Z]{2}-\d{2}) ", re.MULTILINE)
TEST_NAME = re.compile(r"def (test_((?:[a-z]{2}\d{2}_)+)\w*)")
ROW = re.compile(r"^\| ([A-Z]{2}-\d{2}) \| [^|]+ \| ([^|]+?) \| ([^|]*?) \|$", re.MULTILINE)


def catalogue_ids() -> list[str]:
    return CASE.findall(CATALOGUE.read_text())


def ids_with_tests() -> dict[str, set[str]]:
    """Case id → names of the tests named after it, found under tests/ and agent/."""
    found: dict[str, set[str]] = {}
    for tree in ("tests", "agent"):
        for path in (ROOT / tree).rglob("*.py"):
            for name, ids in TEST_NAME.findall(path.read_text()):
                for letters, digits in re.findall(r"([a-z]{2})(\d{2})_", ids):
                    found.setdefault(f"{letters.upper()}-{digits}", set()).add(name)
    return found


def readme_rows() -> dict[str, tuple[str, str]]:
    return {cid: (status, what) for cid, status, what in ROW.findall(README.read_text())}


def test_catalogue_has_108_cases() -> None:
    ids = catalogue_ids()
    assert len(ids) == 108
    assert len(set(ids)) == 108


def test_every_case_is_tested_or_listed_not_applicable() -> None:
    tested = ids_with_tests()
    rows = readme_rows()
    silent = [cid for cid in catalogue_ids()
              if cid not in tested and not (cid in rows and rows[cid][0] != "implemented")]
    assert not silent, f"cases with neither a test named after them nor a README line: {silent}"


def test_readme_table_lists_every_case_and_tells_the_truth() -> None:
    tested = ids_with_tests()
    rows = readme_rows()
    assert sorted(rows) == sorted(catalogue_ids()), "the README table must list all 108 ids"
    for cid, (status, what) in rows.items():
        assert status in {"implemented", "N/A", "elsewhere"}, f"{cid}: unknown status {status}"
        if status == "implemented":
            named = set(re.findall(r"`(test_\w+)`", what))
            assert named, f"{cid} is marked implemented without a test name"
            assert named <= tested.get(cid, set()), (
                f"{cid}: the README names {sorted(named)}, the tests named after it are "
                f"{sorted(tested.get(cid, set()))}")
        else:
            assert what.strip(), f"{cid} is {status} without a reason"
