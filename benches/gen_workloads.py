#!/usr/bin/env python3
"""Deterministic generator for arc's benchmark workloads (python3 stdlib only).

Shapes (see ../shared/workloads.md and BENCHMARKS.md):
  spool  maildir mail spool: ~200k messages, ~12k directories, ~1.2 GB
  www    ~10 web sites, ~35k files, ~0.7 GB (shared CMS release, uploads, big files)
  dump   dump/day1.sql + dump/day2.sql, ~300 MB mysqldump-style SQL, day 2 = ~1.5 % rows changed
  big    big/big.bin, one pseudo-random file of ARC_BENCH_BIG_GIB GiB (default 10)

Every byte is a function of (seed, scale, GEN_VERSION) only: the same arguments give the
same tree (file names, contents, mtimes), whatever the number of worker processes.
`--scale` multiplies every count and size (0.02 gives a ~25 MB spool for self-tests).

Usage:
  gen_workloads.py [DIR] [--shapes spool,www,dump] [--seed N] [--scale F] [--force]
  gen_workloads.py [DIR] --spool-day2 apply|revert|status

DIR defaults to $ARC_BENCH_DIR, else /var/tmp/arc-bench.  A shape that is already present
with the same seed/scale/generator version (recorded in DIR/manifest.json) is skipped.

`--spool-day2 apply` mutates spool/ in place into "one day later" (1 % new messages,
0.5 % deleted, 2 % renamed `:2,S` -> `:2,RS`, a few folders moved); `revert` undoes it
exactly (deleted messages are parked in DIR/.spool-day2-stash, moves are journaled in
DIR/spool-day2.json), so benchmark runs can alternate day 1 and day 2 without regenerating.
"""

import argparse
import base64
import json
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import time
import zlib

GEN_VERSION = 1
DEFAULT_SEED = 20241124
ALL_SHAPES = ("spool", "www", "dump", "big")

# Epoch seconds used for file times and e-mail dates (fixed, so output is reproducible).
T_START = 1609459200      # 2021-01-01 00:00:00 UTC: oldest mail / file
T_DAY1 = 1704074400       # 2024-01-01 02:00:00 UTC: "today" (day 1)
DAY = 86400


def rng_for(seed, *parts):
    """Independent, reproducible random stream for one named piece of work."""
    return random.Random(":".join(str(p) for p in (seed, GEN_VERSION) + parts))


def lognormal_clipped(rng, median, sigma, lo, hi):
    return int(min(hi, max(lo, rng.lognormvariate(math.log(median), sigma))))


def scaled(n, scale, minimum=1):
    return max(minimum, int(round(n * scale)))


# ---------------------------------------------------------------------------------------
# Vocabulary: words with a Zipf-like frequency, names, domains, identifiers
# ---------------------------------------------------------------------------------------

FUNCTION_WORDS = (
    "the of and to a in is it you that he was for on are with as I his they be at one have "
    "this from or had by but some what there we can out other were all your when up use how "
    "said an each she which do their time if will way about many then them would like so these "
    "her make see him two has look more day could go come did my no most who over know than "
    "call first people may down been now find any new work part take get place made live where "
    "after back little only round year came show every good me give our under name very through "
    "just form much great think say help low line before turn cause same mean differ move right "
    "boy old too does tell set three want well also small end put home read hand port large even"
).split()

SYLLABLES = (
    "ka ri to mo na se lu pe di fa ga he ji ko la me ni po qu re sa ti vu wa xe yo za ber con "
    "dis ent for gra hal ist jun kel lan mor nor ost pra que ran str tor und ver wil zen ac ad "
    "al an ar as at el em en er es et il im in ir is it ol om on or os ot ul um un ur us ut"
).split()

FIRST_NAMES = (
    "James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Charles Karen Christopher Nancy Daniel Lisa "
    "Matthew Betty Anthony Margaret Mark Sandra Donald Ashley Steven Kimberly Paul Emily Andrew "
    "Donna Joshua Michelle Kenneth Dorothy Kevin Carol Brian Amanda George Melissa Edward "
    "Deborah Ronald Stephanie Timothy Rebecca Jason Sharon Jeffrey Laura Ryan Cynthia Jacob "
    "Kathleen Gary Amy Nicholas Shirley Eric Angela Jonathan Helen Stephen Anna Larry Brenda "
    "Justin Pamela Scott Nicole Brandon Emma Benjamin Samantha Samuel Katherine Gregory Christine "
    "Frank Debra Alexander Rachel Raymond Catherine Patrick Carolyn Jack Janet Dennis Ruth Jerry "
    "Maria Tyler Heather Aaron Diane Jose Virginia Adam Julie Henry Joyce Nathan Victoria Lukas "
    "Sophie Jonas Lea Felix Marie Noah Hannah Elias Lena Paul Mia Leon Anna Finn Clara Ben Ida"
).split()

LAST_NAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris "
    "Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill "
    "Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Gomez Phillips "
    "Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook "
    "Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward "
    "Richardson Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes Price Alvarez "
    "Castillo Sanders Patel Myers Long Ross Foster Jimenez Mueller Schmidt Schneider Fischer "
    "Weber Meyer Wagner Becker Schulz Hoffmann Koch Richter Klein Wolf Neumann Schwarz Braun"
).split()

TLDS = ("com", "org", "net", "de", "io", "co.uk", "fr", "nl", "ch", "eu")


class Vocab:
    """Seeded vocabulary shared by all generators (built once, inherited by workers)."""

    def __init__(self, seed):
        self.seed = seed
        rng = rng_for(seed, "vocab")
        words = list(FUNCTION_WORDS)
        seen = set(words)
        while len(words) < 6000:
            w = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((1, 2, 2, 2, 3, 3, 4))))
            if len(w) > 1 and w not in seen:
                seen.add(w)
                words.append(w)
        self.words = words
        # Zipf-like weights; a 256k-entry population makes rng.choices() unweighted (fast).
        cum, acc = [], 0.0
        for r in range(len(words)):
            acc += 1.0 / (r + 2.7) ** 1.07
            cum.append(acc)
        pop = rng.choices(words, cum_weights=cum, k=1 << 18)
        for i in range(len(pop)):
            x = rng.random()
            if x < 0.065:
                pop[i] += "."
            elif x < 0.115:
                pop[i] += ","
            elif x < 0.125:
                pop[i] = pop[i].capitalize()
        # Real prose repeats phrases, not only words: half of the tokens are phrases (2-6 words)
        # from a Zipf-weighted pool.  Tuned so that zstd -3 gives ~2x on one 5 KB message and
        # ~3.4x on a long stream, as measured on real mail in workloads.md.
        phrases = [" ".join(rng.choices(pop, k=rng.randint(2, 6))) for _ in range(50_000)]
        cum, acc = [], 0.0
        for r in range(len(phrases)):
            acc += 1.0 / (r + 3)
            cum.append(acc)
        ppop = rng.choices(phrases, cum_weights=cum, k=len(pop) // 2)
        pop = pop[:len(pop) - len(ppop)] + ppop
        rng.shuffle(pop)
        self.population = pop
        self.avg_token = sum(len(t) + 1 for t in pop) / len(pop)
        self.per_line = max(1, int(72 // self.avg_token))
        self.content_words = words[len(FUNCTION_WORDS):]
        self.domains = []
        for _ in range(400):
            d = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3, 3, 4))))
            self.domains.append(d + "." + rng.choice(TLDS))
        self.idents = [self._ident(rng) for _ in range(3000)]
        self.classes = [self._ident(rng, cap=True) for _ in range(800)]

    def _ident(self, rng, cap=False):
        parts = [rng.choice(self.content_words) for _ in range(rng.choice((1, 2, 2, 3)))]
        s = parts[0] + "".join(p.capitalize() for p in parts[1:])
        return s[0].upper() + s[1:] if cap else s

    def text(self, rng, nwords, per_line=0, quote=""):
        """About nwords tokens (a token is a word or a short phrase) of prose, in lines."""
        per_line = per_line or self.per_line
        words = rng.choices(self.population, k=nwords)
        lines = []
        for i in range(0, nwords, per_line):
            lines.append(quote + " ".join(words[i:i + per_line]))
            if rng.random() < 0.17:
                lines.append(quote.rstrip())
        return "\n".join(lines)

    def phrase(self, rng, lo, hi):
        return " ".join(rng.choices(self.content_words, k=rng.randint(lo, hi))).capitalize()


