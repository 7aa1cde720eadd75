"""Naive baseline for the file leg: one json.loads per journal response and
one json.dumps per event, written as JSON lines (no job state, no spool, no
checkpoint; one fsync at the end).

usage: naive.py JOURNAL OUT   (prints the number of lines written)
"""
import json
import os
import sys


def main():
    src, dst = sys.argv[1], sys.argv[2]
    n = 0
    with open(src, "rb") as f, open(dst, "w") as out:
        for line in f:
            resp = json.loads(line)
            jobid = resp.get("id")
            if jobid is None or jobid < 0:
                continue  # broker events, the sentinel
            for ev in resp["events"]:
                out.write(json.dumps({"id": jobid, "event": ev}))
                out.write("\n")
                n += 1
        out.flush()
        os.fsync(out.fileno())
    print(n)


if __name__ == "__main__":
    main()
