"""docs/architecture.md's "Concern → owner" table names modules that exist, and every module of
``suite/`` has its row: a module added without an owner, or a row left behind by a move, fails."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _table() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Concern → owner", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def _named_paths() -> set[str]:
    return set(re.findall(r"`(suite/[^`\s]+)`", _table()))


def test_every_owner_the_table_names_exists():
    named = _named_paths()
    assert len(named) > 40
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_module_of_the_suite_has_an_owner_row():
    named = _named_paths()
    folders = {p.rstrip("/") for p in named if p.endswith("/")}
    modules = [p.relative_to(ROOT).as_posix() for p in (ROOT / "suite").rglob("*.py") if p.name != "__init__.py" or p.parent.name == "data"]
    unlisted = sorted(m for m in modules if m not in named and not any(m.startswith(f + "/") for f in folders))
    assert not unlisted, f"modules without a row in docs/architecture.md's concern table: {unlisted}"