VOCAB = None  # set in main() before the worker pool forks


def pool(nproc=None):
    return multiprocessing.get_context("fork").Pool(nproc or os.cpu_count() or 2)


def _h(s):
    """Stable string hash (the builtin hash() is salted per process)."""
    return zlib.crc32(s.encode())


def rfc2822(t):
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(t))


# ---------------------------------------------------------------------------------------
# spool: maildir mail spool
# ---------------------------------------------------------------------------------------

SPOOL_DOMAIN = "mail.example.org"
STD_FOLDERS = (("INBOX", 38.0), ("Sent", 14.0), ("Trash", 6.0))
OPT_FOLDERS = (("Drafts", 0.6, 0.5), ("Junk", 3.0, 0.5))
CUSTOM_FOLDERS = (
    "Archive.2021", "Archive.2022", "Archive.2023", "Lists.dev", "Lists.announce", "Lists.users",
    "Projects.alpha", "Projects.billing", "Projects.migration", "Receipts", "Family", "Travel",
    "Newsletters", "Support.tickets", "Clients.acme", "Clients.globex", "Notifications", "HR",
)
KINDS = (("personal", 0.52), ("list", 0.25), ("newsletter", 0.08), ("notification", 0.15))
SPOOL_CHUNK = 500


def spool_plan(seed, scale):
    """Users, folders and per-message metadata (path, mtime, kind, sizes) for day 1."""
    rng = rng_for(seed, "spool", "plan")
    n_msgs = scaled(200_000, scale, 50)
    n_users = scaled(600, scale, 3)
    users, taken = [], set()
    while len(users) < n_users:
        u = (rng.choice(FIRST_NAMES) + "." + rng.choice(LAST_NAMES)).lower()
        if u in taken:
            u += str(len(users))
        taken.add(u)
        users.append(u)
    folders = {}      # user -> [(folder, weight)]
    for u in users:
        fl = list(STD_FOLDERS)
        for name, w, p in OPT_FOLDERS:
            if rng.random() < p:
                fl.append((name, w))
        k = min(len(CUSTOM_FOLDERS), int(rng.expovariate(1.0 / 1.1)))
        for name in rng.sample(CUSTOM_FOLDERS, k):
            fl.append((name, rng.uniform(4, 16)))
        folders[u] = fl
    uw = [rng.lognormvariate(0, 1.1) for _ in users]
    owner = rng.choices(range(n_users), weights=uw, k=n_msgs)
    kinds = [k for k, _ in KINDS]
    kind_cw = []
    acc = 0.0
    for _, w in KINDS:
        acc += w
        kind_cw.append(acc)
    metas = []
    for i in range(n_msgs):
        u = users[owner[i]]
        fl = folders[u]
        folder = rng.choices(fl, weights=[w for _, w in fl])[0][0]
        t = rng.randint(T_START, T_DAY1 - 3600)
        kind = "sent" if folder in ("Sent", "Drafts") else rng.choices(kinds, cum_weights=kind_cw)[0]
        size = lognormal_clipped(rng, 3200, 0.75, 1024, 40960)
        att = 0
        if rng.random() < 0.02:
            att = lognormal_clipped(rng, 24000, 1.0, 6000, 400_000)
        r = rng.random()
        flags = "S" if r < 0.90 else ("" if r < 0.95 else "FS")
        name = "%d.M%dP%dQ%d.mx%d:2,%s" % (t, rng.randint(0, 999999), rng.randint(1000, 65000),
                                           i, rng.randint(1, 3), flags)
        metas.append(("%s/%s/cur/%s" % (u, folder, name), t, u, kind, size, att))
    return users, folders, metas


