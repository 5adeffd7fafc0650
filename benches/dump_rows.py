#!/usr/bin/env python3
"""Two chunking options for dump streams that arc does not implement, measured on a
day-1/day-2 pair of dumps (benches/dump_series.sh runs it):

  dump_rows.py DAY1 DAY2 AVG...

* rows:AVG  chunk boundaries aligned to dump rows: the stream is cut into rows (a line;
  inside a mysqldump extended INSERT also at each "),(" between two rows), and a chunk
  ends after a row whose BLAKE2 hash is 0 modulo AVG/(day 1's mean row size), with a minimum of
  AVG/4 and a maximum of 4*AVG bytes: content-defined over rows instead of bytes.
  Prints, per AVG, the uncompressed bytes of the day-2 chunks day 1 does not have, and
  their count (the index entries day 2 adds).
* delta-chunks:262144: row-aligned chunks of 256 KiB, and each day-2 chunk day 1 lacks
  stored as `zstd -3 --patch-from` against the day-1 chunk that started nearest to the
  same offset: the stored bytes of the recommended design (format-spec/v2/streams.md),
  with the chunk count (and so the index) of today's stream chunks.
* delta: `zstd -3 --patch-from=DAY1 DAY2`, the size of day 2 encoded against the whole
  of day 1: the floor for any delta scheme (no peer stores deltas; the floor says what
  one could gain).

Output: one line per option, `option<TAB>new_raw_bytes<TAB>new_chunks`.
"""

import bisect
import hashlib
import os
import re
import subprocess
import sys
import tempfile

ROW_SPLIT = re.compile(rb"(?<=\n)|(?<=\),)(?=\()")


def rows(data):
    return [r for r in ROW_SPLIT.split(data) if r]


def chunks(rs, avg, mean):
    modulus = max(1, avg // mean)
    out, cur, size = [], [], 0
    for r in rs:
        cur.append(r)
        size += len(r)
        h = int.from_bytes(hashlib.blake2b(r, digest_size=8).digest(), "little")
        if size >= 4 * avg or (size >= avg // 4 and h % modulus == 0):
            out.append(b"".join(cur))
            cur, size = [], 0
    if cur:
        out.append(b"".join(cur))
    return out


def main():
    day1, day2, avgs = sys.argv[1], sys.argv[2], [int(a) for a in sys.argv[3:]]
    d1 = open(day1, "rb").read()
    d2 = open(day2, "rb").read()
    r1, r2 = rows(d1), rows(d2)
    # The cut rule must not depend on the day (as a chunker's parameters do not): the
    # mean row size is day 1's for both.
    mean = max(1, len(d1) // max(1, len(r1)))
    for avg in avgs:
        have = {hashlib.blake2b(c, digest_size=16).digest() for c in chunks(r1, avg, mean)}
        c2 = chunks(r2, avg, mean)
        added = [c for c in c2 if hashlib.blake2b(c, digest_size=16).digest() not in have]
        print("rows:%d\t%d\t%d" % (avg, sum(map(len, added)), len(added)))
    # Per chunk: each day-2 chunk that day 1 lacks, as a delta against the day-1 chunk
    # that started nearest to the same offset (row-aligned chunks of AVG 256 KiB).
    c1, c2 = chunks(r1, 262144, mean), chunks(r2, 262144, mean)
    have = {hashlib.blake2b(c, digest_size=16).digest() for c in c1}
    starts1, pos = [], 0
    for c in c1:
        starts1.append(pos)
        pos += len(c)
    total, n, pos = 0, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        base_f, new_f = os.path.join(tmp, "base"), os.path.join(tmp, "new")
        for c in c2:
            if hashlib.blake2b(c, digest_size=16).digest() not in have:
                i = max(0, bisect.bisect_right(starts1, pos) - 1)
                if i + 1 < len(starts1) and starts1[i + 1] - pos < pos - starts1[i]:
                    i += 1
                open(base_f, "wb").write(c1[i])
                open(new_f, "wb").write(c)
                total += len(subprocess.run(["zstd", "-3", "-q", "-c", "--patch-from=" + base_f, new_f],
                                            check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout)
                n += 1
            pos += len(c)
    print("delta-chunks:262144\t%d\t%d" % (total, n))
    delta = subprocess.run(["zstd", "-3", "-q", "-c", "--long=27", "--patch-from=" + day1, day2],
                           check=True, stdout=subprocess.PIPE).stdout
    print("delta\t%d\t-" % len(delta))


if __name__ == "__main__":
    main()
