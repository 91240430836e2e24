#!/usr/bin/env python3
"""Reads a PNG (8-bit RGB or RGBA, not interlaced, as Chromium writes screenshots) and prints, as JSON, its
size, the share of pixels that are not near white, and how many pixels are near each colour asked for
(#rrggbb arguments). Pure Python: the tests must not need an imaging library."""
import json, struct, sys, zlib

path, wanted = sys.argv[1], sys.argv[2:]
data = open(path, "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, chunks = 8, {}
idat = b""
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
assert depth == 8 and colour in (2, 6) and interlace == 0, "unsupported PNG"
bpp = 3 if colour == 2 else 4
raw = zlib.decompress(idat)
stride = width * bpp
rows, prev, at = [], bytearray(stride), 0
for _ in range(height):
    f = raw[at]
    line = bytearray(raw[at + 1:at + 1 + stride])
    at += 1 + stride
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if f == 1:
            line[i] = (line[i] + a) & 255
        elif f == 2:
            line[i] = (line[i] + b) & 255
        elif f == 3:
            line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(line)
    prev = line
targets = [tuple(int(w.lstrip("#")[k:k + 2], 16) for k in (0, 2, 4)) for w in wanted]
counts = [0] * len(targets)
ink = 0
for line in rows:
    for x in range(0, stride, bpp):
        r, g, b = line[x], line[x + 1], line[x + 2]
        if r < 235 or g < 235 or b < 235:
            ink += 1
        for k, (tr, tg, tb) in enumerate(targets):
            if abs(r - tr) < 12 and abs(g - tg) < 12 and abs(b - tb) < 12:
                counts[k] += 1
print(json.dumps({"width": width, "height": height, "ink": ink / (width * height),
                  "colours": dict(zip(wanted, counts))}))