def gen_message(rng, t, user, kind, size, att, recent):
    """One RFC 5322 message of roughly `size` bytes of text plus an optional attachment."""
    V = VOCAB
    uaddr = "%s@example.org" % user
    uname = " ".join(p.capitalize() for p in user.split("."))
    if kind == "sent":
        fname = uname
        faddr = uaddr
        tname = "%s %s" % (rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES))
        taddr = "%s@%s" % (tname.split()[0].lower(), rng.choice(V.domains))
        dom = "example.org"
    else:
        fname = "%s %s" % (rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES))
        dom = rng.choice(V.domains)
        faddr = "%s.%s@%s" % (fname.split()[0].lower(), fname.split()[1].lower(), dom)
        tname, taddr = uname, uaddr
    if kind == "list":
        lst = V.domains[_h(dom) % 7]
        taddr = "users@lists." + lst
        tname = "Users list"
    elif kind in ("newsletter", "notification"):
        dom = V.domains[rng.randrange(24)]
        faddr = ("noreply@" if kind == "notification" else "news@") + dom
        fname = dom.split(".")[0].capitalize() + (" Notifications" if kind == "notification" else " News")
    ip = "%d.%d.%d.%d" % (rng.randint(11, 223), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))
    qid = "%010X" % rng.getrandbits(40)
    date = rfc2822(t)
    reply = kind in ("personal", "sent", "list") and recent and rng.random() < 0.5
    if kind == "notification":
        subject = "[%s] Your request #%d has been updated" % (dom.split(".")[0], rng.randint(10000, 999999))
    elif reply:
        subject = "Re: " + recent[rng.randrange(len(recent))][0]
    else:
        subject = V.phrase(rng, 3, 9)
    h = [
        "Return-Path: <%s>" % faddr,
        "Delivered-To: %s" % uaddr,
        "Received: from mx%d.%s (mx%d.%s [%s])\n\tby %s (Postfix) with ESMTPS id %s\n\tfor <%s>; %s"
        % (rng.randint(1, 4), dom, rng.randint(1, 4), dom, ip, SPOOL_DOMAIN, qid, uaddr, date),
        "Received: from localhost (localhost [127.0.0.1])\n\tby mx1.%s (Postfix) with ESMTP id %08X;\n\t%s"
        % (dom, rng.getrandbits(32), date),
    ]
    if kind != "sent" and _h(dom) % 3:  # two thirds of the sending domains sign their mail
        h.append(
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=%s; s=s%d;\n\tt=%d; bh=%s;\n"
            "\th=From:To:Subject:Date:Message-ID:MIME-Version:Content-Type;\n\tb=%s"
            % (dom, _h(dom) % 3, t, base64.b64encode(rng.randbytes(32)).decode(),
               "\n\t ".join(base64.b64encode(rng.randbytes(256)).decode()[i:i + 72] for i in range(0, 344, 72))))
    h += [
        "Message-ID: <%016x.%d@%s>" % (rng.getrandbits(64), t, dom),
        "Date: " + date,
        "From: %s <%s>" % (fname, faddr),
        "To: %s <%s>" % (tname, taddr),
        "Subject: " + subject,
        "MIME-Version: 1.0",
    ]
    if reply:
        h.append("In-Reply-To: <%016x@%s>" % (rng.getrandbits(64), dom))
    if kind == "list":
        h.append("List-Id: Users discussion <users.lists.%s>" % V.domains[_h(dom) % 7])
        h.append("List-Unsubscribe: <mailto:users-leave@lists.%s>" % V.domains[_h(dom) % 7])
        h.append("Precedence: list")
    h.append("X-Spam-Status: No, score=%.1f required=5.0 tests=BAYES_00,DKIM_SIGNED,DKIM_VALID,"
             "SPF_PASS,RCVD_IN_DNSWL_NONE autolearn=ham autolearn_force=no version=3.4.6"
             % rng.uniform(-3, 2))
    head_len = sum(len(x) + 1 for x in h)
    nwords = max(12, int((size - head_len - 200) / V.avg_token))
    if kind == "newsletter":
        nwords = nwords // 2 + 6  # the HTML part repeats the text
        att = 0
    if kind == "notification":
        body = ("Hello %s,\n\nThe status of your request #%d changed to %s.\n\nDetails:\n%s\n\n"
                "You can view the full history at https://%s/account/requests/%d\n\n"
                "-- \nThis is an automated message from %s. Please do not reply to this e-mail.\n"
                "To change your notification settings visit https://%s/account/settings\n"
                % (uname, rng.randint(10000, 999999), rng.choice(("open", "pending", "resolved", "closed")),
                   V.text(rng, min(nwords, 120)), dom, rng.randint(1, 99999), fname, dom))
    else:
        body = V.text(rng, nwords)
        if reply and recent:
            _, qbody = recent[rng.randrange(len(recent))]
            body += "\n\nOn %s, %s wrote:\n" % (rfc2822(t - rng.randint(600, 9 * DAY)), tname)
            body += "\n".join("> " + ln for ln in qbody.split("\n")[:rng.randint(5, 80)])
        if kind == "list":
            body += ("\n\n_______________________________________________\nUsers mailing list\n"
                     "users@lists.%s\nhttps://lists.%s/mailman/listinfo/users\n"
                     % (V.domains[_h(dom) % 7], V.domains[_h(dom) % 7]))
        elif kind == "newsletter":
            body += ("\n\n---\nYou receive this newsletter because you subscribed at %s.\n"
                     "Unsubscribe: https://%s/newsletter/unsubscribe?id=%016x\n" % (dom, dom, rng.getrandbits(64)))
        elif kind == "sent" or rng.random() < 0.3:
            body += "\n\n-- \n%s\n%s\n" % (fname, V.phrase(rng, 2, 5))
        if kind in ("personal", "sent", "list") and len(recent) < 64:
            recent.append((subject.replace("Re: ", ""), body[:3000]))
        elif kind in ("personal", "sent", "list"):
            recent[rng.randrange(64)] = (subject.replace("Re: ", ""), body[:3000])
    if kind == "newsletter":  # multipart/alternative: the text and an HTML copy in the sender's template
        bnd = "----=_Alt_%d_%d.%d" % (rng.getrandbits(24), rng.getrandbits(30), t)
        head, foot = newsletter_template(dom)
        paras = "".join("<p>%s</p>\n" % p.replace("\n", " ") for p in body.split("\n\n"))
        h.append('Content-Type: multipart/alternative; boundary="%s"' % bnd)
        parts = [
            "\n".join(h), "", "--" + bnd, 'Content-Type: text/plain; charset="utf-8"',
            "Content-Transfer-Encoding: 8bit", "", body, "",
            "--" + bnd, 'Content-Type: text/html; charset="utf-8"', "Content-Transfer-Encoding: 8bit", "",
            head + paras + foot, "--" + bnd + "--", "",
        ]
    elif att:
        bnd = "----=_Part_%d_%d.%d" % (rng.getrandbits(24), rng.getrandbits(30), t)
        ext, mime = rng.choice((("pdf", "application/pdf"), ("jpg", "image/jpeg"), ("zip", "application/zip"),
                                ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document")))
        fn = "%s-%d.%s" % (rng.choice(V.content_words), rng.randint(1, 999), ext)
        h.append('Content-Type: multipart/mixed; boundary="%s"' % bnd)
        parts = [
            "\n".join(h), "", "This is a multi-part message in MIME format.", "",
            "--" + bnd, 'Content-Type: text/plain; charset="utf-8"', "Content-Transfer-Encoding: 8bit", "",
            body, "",
            "--" + bnd, '%s; name="%s"' % ("Content-Type: " + mime, fn), "Content-Transfer-Encoding: base64",
            'Content-Disposition: attachment; filename="%s"' % fn, "",
            base64.encodebytes(rng.randbytes(att)).decode(),
            "--" + bnd + "--", "",
        ]
    else:
        h.append('Content-Type: text/plain; charset="utf-8"')
        h.append("Content-Transfer-Encoding: 8bit")
        parts = ["\n".join(h), "", body, ""]
    return "\n".join(parts).encode()


_TEMPLATES = {}


def newsletter_template(dom):
    """The fixed HTML frame (~5 KB) a newsletter sender wraps around every issue."""
    if dom not in _TEMPLATES:
        rng = rng_for(VOCAB.seed, "newsletter-template", dom)
        name = dom.split(".")[0].capitalize()
        head = ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                '<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>%s newsletter</title>\n'
                '<style type="text/css">\n%s</style>\n</head>\n<body>\n'
                '<table role="presentation" width="100%%" cellpadding="0" cellspacing="0" border="0" class="wrapper">\n'
                '<tr><td align="center"><a href="https://www.%s/?utm_source=newsletter&utm_medium=email">'
                '<img src="https://cdn.%s/img/logo-%d.png" alt="%s" width="180" height="48"></a></td></tr>\n'
                '<tr><td class="content">\n' % (name, _css(rng, rng.randint(2500, 4500)), dom, dom, rng.randint(1, 9), name))
        links = "".join('<a href="https://www.%s/%s?utm_source=newsletter">%s</a> | ' % (
            dom, rng.choice(VOCAB.content_words), rng.choice(VOCAB.content_words).capitalize()) for _ in range(8))
        foot = ('</td></tr>\n<tr><td class="footer">%s<br>\n%s<br>\n%s GmbH, %d %s Street, %05d %s<br>\n'
                'You receive this e-mail because you subscribed on www.%s. '
                '<a href="https://www.%s/newsletter/unsubscribe">Unsubscribe</a></td></tr>\n</table>\n</body>\n</html>\n'
                % (links, VOCAB.phrase(rng, 8, 20), name, rng.randint(1, 200), rng.choice(VOCAB.content_words).capitalize(),
                   rng.randint(1000, 99999), rng.choice(VOCAB.content_words).capitalize(), dom, dom))
        _TEMPLATES[dom] = (head, foot)
    return _TEMPLATES[dom]


def _spool_chunk(args):
    base, seed, key, metas = args
    rng = rng_for(seed, "spool", key)
    recent = []
    nbytes = 0
    for rel, t, user, kind, size, att in metas:
        data = gen_message(rng, t, user, kind, size, att, recent)
        path = os.path.join(base, rel)
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (t, t))
        nbytes += len(data)
    return len(metas), nbytes


