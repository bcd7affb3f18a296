"""Summarise py-spy's collapsed stacks: where the samples' own time and total time went.

`python -m bench.profile STACKS.txt [N]` prints the top N functions by self and inclusive share.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<fn>[^ ]+) \((?P<file>[^:]+)(?::\d+)?\)$")


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match["file"].replace(str(Path.cwd()) + "/", "")
    file = re.sub(r".*/site-packages/", "", file)
    return f"{match['fn']} ({file})"


def summarise(text: str, top: int = 20) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in text.splitlines()[:1_000_000]:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_name(f) for f in stack.split(";") if f.strip()]
        if frames:
            own[frames[-1]] += n
        for name in set(frames):
            total[name] += n
    out = [f"{samples} samples", "self %  function"]
    out += [f"{100 * n / samples:5.1f}  {name}" for name, n in own.most_common(top)]
    out += ["", "total %  function"]
    out += [f"{100 * n / samples:5.1f}  {name}" for name, n in total.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1]).read_text(), int(sys.argv[2]) if len(sys.argv) > 2 else 20))
