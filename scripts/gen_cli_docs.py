#!/usr/bin/env python3
"""Regenerate the CLI documentation from the commands' --help texts.

Writes docs/cli.md (every command's full help) and the command table between
`<!-- cli:start -->` and `<!-- cli:end -->` in README.md (markers appended if missing).
tests/test_readme_cli.py fails when either is out of date: run this script after changing a command.

Usage:
    .venv/bin/python scripts/gen_cli_docs.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dicomd.cli import main  # noqa: E402
from dicomd.cli.docs import readme_section, reference, replace_section  # noqa: E402


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the files are up to date")
    args = parser.parse_args()
    readme_path, docs_path = ROOT / "README.md", ROOT / "docs" / "cli.md"
    readme = readme_path.read_text() if readme_path.exists() else "# dicomd\n"
    wanted = {readme_path: replace_section(readme, readme_section(main)), docs_path: reference(main)}
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(wanted[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