def gen_spool(out, seed, scale):
    base = os.path.join(out, "spool")
    users, folders, metas = spool_plan(seed, scale)
    ndirs = 1
    for u in users:
        os.makedirs(os.path.join(base, u))
        ndirs += 1
        for folder, _ in folders[u]:
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(base, u, folder, sub))
            ndirs += 4
    tasks = [(base, seed, "chunk%d" % (i // SPOOL_CHUNK), metas[i:i + SPOOL_CHUNK])
             for i in range(0, len(metas), SPOOL_CHUNK)]
    files = nbytes = 0
    with pool() as p:
        for n, b in p.imap_unordered(_spool_chunk, tasks):
            files += n
            nbytes += b
    return {"files": files, "dirs": ndirs, "bytes": nbytes, "users": len(users)}


def _list_spool(base):
    out = []
    for root, dirs, files in os.walk(base):
        dirs.sort()
        rel = os.path.relpath(root, base)
        for f in sorted(files):
            out.append(os.path.join(rel, f))
    return out


def spool_day2(out, seed, scale, action):
    """apply / revert / status of the "one day later" mutation of spool/."""
    base = os.path.join(out, "spool")
    journal = os.path.join(out, "spool-day2.json")
    stash = os.path.join(out, ".spool-day2-stash")
    if action == "status":
        print("day2" if os.path.exists(journal) else "day1")
        return
    if action == "revert":
        if not os.path.exists(journal):
            print("spool is already in its day-1 state")
            return
        with open(journal) as f:
            j = json.load(f)
        for rel in j["new"]:
            os.unlink(os.path.join(base, rel))
        for src, dst in reversed(j["folder_moves"]):
            os.rename(os.path.join(base, dst), os.path.join(base, src))
        for src, dst in j["renames"]:
            os.rename(os.path.join(base, dst), os.path.join(base, src))
        for i, rel in enumerate(j["deleted"]):
            os.rename(os.path.join(stash, str(i)), os.path.join(base, rel))
        shutil.rmtree(stash, ignore_errors=True)
        os.unlink(journal)
        print("spool reverted to day 1")
        return
    assert action == "apply"
    if os.path.exists(journal):
        print("spool is already in its day-2 state")
        return
    rng = rng_for(seed, "spool", "day2")
    users, folders, _ = spool_plan(seed, scale)
    allmsgs = _list_spool(base)
    n = len(allmsgs)
    # a few folders moved (renamed) inside their user's directory, e.g. Projects.alpha -> Archive.Projects.alpha
    movable = sorted((u, f) for u in users for f, _ in folders[u] if f in CUSTOM_FOLDERS)
    moves = []
    for u, f in rng.sample(movable, min(len(movable), scaled(5, scale, 1))):
        moves.append((os.path.join(u, f), os.path.join(u, "Archive.%s.%s" % (time.gmtime(T_DAY1).tm_year, f))))
    moved_prefixes = tuple(src + "/" for src, _ in moves)
    candidates = [m for m in allmsgs if not m.startswith(moved_prefixes)]
    k_del = scaled(0.005 * n, 1, 1)
    k_ren = scaled(0.02 * n, 1, 1)
    picked = rng.sample(candidates, min(len(candidates), k_del + k_ren * 2))
    deleted = picked[:k_del]
    renames = [(m, m[:-len(":2,S")] + ":2,RS") for m in picked[k_del:] if m.endswith(":2,S")][:k_ren]
    # new messages: delivered to INBOX/new (80 %) or written to Sent/cur (20 %) during the day
    k_new = scaled(0.01 * n, 1, 1)
    uw = [rng.lognormvariate(0, 1.1) for _ in users]
    metas = []
    for i in range(k_new):
        u = rng.choices(users, weights=uw)[0]
        sent = rng.random() < 0.2
        t = T_DAY1 + rng.randint(0, DAY - 1)
        name = "%d.M%dP%dQ%d.mx%d:2,%s" % (t, rng.randint(0, 999999), rng.randint(1000, 65000),
                                           10_000_000 + i, rng.randint(1, 3), "S" if sent else "")
        rel = "%s/%s/%s/%s" % (u, "Sent" if sent else "INBOX", "cur" if sent else "new", name)
        kind = "sent" if sent else rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])[0]
        att = lognormal_clipped(rng, 24000, 1.0, 6000, 400_000) if rng.random() < 0.02 else 0
        metas.append((rel, t, u, kind, lognormal_clipped(rng, 3200, 0.75, 1024, 40960), att))
    j = {"deleted": deleted, "renames": renames, "folder_moves": moves, "new": [m[0] for m in metas]}
    # journal first: a crash half-way leaves enough to finish by hand; revert checks paths
    os.makedirs(stash, exist_ok=True)
    with open(journal + ".tmp", "w") as f:
        json.dump(j, f)
    os.rename(journal + ".tmp", journal)
    for i, rel in enumerate(deleted):
        os.rename(os.path.join(base, rel), os.path.join(stash, str(i)))
    for src, dst in renames:
        os.rename(os.path.join(base, src), os.path.join(base, dst))
    for src, dst in moves:
        os.rename(os.path.join(base, src), os.path.join(base, dst))
    _spool_chunk((base, seed, "day2-new", metas))
    print("spool day 2: %d new, %d deleted, %d renamed, %d folders moved (of %d messages)"
          % (len(metas), len(deleted), len(renames), len(moves), n))


# ---------------------------------------------------------------------------------------
# www: web sites
# ---------------------------------------------------------------------------------------

PHP_TYPES = ("int", "string", "array", "bool", "float", "?string", "mixed", "self")
JS_FUNCS = ("querySelector", "addEventListener", "fetch", "setTimeout", "JSON.parse", "Object.assign",
            "Array.from", "Promise.all", "encodeURIComponent", "console.warn")
CSS_PROPS = ("margin", "padding", "color", "background", "border", "font-size", "line-height", "display",
             "position", "width", "max-width", "height", "z-index", "opacity", "transition", "flex")
CSS_VALS = ("0", "auto", "1rem", "0.5em", "12px", "100%", "#333", "#fff", "none", "block", "flex",
            "relative", "absolute", "1px solid #ddd", "all .2s ease", "inherit", "transparent", "bold")


def _php(rng, size):
    V = VOCAB
    ns = rng.choice(V.classes)
    cls = rng.choice(V.classes)
    out = ["<?php", "/**", " * %s." % V.phrase(rng, 4, 12), " *", " * @package %s" % ns,
           " * @since %d.%d.%d" % (rng.randint(1, 6), rng.randint(0, 9), rng.randint(0, 20)), " */", "",
           "namespace %s\\%s;" % (ns, rng.choice(V.classes)), ""]
    for _ in range(rng.randint(1, 6)):
        out.append("use %s\\%s;" % (rng.choice(V.classes), rng.choice(V.classes)))
    out += ["", "class %s extends %s" % (cls, rng.choice(V.classes)), "{"]
    for _ in range(rng.randint(1, 6)):
        out.append("    protected $%s = %s;" % (rng.choice(V.idents), rng.choice(("null", "[]", "false", "0", "''"))))
    n = sum(len(x) for x in out)
    while n < size:
        fn, a, b, v, k = (rng.choice(V.idents) for _ in range(5))
        t = rng.choice(PHP_TYPES)
        body = [
            "", "    /**", "     * %s." % V.phrase(rng, 3, 14), "     *",
            "     * @param %s $%s" % (rng.choice(PHP_TYPES), a), "     * @return %s" % t, "     */",
            "    public function %s($%s, $%s = null): %s" % (fn, a, b, t), "    {",
        ]
        for _ in range(rng.randint(1, 5)):
            s = rng.randrange(6)
            if s == 0:
                body += ["        if ($%s === null) {" % a, "            return %s;" % rng.choice(("null", "[]", "false", "$this")), "        }"]
            elif s == 1:
                body.append("        $%s = $this->%s($%s, '%s');" % (v, rng.choice(V.idents), a, rng.choice(V.content_words)))
            elif s == 2:
                body += ["        foreach ($%s as $%s => $%s) {" % (v, k, b),
                         "            $%s[$%s] = %s($%s, %d);" % (a, k, rng.choice(V.idents), b, rng.randint(0, 512)), "        }"]
            elif s == 3:
                body.append("        // %s" % V.phrase(rng, 3, 12))
            elif s == 4:
                body.append("        $this->%s = apply_filters('%s_%s', $%s);" % (rng.choice(V.idents), ns.lower(), fn, v))
            else:
                body += ["        try {", "            $%s = %s::%s($%s);" % (v, rng.choice(V.classes), rng.choice(V.idents), a),
                         "        } catch (\\Exception $e) {", "            throw new %sException($e->getMessage());" % cls, "        }"]
        body += ["        return $%s;" % v, "    }"]
        out += body
        n += sum(len(x) + 1 for x in body)
    out += ["}", ""]
    return "\n".join(out)


