"""``python -m harness compressors [NAME]``: the compressor registry, one line per name, or one entry's fields.

    python -m harness compressors            every registered name: kind, what it presets, its first doc line
    python -m harness compressors fastvid    that entry's config fields with their defaults, and its doc
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from harness.model.registry import build_config, describe, get_entry
from harness.schema import ConfigError, to_dict


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness compressors", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", nargs="?", help="a registry name: show its fields (model.compressor.<field>)")
    a = ap.parse_args(argv)
    if a.name is None:
        rows = describe()
        w = max(len(r["name"]) for r in rows)
        for r in rows:
            what = f"preset of {r['preset_of']}" if r["preset_of"] else r["doc"]
            print(f"{r['name']:<{w}}  {r['kind']:<13}  {what}")
        print("\nuse one as model.compressor.name; `python -m harness compressors NAME` lists its fields")
        return 0
    try:
        entry = get_entry(a.name, "name")
        cfg = build_config({"name": a.name})
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.name}: {'training-free reducer' if entry.training_free else 'trained compressor'} "
          f"({entry.module_cls.__module__}.{entry.module_cls.__name__})")
    if entry.preset:
        print(f"preset of {entry.base}: {entry.preset}")
    doc = sys.modules[entry.module_cls.__module__].__doc__ or ""
    print("\n" + doc.strip() + "\n\nfields (model.compressor.<field>: default):")
    values = to_dict(cfg)
    for f in dataclasses.fields(cfg):
        print(f"  {f.name}: {values[f.name]}")
    return 0
