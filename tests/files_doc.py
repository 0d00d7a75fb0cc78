"""Runs every ```python block of a Markdown page (docs/files.md) in the current directory, each
in a namespace of its own, in order; exit 1 naming the first block that fails. Used by
tests/test_files.cpp on a tiny run, so the page's dataset and attribute names are checked
against files btm wrote."""
import re
import sys
import traceback


def main(page):
    with open(page, encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)
    if not blocks:
        print(f"{page}: no python blocks")
        return 1
    for i, code in enumerate(blocks, 1):
        try:
            exec(compile(code, f"{page} block {i}", "exec"), {"__name__": "__main__"})
        except Exception:
            print(f"{page}: python block {i} failed:\n{code}")
            traceback.print_exc()
            return 1
    print(f"ran {len(blocks)} python blocks of {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