def _js(rng, size, minified=False):
    V = VOCAB
    out = ["/*! %s v%d.%d.%d | (c) %s | MIT License */" % (rng.choice(V.classes), rng.randint(1, 4), rng.randint(0, 20),
                                                          rng.randint(0, 9), rng.choice(V.classes)),
           "(function (root, factory) {", "  'use strict';"]
    n = 0
    while n < size:
        fn, a, b, v = (rng.choice(V.idents) for _ in range(4))
        body = ["", "  // %s" % V.phrase(rng, 3, 10), "  function %s(%s, %s) {" % (fn, a, b)]
        for _ in range(rng.randint(1, 5)):
            s = rng.randrange(4)
            if s == 0:
                body.append("    var %s = %s(%s, '%s');" % (v, rng.choice(JS_FUNCS), a, rng.choice(V.content_words)))
            elif s == 1:
                body += ["    if (!%s || %s.length === %d) {" % (a, a, rng.randint(0, 9)), "      return %s;" % b, "    }"]
            elif s == 2:
                body += ["    %s.forEach(function (%s) {" % (a, v), "      %s.%s(%s);" % (b, rng.choice(V.idents), v), "    });"]
            else:
                body.append("    %s.%s = %s.%s || {};" % (b, rng.choice(V.idents), root_or(rng), rng.choice(V.idents)))
        body += ["    return %s;" % v, "  }"]
        out += body
        n += sum(len(x) + 1 for x in body)
    out += ["})(this);", ""]
    if minified:
        return ";".join(x.strip() for x in out if x.strip() and not x.strip().startswith("//")) + "\n"
    return "\n".join(out)


def root_or(rng):
    return rng.choice(("root", "window", "this", "exports", "module"))


def _css(rng, size):
    V = VOCAB
    out = ["/* %s */" % V.phrase(rng, 3, 8)]
    n = 0
    while n < size:
        sel = ", ".join(".%s-%s" % (rng.choice(V.content_words), rng.choice(V.content_words))
                        for _ in range(rng.randint(1, 3)))
        rule = [sel + " {"] + ["  %s: %s;" % (rng.choice(CSS_PROPS), rng.choice(CSS_VALS))
                               for _ in range(rng.randint(2, 8))] + ["}", ""]
        out += rule
        n += sum(len(x) + 1 for x in rule)
    return "\n".join(out)


