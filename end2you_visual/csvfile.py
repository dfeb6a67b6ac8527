"""Reading the small CSV files users write (input CSVs, label CSVs)."""
from __future__ import annotations

import csv
from pathlib import Path

from .errors import InputError


def read_csv_rows(path: Path, what: str, empty_hint: str = "no header row"
                  ) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The stripped header and the non-blank rows as (line number, cells).

    ``what`` names the kind of file in messages ("label file", "input CSV");
    a missing, unreadable or empty file raises :class:`InputError`, and so
    does a file whose columns are separated by ``;``, tabs or ``|`` instead
    of commas (naming the separator found).
    """
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows = [(reader.line_num, row) for row in reader
                    if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(path, f"cannot read {what}: {error}") from error
    if header is None or not any(cell.strip() for cell in header):
        raise InputError(path, f"is empty ({empty_hint})")
    _check_separator(path, header, what)
    return [cell.strip() for cell in header], rows


# Separators other programs write instead of commas (a spreadsheet with a
# decimal comma writes ';'), and how a message names them.
SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'"}


def _check_separator(path: Path, header: list[str], what: str) -> None:
    """An InputError naming the separator when the header is one cell that
    holds another separator: the file is not comma-separated."""
    if len(header) != 1:
        return
    for separator, name in SEPARATORS.items():
        if separator in header[0]:
            raise InputError(path, f"columns are separated by {name}, not commas (header "
                                   f"{header[0].strip()!r}); save the {what} with commas "
                                   "between its columns")
