#!/usr/bin/env python3
"""A dump series with scattered updates (issue 16, "dump series with scattered updates").

  gen_dump_series.py DIR [--rows N] [--seed S]

Writes DIR/{mysql,pg}/day1.sql and day2.sql: one table of N rows (default 400,000),
day 2 the same table a day later with 1 % of the rows updated at random places and
0.5 % appended. Two dump styles of the same rows:
  mysql  mysqldump extended INSERTs, a statement broken when it reaches 1 MiB
         (mysqldump's net_buffer_length), so a row that grows moves the later breaks;
  pg     pg_dump COPY, one row a line.
Every byte is a function of (rows, seed): the same arguments give the same files.
"""

import argparse
import os
import random

NET_BUFFER = 1 << 20
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray").split()
STATUS = ("new", "paid", "shipped", "delivered", "returned", "cancelled")


def row(rng, i):
    """(id, customer, email, amount cents, status, note, created) of row i."""
    return [
        i,
        rng.randrange(1, 200_000),
        "%s.%s%d@example.%s" % (rng.choice(WORDS), rng.choice(WORDS), rng.randrange(1000), rng.choice(("com", "org", "net"))),
        rng.randrange(100, 5_000_000),
        rng.choice(STATUS),
        " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 6))),
        "2026-%02d-%02d %02d:%02d:%02d" % (rng.randrange(1, 13), rng.randrange(1, 29), rng.randrange(24),
                                           rng.randrange(60), rng.randrange(60)),
    ]


def update(rng, r):
    """What a day changes in a row: its status, its amount, sometimes its note."""
    r = list(r)
    r[4] = rng.choice(STATUS)
    r[3] = rng.randrange(100, 5_000_000)
    if rng.random() < 0.3:
        r[5] = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 6)))
    return r


def tables(rows, seed):
    rng = random.Random(seed)
    day1 = [row(rng, i + 1) for i in range(rows)]
    day2 = list(day1)
    for i in rng.sample(range(rows), rows // 100):
        day2[i] = update(rng, day2[i])
    day2 += [row(rng, rows + k + 1) for k in range(rows // 200)]
    return day1, day2


def mysql(rows):
    head = ("-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB, for debian-linux-gnu (x86_64)\n--\n"
            "-- Host: localhost    Database: shop\n\nDROP TABLE IF EXISTS `orders`;\n"
            "CREATE TABLE `orders` (\n  `id` int NOT NULL,\n  `customer` int NOT NULL,\n"
            "  `email` varchar(255) NOT NULL,\n  `amount` bigint NOT NULL,\n  `status` varchar(16) NOT NULL,\n"
            "  `note` text,\n  `created` datetime NOT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB;\n\n"
            "LOCK TABLES `orders` WRITE;\n")
    out = [head]
    prefix = "INSERT INTO `orders` VALUES "
    stmt = prefix
    for r in rows:
        v = "(%d,%d,'%s',%d,'%s','%s','%s')" % tuple(r)
        if len(stmt) + len(v) + 2 > NET_BUFFER and stmt != prefix:
            out.append(stmt + ";\n")
            stmt = prefix
        stmt += ("," if stmt != prefix else "") + v
    out.append(stmt + ";\nUNLOCK TABLES;\n-- Dump completed\n")
    return "".join(out)


def pg(rows):
    head = ("--\n-- PostgreSQL database dump\n--\n\nCREATE TABLE public.orders (\n    id integer NOT NULL,\n"
            "    customer integer NOT NULL,\n    email text NOT NULL,\n    amount bigint NOT NULL,\n"
            "    status text NOT NULL,\n    note text,\n    created timestamp NOT NULL\n);\n\n"
            "COPY public.orders (id, customer, email, amount, status, note, created) FROM stdin;\n")
    body = "".join("%d\t%d\t%s\t%d\t%s\t%s\t%s\n" % tuple(r) for r in rows)
    return head + body + "\\.\n\n--\n-- PostgreSQL database dump complete\n--\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--seed", type=int, default=20261206)
    a = ap.parse_args()
    day1, day2 = tables(a.rows, a.seed)
    for style, render in (("mysql", mysql), ("pg", pg)):
        d = os.path.join(a.dir, style)
        os.makedirs(d, exist_ok=True)
        for name, t in (("day1.sql", day1), ("day2.sql", day2)):
            with open(os.path.join(d, name), "w") as f:
                f.write(render(t))


if __name__ == "__main__":
    main()
