"""Sort a memcheck log (valgrind's text output on stderr, interleaved with the
"fastnorm-smoke: CASE <label>" lines of tools/valgrind_smoke.py --labels) into errors in
fastnorm and the rest.

An error is fastnorm's when any frame of its stacks (the error itself, the block it hit,
the origin of an uninitialised value) is in the extension (_kernels*.so, fastnorm/_kernels.c,
csrc/), or when it is a "Syscall param writev(...) points to uninitialised byte(s)" report:
only the smoke script's probe of fastnorm's outputs calls writev. Definitely-lost leak
records count as fastnorm's by the same stack rule.

usage: python tools/valgrind_filter.py LOG [--strict]
Exit status 1 when fastnorm has an error (with --strict: when anything unsuppressed is left).
"""

from __future__ import annotations

import re
import sys
from collections import Counter

VG = re.compile(r"^==(\d+)== ?(.*)$")
ERROR_HEAD = re.compile(
    r"^(Invalid (read|write|free|alignment)|Conditional jump|Use of uninitialised|"
    r"Syscall param|Mismatched free|Source and destination overlap|Argument '.*' of function|"
    r"Jump to the invalid address|Process terminating|Illegal memory pool|"
    r"\S.* bytes in \S+ blocks are definitely lost)"
)
FASTNORM = re.compile(r"_kernels[.\w-]*\.so|fastnorm/_kernels\.c|csrc/|\bfn_\w+_(f32|f64)")
LABEL = "fastnorm-smoke: CASE "


def parse(lines):
    """[(label, [valgrind lines of one block])] for every error block."""
    blocks, current, label, block_label = [], [], "(before the first case)", None
    for raw in lines:
        line = raw.rstrip("\n")
        m = VG.match(line)
        if not m:
            if line.startswith(LABEL):
                label = line[len(LABEL):]
            continue
        text = m.group(2)
        if text.startswith("HEAP SUMMARY"):
            label = "(the leak check at exit)"
        if text.strip() == "":
            if current:
                blocks.append((block_label, current))
            current = []
            continue
        if not current:
            block_label = label
        current.append(text)
    if current:
        blocks.append((block_label, current))
    return [(lab, b) for lab, b in blocks if ERROR_HEAD.match(b[0])]


def is_fastnorm(block):
    if block[0].startswith("Syscall param writev"):
        return True
    return any(FASTNORM.search(line) for line in block)


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    strict = "--strict" in argv[1:]
    with open(argv[0], errors="replace") as f:
        lines = f.readlines()
    summary = [VG.match(ln).group(2) for ln in lines if VG.match(ln) and
               re.search(r"ERROR SUMMARY|definitely lost:|in use at exit", ln)]
    errors = parse(lines)
    ours = [(lab, b) for lab, b in errors if is_fastnorm(b)]
    others = [(lab, b) for lab, b in errors if not is_fastnorm(b)]
    for lab, b in ours:
        print(f"--- fastnorm error, during: {lab}")
        print("\n".join("    " + ln for ln in b))
    if others:
        kinds = Counter(b[0] for _, b in others)
        print(f"--- {len(others)} unsuppressed error context(s) outside fastnorm "
              "(CPython / NumPy / glibc; not counted):")
        for kind, n in kinds.most_common():
            print(f"    {n} x {kind}")
        for lab, b in others[:3]:
            print(f"    e.g. during {lab}:")
            print("\n".join("        " + ln for ln in b[:8]))
    for s in summary:
        print(f"valgrind: {s}")
    print(f"valgrind filter: {len(ours)} error context(s) in fastnorm code, "
          f"{len(others)} elsewhere")
    if ours or (strict and others):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
