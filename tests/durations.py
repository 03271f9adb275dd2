"""The suite's test durations, used only to order the tests (heaviest first): see conftest.py.

Refresh after tests are added or change a lot:
    python -m pytest -q --durations=0 > /tmp/run.txt; python tests/durations.py /tmp/run.txt
"""

import json
import pathlib
import re
import sys
from collections import defaultdict

TABLE = pathlib.Path(__file__).with_name("durations.json")


def main(report: str) -> None:
    seconds = defaultdict(float)
    for line in pathlib.Path(report).read_text().splitlines():
        m = re.match(r"([\d.]+)s (?:call|setup|teardown)\s+(\S+)", line)
        if m:
            seconds[m.group(2)] += float(m.group(1))
    table = {k: round(v, 1) for k, v in sorted(seconds.items()) if v >= 0.5}
    TABLE.write_text(json.dumps(table, indent=1) + "\n")
    print(f"{len(table)} tests, {sum(table.values()):.0f} s in {TABLE}")


if __name__ == "__main__":
    main(sys.argv[1])
