#!/usr/bin/env python3
"""Symbol versions of a GPU bundle against an older glibc (scripts/gpu_bundle.sh, docs/gpu.md).

The bundle is built on Debian 12 (glibc 2.36) and must also run on glibc 2.35 (Ubuntu 22.04, which CUDA 13
supports). Among everything the bundle ships, only arc4random and arc4random_buf need a glibc newer than 2.35:
Debian 12's libstdc++ (std::random_device) and libevent (under Open MPI) bind them to GLIBC_2.36. So the bundle
carries its own implementation of those (scripts/glibc_compat/arc4random.c, preloaded by scripts/gpu_check.sh on
an older glibc) and marks the objects' requirement of the newer version weak: the dynamic loader then accepts a
libc without GLIBC_2.36 (a weak version reference that is missing is not an error) and binds the symbols to the
preloaded ones, which carry no version. Any other symbol needing a newer glibc fails the bundle build.

  glibc_compat.py check  [--max 2.35] [--library libc.so.6] [--prefix GLIBC_] [--provided S,...] FILE...
      lists, per file, the symbols bound to a version newer than --max of --library; exit 1 if any is not
      --provided (default: arc4random, arc4random_buf, arc4random_uniform), 0 otherwise.
  glibc_compat.py weaken [same options] FILE...
      check, then mark each file's requirements of those newer versions weak (in place). Refuses (exit 1,
      file unchanged) where a symbol under such a version is not --provided.

Reads symbol versions with objdump -T; edits only the vna_flags of the ELF's version-needed entries
(SHT_GNU_verneed), so nothing moves. 64-bit little-endian ELF only (the bundle is x86-64).
"""
import argparse
import re
import struct
import subprocess
import sys

SHT_GNU_VERNEED = 0x6FFFFFFE
VER_FLG_WEAK = 0x2
DEFAULT_PROVIDED = "arc4random,arc4random_buf,arc4random_uniform"


def version_key(text):
    return tuple(int(part) for part in text.split("."))


def newer_symbols(path, prefix, maximum):
    """{version: [symbols]} of the undefined symbols bound to prefix+version > maximum, from objdump -T."""
    try:
        listing = subprocess.run(["objdump", "-T", path], capture_output=True, text=True, check=True).stdout
    except subprocess.CalledProcessError:
        return None  # not an ELF object objdump understands: nothing to check
    found = {}
    pattern = re.compile(r"\(?" + re.escape(prefix) + r"([0-9.]+)\)?\s+(\S+)\s*$")
    for line in listing.splitlines():
        if "*UND*" not in line:
            continue
        match = pattern.search(line)
        if match and version_key(match.group(1)) > version_key(maximum):
            found.setdefault(match.group(1), []).append(match.group(2))
    return found


def weaken(path, library, prefix, maximum):
    """Sets VER_FLG_WEAK on path's requirements of library's versions prefix+X with X > maximum."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit(f"glibc_compat: {path} is not a 64-bit little-endian ELF object")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    changed = []
    for name, kind, flags, addr, offset, size, link, info, align, entsize in sections:
        if kind != SHT_GNU_VERNEED:
            continue
        strings = sections[link][4]

        def string(at):
            end = data.index(b"\0", strings + at)
            return data[strings + at:end].decode()

        entry = offset
        for _ in range(info):  # sh_info: the number of Verneed entries
            _, count, file_name, aux, next_entry = struct.unpack_from("<HHIII", data, entry)
            at = entry + aux
            for _ in range(count):
                _, vna_flags, _, vna_name, vna_next = struct.unpack_from("<IHHII", data, at)
                version = string(vna_name)
                if (string(file_name) == library and version.startswith(prefix)
                        and re.fullmatch(r"[0-9.]+", version[len(prefix):])
                        and version_key(version[len(prefix):]) > version_key(maximum)):
                    struct.pack_into("<H", data, at + 4, vna_flags | VER_FLG_WEAK)
                    changed.append(version)
                at += vna_next
            entry += next_entry
    if changed:
        with open(path, "wb") as f:
            f.write(data)
    return changed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["check", "weaken"])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--max", default="2.35", help="the oldest glibc to run on (default 2.35)")
    parser.add_argument("--library", default="libc.so.6")
    parser.add_argument("--prefix", default="GLIBC_")
    parser.add_argument("--provided", default=DEFAULT_PROVIDED,
                        help="symbols the bundle provides itself, comma-separated")
    args = parser.parse_args()
    provided = set(filter(None, args.provided.split(",")))
    failed = False
    for path in args.files:
        found = newer_symbols(path, args.prefix, args.max)
        if not found:
            continue
        missing = sorted({s for symbols in found.values() for s in symbols} - provided)
        listing = ", ".join(f"{s}@{args.prefix}{v}" for v, symbols in sorted(found.items()) for s in sorted(symbols))
        if missing:
            print(f"glibc_compat: {path} needs a glibc newer than {args.max} for {listing}; not provided by the "
                  f"bundle: {', '.join(missing)}", file=sys.stderr)
            failed = True
            continue
        if args.command == "weaken":
            versions = weaken(path, args.library, args.prefix, args.max)
            print(f"glibc_compat: {path}: {listing} (provided); weakened {', '.join(sorted(set(versions)))}")
        else:
            print(f"glibc_compat: {path}: {listing} (provided by the bundle)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
