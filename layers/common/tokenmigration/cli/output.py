"""Plain-text tables and durations for the terminal."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table(rows: Iterable[Sequence[object]], headers: Sequence[str] | None = None) -> str:
    data = [[str(c) for c in row] for row in rows]
    if headers:
        data.insert(0, list(headers))
    if not data:
        return ""
    widths = [max(len(row[i]) for row in data) for i in range(len(data[0]))]
    lines = []
    for n, row in enumerate(data):
        cells = [c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
        if headers and n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _numeric(text: str) -> bool:
    return text.replace(".", "", 1).replace(",", "").replace("%", "").lstrip("-").isdigit()


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    if seconds < 60:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
