"""Rewrite one benchmark's own section of docs/benchmarks.md, between its marker comments."""

from __future__ import annotations

from pathlib import Path


def update_section(
    path: Path, markers: tuple[str, str], title: str, body: str, command: str
) -> None:
    """Replace the text between `markers` with the command that made the figures and `body`;
    append a section headed `title` if the markers are missing. Other sections are kept."""
    start, end = markers
    section = f"{start}\n```bash\n{command}\n```\n\n{body}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n" + section + "\n"
    path.write_text(text)
