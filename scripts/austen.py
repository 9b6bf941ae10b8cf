#!/usr/bin/env python3
"""Extract Jane Austen's six novels from Debian's r-cran-janeaustenr without R.

The package stores its data as an R "lazy-load database": Rdata.rdx (a gzip'd R-serialized index
naming each variable and its [offset, length] in Rdata.rdb) and Rdata.rdb (one blob per variable:
a 4-byte big-endian uncompressed length followed by a zlib stream of an R-serialized object).
R's serialization (format "X", XDR big-endian) is a tree of SEXPs, each introduced by a 32-bit
flags word: type in the low byte, 0x100 = object, 0x200 = has attributes, 0x400 = has tag.
This reader handles only what the index and the novels use: NULL, symbols, strings, integer and
real vectors, generic vectors (lists), pairlists (attributes) and back-references.

usage: austen.py PKGROOT OUTDIR   (PKGROOT: where the .deb was unpacked with dpkg-deb -x)
"""
import gzip
import os
import struct
import sys
import zlib

NILSXP, SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP = 0, 1, 2, 9, 10, 13, 14, 16, 19
NILVALUE, REF, ATTRLIST = 254, 255, 239
ENVIRONMENT_MARKERS = {253, 252, 251, 250, 242, 241}  # global/base/empty env, unbound, missing
HAS_ATTR, HAS_TAG = 0x200, 0x400


class Reader:
    def __init__(self, data):
        if data[:2] != b"X\n":
            raise ValueError("not an XDR R serialization (header %r)" % data[:2])
        self.data, self.pos, self.symbols = data, 2, []
        version = self.int()
        self.int()  # R version that wrote it
        self.int()  # oldest R version that can read it
        if version == 3:
            name_length = self.int()  # then the native encoding name, skipped
            self.pos += name_length

    def int(self):
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def ints(self, count, code):
        width = struct.calcsize(">" + code)
        values = struct.unpack_from(">%d%s" % (count, code), self.data, self.pos)
        self.pos += width * count
        return list(values)

    def read(self):
        flags = self.int()
        kind = flags & 0xFF
        if kind == NILVALUE or kind in ENVIRONMENT_MARKERS:
            return None
        if kind == REF:
            return self.symbols[(flags >> 8) - 1]
        if kind == SYMSXP:
            name = self.read()
            self.symbols.append(name)
            return name
        if kind == CHARSXP:
            length = self.int()
            if length < 0:
                return None  # NA_character_
            text = self.data[self.pos:self.pos + length].decode("utf-8", "replace")
            self.pos += length
            return text
        if kind in (LISTSXP, ATTRLIST):
            return self.pairlist(flags)
        if kind in (LGLSXP, INTSXP):
            value = self.ints(self.int(), "i")
        elif kind == REALSXP:
            value = self.ints(self.int(), "d")
        elif kind in (STRSXP, VECSXP):
            value = [self.read() for _ in range(self.int())]
        else:
            raise ValueError("unsupported SEXP type %d at byte %d" % (kind, self.pos - 4))
        if flags & HAS_ATTR:
            attributes = self.read()
            if kind == VECSXP and isinstance(attributes, dict) and "names" in attributes:
                return dict(zip(attributes["names"], value))
        return value

    def pairlist(self, flags):
        """A pairlist is a chain of (attributes?, tag?, value) cells ending in NILVALUE."""
        cells = {}
        while True:
            if flags & HAS_ATTR:
                self.read()
            tag = self.read() if flags & HAS_TAG else len(cells)
            cells[tag] = self.read()
            flags = self.int()
            if flags & 0xFF == NILVALUE:
                return cells


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    root, outdir = sys.argv[1], sys.argv[2]
    base = os.path.join(root, "usr/lib/R/site-library/janeaustenr/data/Rdata")
    with open(base + ".rdx", "rb") as fh:
        index = Reader(gzip.decompress(fh.read())).read()
    with open(base + ".rdb", "rb") as fh:
        database = fh.read()
    os.makedirs(outdir, exist_ok=True)
    for name, (offset, length) in index["variables"].items():
        blob = database[int(offset):int(offset) + int(length)]
        value = Reader(zlib.decompress(blob[4:])).read()
        if not (isinstance(value, list) and all(v is None or isinstance(v, str) for v in value)):
            continue  # the package also carries a data frame (austen_books); we want the novels
        with open(os.path.join(outdir, name + ".txt"), "w", encoding="utf-8") as out:
            out.write("\n".join(v or "" for v in value) + "\n")
        print("%s: %d lines" % (name, len(value)))


if __name__ == "__main__":
    main()