def source_file(rng, ext, size):
    if ext == "php":
        return _php(rng, size)
    if ext == "js":
        return _js(rng, size)
    if ext == "min.js":
        return _js(rng, size, minified=True)
    if ext == "css":
        return _css(rng, size)
    if ext == "json":
        return json.dumps({VOCAB.idents[i % 3000]: rng.choice(VOCAB.content_words) for i in range(rng.randrange(size // 20 + 1))}, indent=2)
    return VOCAB.text(rng, max(10, int(size / VOCAB.avg_token)))  # txt / md / html-ish


SRC_EXTS = (("php", 0.55), ("js", 0.15), ("min.js", 0.04), ("css", 0.12), ("json", 0.04), ("txt", 0.10))


def _tree_plan(rng, prefix, nfiles, top_dirs):
    """Paths of `nfiles` source files in a plausible nested tree under `prefix`."""
    V = VOCAB
    dirs = []
    for td in top_dirs:
        dirs.append(td)
        for _ in range(rng.randint(2, 8)):
            d = td + "/" + rng.choice(V.content_words)
            dirs.append(d)
            for _ in range(rng.randint(0, 3)):
                dirs.append(d + "/" + rng.choice(V.content_words))
    exts = [e for e, _ in SRC_EXTS]
    ew = [w for _, w in SRC_EXTS]
    files, seen = [], set()
    while len(files) < nfiles:
        ext = rng.choices(exts, weights=ew)[0]
        base = rng.choice(V.idents) if ext != "php" else rng.choice(("class-", "", "")) + rng.choice(V.idents).lower()
        p = "%s/%s/%s.%s" % (prefix, rng.choice(dirs), base, ext)
        if p not in seen:
            seen.add(p)
            files.append((p, ext, lognormal_clipped(rng, 5200, 1.0, 200, 200_000)))
    return files


def _www_text_task(args):
    """Generate one source file once and write it to every destination (with per-site edits)."""
    seed, key, ext, size, dests = args
    rng = rng_for(seed, "www", key)
    text = source_file(rng, ext, size)
    n = 0
    for path, edit_key, t in dests:
        data = text
        if edit_key:
            er = rng_for(seed, "www-edit", edit_key)
            lines = data.split("\n")
            at = er.randrange(len(lines) + 1)
            lines.insert(at, ("// " if ext != "css" else "/* ") + "local patch %s: %s" % (edit_key, VOCAB.phrase(er, 3, 9))
                         + (" */" if ext == "css" else ""))
            data = "\n".join(lines)
        b = data.encode()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b)
        os.utime(path, (t, t))
        n += len(b)
    return len(dests), n


MAGIC = {"jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "png": b"\x89PNG\r\n\x1a\n", "gif": b"GIF89a",
         "zip": b"PK\x03\x04", "gz": b"\x1f\x8b\x08\x00", "mp4": b"\x00\x00\x00\x20ftypisom", "pdf": b"%PDF-1.7\n"}


def _random_file_task(args):
    seed, key, path, size, ext, t = args
    rng = rng_for(seed, "rand", key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        head = MAGIC.get(ext, b"")[:size]
        f.write(head)
        left = size - len(head)
        while left > 0:
            n = min(left, 4 << 20)
            f.write(rng.randbytes(n))
            left -= n
    os.utime(path, (t, t))
    return 1, size


def _log_task(args):
    seed, key, path, size, t = args
    rng = rng_for(seed, "log", key)
    V = VOCAB
    pages = ["/" + "/".join(rng.choice(V.content_words) for _ in range(rng.randint(1, 3))) for _ in range(300)]
    agents = ['"Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"',
              '"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"',
              '"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"',
              '"Googlebot/2.1 (+http://www.google.com/bot.html)"', '"curl/7.88.1"']
    ts = t - 30 * DAY
    chunks, n = [], 0
    while n < size:
        ts += rng.randint(0, 40)
        line = '%d.%d.%d.%d - - [%s] "GET %s HTTP/1.1" %d %d "-" %s\n' % (
            rng.randint(11, 223), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254),
            time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(ts)), rng.choice(pages),
            rng.choice((200, 200, 200, 200, 304, 404, 301)), rng.randint(200, 90000), rng.choice(agents))
        chunks.append(line)
        n += len(line)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(chunks))
    os.utime(path, (t, t))
    return 1, n


def gen_www(out, seed, scale):
    base = os.path.join(out, "www")
    rng = rng_for(seed, "www", "plan")
    n_sites = 10
    sites = ["site%02d.%s" % (i + 1, VOCAB.domains[50 + i]) for i in range(n_sites)]
    cms_sites = sites[:7]          # 5 on release 6.4.2, 2 still on 6.3.1
    app_sites = sites[7:]
    tasks_text, tasks_rand, tasks_log = [], [], []

    def mt():
        return rng.randint(T_START, T_DAY1 - DAY)

    # The CMS release: one generated tree, copied into 7 sites; 6.3.1 differs in 8 % of files;
    # every site has ~0.5 % of files locally patched (a comment line inserted).
    cms = _tree_plan(rng, "public_html", scaled(3100, scale, 20),
                     ("core", "core/lib", "admin", "admin/includes", "vendor", "assets/js", "assets/css", "includes"))
    old_release_changed = set(rng.sample(range(len(cms)), max(1, len(cms) * 8 // 100)))
    for i, (rel, ext, size) in enumerate(cms):
        t_new, t_old = mt(), mt()
        for ver in ("new", "old"):
            dests = []
            for si, s in enumerate(cms_sites):
                if (si >= 5) != (ver == "old"):
                    continue
                edit = "%s-%d" % (s, i) if rng.random() < 0.005 else ""
                dests.append((os.path.join(base, s, rel), edit, t_old if ver == "old" else t_new))
            key = "cms-%d-%s" % (i, "old" if ver == "old" and i in old_release_changed else "new")
            if dests:
                tasks_text.append((seed, key, ext, size, dests))
    for si, s in enumerate(cms_sites):
        tasks_text.append((seed, "config-" + s, "php", 3000, [(os.path.join(base, s, "public_html/config.php"), "", mt())]))
        for rel, ext, size in _tree_plan(rng, "public_html/content/themes/" + rng.choice(VOCAB.content_words),
                                         scaled(150, scale, 3), ("templates", "css", "js", "parts")):
            tasks_text.append((seed, "theme-%s-%s" % (s, rel), ext, size, [(os.path.join(base, s, rel), "", mt())]))
        for _ in range(rng.randint(2, 4)):
            plug = "public_html/content/plugins/" + rng.choice(VOCAB.content_words)
            for rel, ext, size in _tree_plan(rng, plug, scaled(80, scale, 2), ("src", "assets", "lang")):
                tasks_text.append((seed, "plug-%s-%s" % (s, rel), ext, size, [(os.path.join(base, s, rel), "", mt())]))
    # Custom application sites: unique app code plus one shared "vendor" package set.
    vendor = _tree_plan(rng, "vendor", scaled(1200, scale, 10), ("symfony", "guzzle", "monolog", "twig", "psr"))
    for i, (rel, ext, size) in enumerate(vendor):
        t = mt()
        tasks_text.append((seed, "vendor-%d" % i, ext, size, [(os.path.join(base, s, rel), "", t) for s in app_sites]))
    for s in app_sites:
        for rel, ext, size in _tree_plan(rng, "src", scaled(1000, scale, 10),
                                         ("Controller", "Entity", "Repository", "Service", "templates", "public/js")):
            tasks_text.append((seed, "app-%s-%s" % (s, rel), ext, size, [(os.path.join(base, s, rel), "", mt())]))
    # Uploads: images and archives (incompressible), access/error logs (very compressible).
    for s in sites:
        up = "public_html/content/uploads" if s in cms_sites else "public/uploads"
        for j in range(scaled(360, scale, 3)):
            ext = rng.choice(("jpg", "jpg", "jpg", "png", "png", "gif", "pdf"))
            rel = "%s/%d/%02d/%s-%d.%s" % (up, rng.randint(2019, 2023), rng.randint(1, 12), rng.choice(VOCAB.content_words), j, ext)
            tasks_rand.append((seed, "up-%s-%d" % (s, j), os.path.join(base, s, rel),
                               lognormal_clipped(rng, 26000, 1.0, 2000, 4_000_000), ext, mt()))
        for j in range(rng.randint(1, 4)):
            ext = rng.choice(("zip", "gz"))
            rel = "%s/downloads/%s-%d.%s" % (up, rng.choice(VOCAB.content_words), j, "zip" if ext == "zip" else "tar.gz")
            tasks_rand.append((seed, "arch-%s-%d" % (s, j), os.path.join(base, s, rel),
                               int(lognormal_clipped(rng, 900_000, 0.8, 100_000, 8_000_000) * min(1, scale * 5)), ext, mt()))
        for name, mb in (("access.log", 1.6), ("error.log", 0.25)):
            tasks_log.append((seed, "%s-%s" % (s, name), os.path.join(base, s, "logs", name), int(mb * 1e6 * scale), T_DAY1 - 7200))
    # A few 50-100 MB files (site backups, a video).
    for s, rel, mb, ext in ((sites[1], "backups/full-2023-12-01.tar.gz", 90, "gz"),
                            (sites[4], "public_html/content/uploads/2023/11/promo-video.mp4", 70, "mp4"),
                            (sites[8], "backups/db-2023-11-30.sql.gz", 52, "gz")):
        tasks_rand.append((seed, "bigfile-" + rel, os.path.join(base, s, rel), int(mb * 1e6 * scale), ext, T_DAY1 - 3 * DAY))
    # Two plans could (rarely) pick the same path; keep the first so no file is written twice.
    claimed = set()

    def claim(path):
        if path in claimed:
            return False
        claimed.add(path)
        return True

    tasks_rand = [t for t in tasks_rand if claim(t[2])]
    tasks_log = [t for t in tasks_log if claim(t[2])]
    tasks_text = [t[:4] + ([d for d in t[4] if claim(d[0])],) for t in tasks_text]
    tasks_text = [t for t in tasks_text if t[4]]
    files = nbytes = 0
    with pool() as p:
        for fn, tasks in ((_random_file_task, sorted(tasks_rand, key=lambda x: -x[3])),
                          (_www_text_task, tasks_text), (_log_task, tasks_log)):
            for n, b in p.imap_unordered(fn, tasks, chunksize=16):
                files += n
                nbytes += b
    return {"files": files, "bytes": nbytes, "sites": n_sites}


# ---------------------------------------------------------------------------------------
# dump: mysqldump-style SQL, day 1 and day 2
# ---------------------------------------------------------------------------------------

STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled", "refunded")
CURRENCIES = ("EUR", "EUR", "EUR", "USD", "GBP", "CHF")
EVENT_TYPES = ("login", "logout", "view_product", "add_to_cart", "checkout", "password_reset", "search", "api_call")
BLOCK = 1000  # rows generated per RNG stream


def _ts(t):
    return "'" + time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + "'"


def _q(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _created(tbl_rows, i, rng, base=T_START):
    return base + int((T_DAY1 - base) * i / (tbl_rows + 1)) + rng.randint(0, 600)


def row_customers(rng, i, n):
    V = VOCAB
    fn, ln = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    c = _created(n, i, rng)
    return [str(i), _q(fn), _q(ln), _q("%s.%s%d@%s" % (fn.lower(), ln.lower(), rng.randint(1, 99), rng.choice(V.domains))),
            _q("+%d %d %07d" % (rng.randint(1, 49), rng.randint(100, 999), rng.randint(0, 9999999))),
            _q("$2y$10$" + base64.b64encode(rng.randbytes(40)).decode()[:53]),
            _q("%d %s Street" % (rng.randint(1, 300), rng.choice(V.content_words).capitalize())),
            _q(rng.choice(V.content_words).capitalize()), _q(rng.choice(("DE", "FR", "GB", "US", "NL", "CH", "AT"))),
            _ts(c), _ts(c), "1" if rng.random() < 0.9 else "0"]


def row_products(rng, i, n):
    V = VOCAB
    return [str(i), _q("SKU-%06d" % i), _q(V.phrase(rng, 2, 4)), _q(V.text(rng, rng.randint(8, 30), per_line=1000)),
            "%d.%02d" % (rng.randint(1, 900), rng.randint(0, 99)), str(rng.randint(0, 500)),
            _ts(_created(n, i, rng)), _ts(_created(n, i, rng))]


def row_orders(rng, i, n, ncust=1):
    c = _created(n, i, rng)
    st = rng.choice(STATUSES[2:]) if i < n * 0.98 else rng.choice(STATUSES[:3])
    return [str(i), str(rng.randint(1, max(1, ncust))), "%d.%02d" % (rng.randint(5, 2000), rng.randint(0, 99)),
            _q(rng.choice(CURRENCIES)), _q(st), _q("%d %s Road, %05d" % (rng.randint(1, 999), rng.choice(VOCAB.content_words).capitalize(), rng.randint(1000, 99999))),
            _ts(c), _ts(c + rng.randint(0, 5 * DAY))]


def row_order_items(rng, i, n, norders=1, nprod=1):
    return [str(i), str(max(1, i * norders // max(1, n))), str(rng.randint(1, max(1, nprod))), str(rng.randint(1, 5)),
            "%d.%02d" % (rng.randint(1, 500), rng.randint(0, 99))]


def row_events(rng, i, n, ncust=1):
    c = _created(n, i, rng, base=T_DAY1 - 365 * DAY)
    et = rng.choice(EVENT_TYPES)
    return [str(i), str(rng.randint(1, max(1, ncust))), _q(et),
            _q("%d.%d.%d.%d" % (rng.randint(11, 223), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))),
            _q(rng.choice(("Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
                           "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1)", "okhttp/4.11.0", "python-requests/2.31"))),
            _q('{"session":"%032x","ref":"%s","ms":%d}' % (rng.getrandbits(128), rng.choice(VOCAB.content_words), rng.randint(1, 3000))),
            _ts(c)]


def row_documents(rng, i, n, ncust=1):
    blob = rng.randbytes(lognormal_clipped(rng, 700, 0.6, 64, 4096))
    return [str(i), str(rng.randint(1, max(1, ncust))), _q("%s-%d.pdf" % (rng.choice(VOCAB.content_words), i)),
            _q("application/pdf"), "%d" % (len(blob) * 97), _q("%064x" % rng.getrandbits(256)), "0x" + blob.hex(),
            _ts(_created(n, i, rng))]


# name, full-scale rows, row function, CREATE TABLE columns, day-2 fraction inserted, day-2 update plan
TABLES = (
    ("customers", 290_000, row_customers,
     ("`id` int NOT NULL", "`first_name` varchar(64)", "`last_name` varchar(64)", "`email` varchar(191)",
      "`phone` varchar(32)", "`password_hash` char(60)", "`street` varchar(128)", "`city` varchar(64)",
      "`country` char(2)", "`created_at` datetime", "`updated_at` datetime", "`active` tinyint(1)",
      "PRIMARY KEY (`id`)", "UNIQUE KEY `email` (`email`)"),
     0.008, ("clusters", 3, 0.001)),        # 3 batches of 0.1 % consecutive customers updated
    ("products", 23_000, row_products,
     ("`id` int NOT NULL", "`sku` varchar(32)", "`name` varchar(255)", "`description` text",
      "`price` decimal(10,2)", "`stock` int", "`created_at` datetime", "`updated_at` datetime", "PRIMARY KEY (`id`)"),
     0.002, ("scattered", 0.004)),          # stock of 0.4 % of products, anywhere
    ("orders", 520_000, row_orders,
     ("`id` int NOT NULL", "`customer_id` int NOT NULL", "`total` decimal(10,2)", "`currency` char(3)",
      "`status` varchar(16)", "`shipping_address` varchar(255)", "`created_at` datetime", "`updated_at` datetime",
      "PRIMARY KEY (`id`)", "KEY `customer_id` (`customer_id`)"),
     0.01, ("tail", 0.02, 0.5)),            # half of the newest 2 % of orders change status
    ("order_items", 1_150_000, row_order_items,
     ("`id` int NOT NULL", "`order_id` int NOT NULL", "`product_id` int NOT NULL", "`qty` int",
      "`unit_price` decimal(10,2)", "PRIMARY KEY (`id`)"),
     0.01, None),
    ("events", 520_000, row_events,
     ("`id` bigint NOT NULL", "`customer_id` int", "`type` varchar(32)", "`ip` varchar(45)",
      "`user_agent` varchar(255)", "`payload` json", "`created_at` datetime", "PRIMARY KEY (`id`)"),
     0.012, None),
    ("documents", 30_000, row_documents,
     ("`id` int NOT NULL", "`customer_id` int", "`filename` varchar(255)", "`mime` varchar(64)", "`size` int",
      "`sha256` char(64)", "`thumbnail` blob", "`created_at` datetime", "PRIMARY KEY (`id`)"),
     0.005, None),
)


def _row(tname, fn, rng, i, n, counts):
    if tname in ("orders", "events", "documents"):
        return fn(rng, i, n, counts["customers"])
    if tname == "order_items":
        return fn(rng, i, n, counts["orders"], counts["products"])
    return fn(rng, i, n)


def _update(tname, fields, urng):
    """Day-2 modification of one row (what an application would UPDATE)."""
    t2 = T_DAY1 + urng.randint(0, DAY - 1)
    if tname == "customers":
        fields[10] = _ts(t2)
        fields[11] = "1"
        if urng.random() < 0.5:
            fields[4] = _q("+%d %d %07d" % (urng.randint(1, 49), urng.randint(100, 999), urng.randint(0, 9999999)))
    elif tname == "products":
        fields[5] = str(urng.randint(0, 500))
        fields[7] = _ts(t2)
    elif tname == "orders":
        fields[4] = _q(urng.choice(("shipped", "delivered", "paid")))
        fields[7] = _ts(t2)


def _dump_table_task(args):
    out_dir, seed, scale, ti = args
    tname, nrows, fn, create, ins_frac, upd = TABLES[ti]
    counts = {t[0]: scaled(t[1], scale, 10) for t in TABLES}
    n = counts[tname]
    # rows changed on day 2
    prng = rng_for(seed, "dump", tname, "day2plan")
    updated = set()
    if upd and upd[0] == "clusters":
        for _ in range(max(1, round(upd[1] * min(1, scale * 5)))):
            length = max(1, int(n * upd[2]))
            start = prng.randint(1, max(1, n - length))
            updated.update(range(start, start + length))
    elif upd and upd[0] == "scattered":
        updated.update(prng.sample(range(1, n + 1), max(1, int(n * upd[1]))))
    elif upd and upd[0] == "tail":
        lo = int(n * (1 - upd[1]))
        updated.update(i for i in range(lo, n + 1) if prng.random() < upd[2])
    n_new = max(1, int(n * ins_frac))
    per_stmt = max(1, 48_000 // len(",".join(_row(tname, fn, rng_for(seed, "probe"), 1, n, counts))))
    prefix = "INSERT INTO `%s` VALUES " % tname
    head = ("\n--\n-- Table structure for table `%s`\n--\n\nDROP TABLE IF EXISTS `%s`;\n"
            "/*!40101 SET @saved_cs_client     = @@character_set_client */;\n/*!40101 SET character_set_client = utf8mb4 */;\n"
            "CREATE TABLE `%s` (\n  %s\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;\n"
            "/*!40101 SET character_set_client = @saved_cs_client */;\n\n--\n-- Dumping data for table `%s`\n--\n\n"
            "LOCK TABLES `%s` WRITE;\n/*!40000 ALTER TABLE `%s` DISABLE KEYS */;\n"
            % (tname, tname, tname, ",\n  ".join(create), tname, tname, tname))
    tail = "/*!40000 ALTER TABLE `%s` ENABLE KEYS */;\nUNLOCK TABLES;\n" % tname
    paths = [os.path.join(out_dir, "%02d-%s.day%d" % (ti, tname, d)) for d in (1, 2)]
    with open(paths[0], "w") as f1, open(paths[1], "w") as f2:
        f1.write(head)
        f2.write(head)
        stmt1, stmt2 = [], []

        def flush(final=False):
            if stmt1 and (final or len(stmt1) >= per_stmt):
                f1.write(prefix + ",".join(stmt1) + ";\n")
                stmt1.clear()
            if stmt2 and (final or len(stmt2) >= per_stmt):
                f2.write(prefix + ",".join(stmt2) + ";\n")
                stmt2.clear()

        for b0 in range(1, n + n_new + 1, BLOCK):
            rng = rng_for(seed, "dump", tname, b0)
            for i in range(b0, min(b0 + BLOCK, n + n_new + 1)):
                if i <= n:
                    fields = _row(tname, fn, rng, i, n, counts)
                    r1 = "(" + ",".join(fields) + ")"
                    stmt1.append(r1)
                    if i in updated:
                        _update(tname, fields, rng_for(seed, "dump", tname, "upd", i))
                        stmt2.append("(" + ",".join(fields) + ")")
                    else:
                        stmt2.append(r1)
                else:  # inserted on day 2: created "today"
                    fields = _row(tname, fn, rng, i, n, counts)
                    for k, v in enumerate(fields):
                        if v.startswith("'20") and len(v) == 21:
                            fields[k] = _ts(T_DAY1 + rng.randint(0, DAY - 1))
                    stmt2.append("(" + ",".join(fields) + ")")
                flush()
        flush(final=True)
        f1.write(tail)
        f2.write(tail)
    return tname, n, len(updated), n_new


def gen_dump(out, seed, scale):
    base = os.path.join(out, "dump")
    parts = os.path.join(base, ".parts")
    os.makedirs(parts)
    with pool() as p:
        stats = p.map(_dump_table_task, [(parts, seed, scale, ti) for ti in range(len(TABLES))], chunksize=1)
    header = ("-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB, for debian-linux-gnu (x86_64)\n--\n"
              "-- Host: localhost    Database: shop\n"
              "-- ------------------------------------------------------\n-- Server version\t10.11.6-MariaDB-0+deb12u1\n\n"
              "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n/*!40101 SET NAMES utf8mb4 */;\n"
              "/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;\n/*!40103 SET TIME_ZONE='+00:00' */;\n"
              "/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n"
              "/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;\n"
              "/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n")
    res = {}
    for d in (1, 2):
        path = os.path.join(base, "day%d.sql" % d)
        with open(path, "wb") as f:
            f.write(header.encode())
            for ti, (tname, *_rest) in enumerate(TABLES):
                pp = os.path.join(parts, "%02d-%s.day%d" % (ti, tname, d))
                with open(pp, "rb") as src:
                    shutil.copyfileobj(src, f, 8 << 20)
                os.unlink(pp)
            f.write(("/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\n-- Dump completed on %s\n"
                     % time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(T_DAY1 + (d - 1) * DAY + 1))).encode())
        t = T_DAY1 + (d - 1) * DAY + 60
        os.utime(path, (t, t))
        res["day%d_bytes" % d] = os.path.getsize(path)
    os.rmdir(parts)
    rows = sum(s[1] for s in stats)
    res.update({"rows": rows, "rows_updated_day2": sum(s[2] for s in stats), "rows_inserted_day2": sum(s[3] for s in stats),
                "tables": {s[0]: {"rows": s[1], "updated": s[2], "inserted": s[3]} for s in stats}})
    res["changed_fraction"] = round((res["rows_updated_day2"] + res["rows_inserted_day2"]) / rows, 4)
    return res


# ---------------------------------------------------------------------------------------
# big: one large pseudo-random file
# ---------------------------------------------------------------------------------------

BIG_BLOCK = 16 << 20


def _big_block(args):
    seed, idx, n = args
    return rng_for(seed, "big", idx).randbytes(n)


def gen_big(out, seed, scale, big_gib):
    base = os.path.join(out, "big")
    os.makedirs(base)
    size = int(big_gib * scale * (1 << 30))
    path = os.path.join(base, "big.bin")
    blocks = [(seed, i, min(BIG_BLOCK, size - off)) for i, off in enumerate(range(0, size, BIG_BLOCK))]
    with open(path, "wb") as f, pool() as p:
        for data in p.imap(_big_block, blocks, chunksize=1):
            f.write(data)
    os.utime(path, (T_DAY1, T_DAY1))
    return {"files": 1, "bytes": size}


# ---------------------------------------------------------------------------------------

def load_manifest(out):
    try:
        with open(os.path.join(out, "manifest.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"shapes": {}}


def save_manifest(out, m):
    tmp = os.path.join(out, "manifest.json.tmp")
    with open(tmp, "w") as f:
        json.dump(m, f, indent=2, sort_keys=True)
    os.rename(tmp, os.path.join(out, "manifest.json"))


def main():
    global VOCAB
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="?", default=os.environ.get("ARC_BENCH_DIR", "/var/tmp/arc-bench"))
    ap.add_argument("--shapes", default="spool,www,dump", help="comma list of %s (default: spool,www,dump)" % ",".join(ALL_SHAPES))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("ARC_BENCH_SEED", DEFAULT_SEED)))
    ap.add_argument("--scale", type=float, default=float(os.environ.get("ARC_BENCH_SCALE", 1.0)))
    ap.add_argument("--big-gib", type=float, default=float(os.environ.get("ARC_BENCH_BIG_GIB", 10)),
                    help="size of big/big.bin in GiB before --scale (default $ARC_BENCH_BIG_GIB or 10)")
    ap.add_argument("--force", action="store_true", help="regenerate even if present with the same parameters")
    ap.add_argument("--spool-day2", choices=("apply", "revert", "status"), help="mutate spool/ to day 2 or back")
    a = ap.parse_args()
    out = os.path.abspath(a.dir)
    os.makedirs(out, exist_ok=True)
    man = load_manifest(out)
    VOCAB = Vocab(a.seed)

    if a.spool_day2:
        sp = man["shapes"].get("spool")
        if not sp or not sp.get("complete"):
            sys.exit("spool/ has not been generated in %s" % out)
        spool_day2(out, sp["seed"], sp["scale"], a.spool_day2)
        return

    shapes = [s for s in a.shapes.replace(" ", ",").split(",") if s]
    for s in shapes:
        if s not in ALL_SHAPES:
            sys.exit("unknown shape %r (known: %s)" % (s, ", ".join(ALL_SHAPES)))
    for s in shapes:
        params = {"seed": a.seed, "scale": a.scale, "version": GEN_VERSION}
        if s == "big":
            params["big_gib"] = a.big_gib
        old = man["shapes"].get(s, {})
        if not a.force and old.get("complete") and all(old.get(k) == v for k, v in params.items()):
            print("%-6s present (seed %s, scale %s): skipped" % (s, a.seed, a.scale))
            continue
        if s == "spool" and os.path.exists(os.path.join(out, "spool-day2.json")):
            spool_day2(out, old.get("seed", a.seed), old.get("scale", a.scale), "revert")
        target = os.path.join(out, s)
        if os.path.exists(target):
            subprocess.run(["rm", "-rf", target], check=True)  # much faster than shutil.rmtree
        man["shapes"][s] = dict(params, complete=False)
        save_manifest(out, man)
        t0 = time.time()
        if s == "spool":
            stats = gen_spool(out, a.seed, a.scale)
        elif s == "www":
            stats = gen_www(out, a.seed, a.scale)
        elif s == "dump":
            stats = gen_dump(out, a.seed, a.scale)
        else:
            stats = gen_big(out, a.seed, a.scale, a.big_gib)
        dt = time.time() - t0
        man["shapes"][s] = dict(params, complete=True, stats=stats, gen_seconds=round(dt, 1))
        save_manifest(out, man)
        print("%-6s generated in %.1f s: %s" % (s, dt, json.dumps(stats, sort_keys=True)[:300]))


if __name__ == "__main__":
    main()
