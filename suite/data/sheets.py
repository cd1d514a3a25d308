"""Reading the releases' coding spreadsheets: locate the file, the sheet, the header row, the
columns; turn cells into typed values with problems named by Excel row."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .au_strings import cell_to_text
from .records import DataError


def find_sheet_file(root: Path, pattern: str, expected: str) -> Path:
    """The newest file in ``root`` matching ``pattern`` (release dates sort as text)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} is not a folder: pass the release folder with --root / --data-root")
    found = sorted(root.glob(pattern))
    if not found:
        present = sorted(p.name for p in root.iterdir())[:15]
        raise DataError(f"no coding spreadsheet in {root}: expected {expected}; found {present}")
    return found[-1]


def _norm(name) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


@dataclass
class SheetTable:
    path: Path
    sheet: str
    frame: pd.DataFrame  # columns renamed to canonical names; index = Excel row number
    columns_found: list[str]


def read_table(path: Path, sheet: str, columns: dict[str, tuple[str, ...]], required: set[str]) -> SheetTable:
    """Read ``sheet`` of ``path``; find the header row (the first with 'Subject' and 'Filename',
    so preambles of any length work); map columns by normalised name.

    ``columns`` maps canonical name → accepted header spellings. Cached values are read for
    formula cells (openpyxl ``data_only``)."""
    try:
        book = pd.ExcelFile(path, engine="openpyxl")
    except Exception as e:  # corrupt or not an xlsx
        raise DataError(f"cannot open spreadsheet {path}: {e}. Re-copy it from the release.") from e
    if sheet not in book.sheet_names:
        raise DataError(f"{path}: sheet {sheet!r} not found; sheets present: {book.sheet_names}")
    raw = book.parse(sheet, header=None, dtype=object)
    header_idx = None
    for i in range(min(len(raw), 40)):
        names = {_norm(v) for v in raw.iloc[i].tolist() if isinstance(v, str)}
        if {"subject", "filename"} <= names:
            header_idx = i
            break
    if header_idx is None:
        raise DataError(f"{path} sheet {sheet!r}: no header row with 'Subject' and 'Filename' in the first 40 rows")
    header = [cell_to_text(v).strip() for v in raw.iloc[header_idx].tolist()]
    lookup = {}
    for j, h in enumerate(header):
        if h and _norm(h) not in lookup:
            lookup[_norm(h)] = j
    mapping = {}
    for canon, spellings in columns.items():
        for sp in spellings:
            if _norm(sp) in lookup:
                mapping[canon] = lookup[_norm(sp)]
                break
    found = [h for h in header if h]
    missing = [c for c in columns if c in required and c not in mapping]
    if missing:
        raise DataError(
            f"{path} sheet {sheet!r} (header on row {header_idx + 1}): missing required column "
            f"{', '.join(repr(columns[m][0]) for m in missing)}; columns found: {found}"
        )
    body = raw.iloc[header_idx + 1:, list(mapping.values())]
    body.columns = list(mapping.keys())
    body.index = [header_idx + 2 + k for k in range(len(body))]  # Excel row numbers
    return SheetTable(path, sheet, body, found)


def is_blank(value) -> bool:
    return cell_to_text(value).strip() == ""


def as_int(value) -> int | None:
    """An integer frame/class number from a cell, or None when the cell is not one."""
    text = cell_to_text(value).strip()
    return int(text) if re.fullmatch(r"\d+", text) else None


def subject_id(value, width: int) -> str | None:
    """'01', 1, 1.0, 'sub01' → '01' (CASME II, width 2); '006', 6 → '006' (SAMM, width 3)."""
    text = cell_to_text(value).strip()
    m = re.fullmatch(r"(?:sub)?0*(\d+)", text, re.IGNORECASE)
    return m.group(1).zfill(width) if m else None
