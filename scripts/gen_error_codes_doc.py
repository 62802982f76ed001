"""Write docs/error-codes.md from the table in ib_resilience/error_codes.py.

Usage: python scripts/gen_error_codes_doc.py [--check]
(--check exits 1 when the committed document differs from the generated text.)
"""

from __future__ import annotations

import sys
from pathlib import Path

from ib_resilience.error_codes import render_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "error-codes.md"


def main(argv: list) -> int:
    text = render_markdown()
    if "--check" in argv:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is out of date: run scripts/gen_error_codes_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
