"""Reading the small CSV files users write (input CSVs, label CSVs)."""
import csv

from .errors import InputError


def read_csv_rows(path, what, empty_hint="no header row"):
    """The stripped header and the non-blank rows as (line number, cells).

    ``what`` names the kind of file in messages ("label file", "input CSV");
    a missing, unreadable or empty file raises :class:`InputError`.
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
    return [cell.strip() for cell in header], rows
