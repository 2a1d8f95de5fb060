"""The paper's published numbers, kept as reference data with their protocol: ``results/reference/*.yaml``.

``load_reference()`` reads and validates ``results/reference/mambamia_v2.yaml`` (or another file) into
:class:`RefTable` objects: each has a protocol (encoder, frames, tokens, LLM, data, benchmark versions,
toolkit), display columns, an optional baseline row, and rows of values. A row's ``match`` names the
study and variant of this project that reproduces it; ``harness.report.figures_v2`` uses it to put
reported and reproduced numbers side by side. Every problem is a :class:`ReferenceError` naming the file
and the key.

CLI: ``python -m harness.reference_numbers [--file F] [TABLE ...]`` prints the tables with their protocol.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = REPO_ROOT / "results" / "reference" / "mambamia_v2.yaml"


class ReferenceError(ValueError):
    """Bad reference data; the message names the file and the key."""


@dataclass
class RefRow:
    id: str
    label: str
    values: dict[str, float]
    protocol: dict[str, Any]  # the table's protocol with the row's own overrides applied
    match: dict[str, Any] = field(default_factory=dict)  # {study, variant: {axis label: value}}
    oom: list[str] = field(default_factory=list)  # columns reported as out of memory
    note: str = ""


@dataclass
class RefTable:
    name: str
    description: str
    protocol: dict[str, Any]
    columns: dict[str, str]  # key -> display name
    rows: list[RefRow]
    baseline: str | None = None

    def row(self, row_id: str) -> RefRow:
        for r in self.rows:
            if r.id == row_id:
                return r
        raise KeyError(f"reference table {self.name!r} has no row {row_id!r}")

    def rows_for_study(self, study: str) -> list[RefRow]:
        """Rows whose ``match.study`` (a name or a list of names) includes ``study``."""
        def names(m: dict[str, Any]) -> list[str]:
            s = m.get("study")
            return [s] if isinstance(s, str) else list(s or [])
        return [r for r in self.rows if study in names(r.match)]


@dataclass
class Reference:
    path: Path
    source: dict[str, Any]
    tables: dict[str, RefTable]
    claims: list[dict[str, Any]]
    protocol_sensitivity: list[dict[str, Any]]

    def table(self, name: str) -> RefTable:
        if name not in self.tables:
            raise ReferenceError(f"{self.path}: tables.{name}: no such reference table "
                                 f"(known: {', '.join(self.tables)})")
        return self.tables[name]

    def tables_for_study(self, study: str) -> list[RefTable]:
        return [t for t in self.tables.values() if t.rows_for_study(study)]


def _need(cond: bool, path: Path, key: str, msg: str) -> None:
    if not cond:
        raise ReferenceError(f"{path}: {key}: {msg}")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def load_reference(path: str | Path | None = None) -> Reference:
    """Read and validate a reference file (default ``results/reference/mambamia_v2.yaml``)."""
    p = Path(path) if path else DEFAULT_FILE
    if not p.is_file():
        raise ReferenceError(f"{p}: reference file not found")
    doc = yaml.safe_load(p.read_text())
    _need(isinstance(doc, dict), p, "<root>", "expected a mapping with 'tables'")
    tables_doc = doc.get("tables")
    _need(isinstance(tables_doc, dict) and bool(tables_doc), p, "tables", "expected a non-empty mapping")
    tables: dict[str, RefTable] = {}
    for name, t in tables_doc.items():
        key = f"tables.{name}"
        _need(isinstance(t, dict), p, key, "expected a mapping")
        unknown = set(t) - {"description", "protocol", "columns", "rows", "baseline"}
        _need(not unknown, p, key, f"unknown keys {sorted(unknown)}")
        proto = t.get("protocol") or {}
        _need(isinstance(proto, dict) and bool(proto), p, f"{key}.protocol", "every table needs its protocol")
        cols = t.get("columns")
        _need(isinstance(cols, dict) and bool(cols), p, f"{key}.columns", "expected a mapping key -> name")
        rows_doc = t.get("rows")
        _need(isinstance(rows_doc, list) and bool(rows_doc), p, f"{key}.rows", "expected a non-empty list")
        rows: list[RefRow] = []
        for i, r in enumerate(rows_doc):
            rk = f"{key}.rows[{i}]"
            _need(isinstance(r, dict) and isinstance(r.get("id"), str), p, rk, "needs an 'id'")
            unknown = set(r) - {"id", "label", "values", "protocol", "match", "oom", "note"}
            _need(not unknown, p, rk, f"unknown keys {sorted(unknown)}")
            vals = r.get("values") or {}
            _need(isinstance(vals, dict), p, f"{rk}.values", "expected a mapping column -> number")
            for c, v in vals.items():
                _need(c in cols, p, f"{rk}.values.{c}", f"not a column of the table ({', '.join(cols)})")
                _need(_number(v), p, f"{rk}.values.{c}", f"expected a number, got {v!r}")
            oom = list(r.get("oom") or [])
            for c in oom:
                _need(c in cols, p, f"{rk}.oom", f"{c!r} is not a column of the table")
            match = r.get("match") or {}
            if match:
                st = match.get("study")
                ok = isinstance(st, str) or (isinstance(st, list) and st and all(isinstance(x, str) for x in st))
                _need(bool(ok) and isinstance(match.get("variant"), dict), p, f"{rk}.match",
                      "expected {study: name or [names], variant: {axis label: value}}")
            rows.append(RefRow(id=r["id"], label=str(r.get("label") or r["id"]),
                               values={c: float(v) for c, v in vals.items()},
                               protocol={**proto, **(r.get("protocol") or {})}, match=match, oom=oom,
                               note=str(r.get("note") or "")))
        ids = [r.id for r in rows]
        _need(len(set(ids)) == len(ids), p, f"{key}.rows", f"repeated row ids in {ids}")
        base = t.get("baseline")
        _need(base is None or base in ids, p, f"{key}.baseline", f"{base!r} is not a row id ({', '.join(ids)})")
        tables[name] = RefTable(name=name, description=str(t.get("description") or ""), protocol=proto,
                                columns={str(k): str(v) for k, v in cols.items()}, rows=rows, baseline=base)
    claims = list(doc.get("claims") or [])
    for i, c in enumerate(claims):
        ck = f"claims[{i}]"
        _need(isinstance(c, dict) and isinstance(c.get("id"), str) and isinstance(c.get("text"), str), p, ck,
              "needs an 'id' and a 'text'")
        if "table" in c:
            t = tables.get(c["table"])
            _need(t is not None, p, f"{ck}.table", f"{c['table']!r} is not a table ({', '.join(tables)})")
            ids = [r.id for r in t.rows]
            for k in ("a", "b"):
                _need(c.get(k) in ids, p, f"{ck}.{k}", f"{c.get(k)!r} is not a row of {c['table']} ({', '.join(ids)})")
            col = c.get("column")
            _need(col in t.columns, p, f"{ck}.column", f"{col!r} is not a column of {c['table']}")
            for k in ("a", "b"):
                _need(col in t.row(c[k]).values, p, f"{ck}.{k}", f"row {c[k]!r} has no value for {col!r}")
    return Reference(path=p, source=dict(doc.get("source") or {}), tables=tables, claims=claims,
                     protocol_sensitivity=list(doc.get("protocol_sensitivity") or []))


def protocol_text(protocol: dict[str, Any], keys: tuple[str, ...] = ("frames", "llm_tokens", "llm", "encoder")
                  ) -> str:
    """A one-line protocol summary, e.g. ``frames 64; LLM Qwen2-7B; encoder SigLIP2 ...``."""
    names = {"llm_tokens": "tokens", "llm": "LLM"}
    return "; ".join(f"{names.get(k, k)} {protocol[k]}" for k in keys if k in protocol)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.reference_numbers",
        description="Print the paper's published numbers (results/reference/*.yaml) with their protocol.",
        epilog="example: python -m harness.reference_numbers compression_layer secondary_sampling")
    ap.add_argument("tables", nargs="*", help="table names (default: all)")
    ap.add_argument("--file", default=None, help=f"reference YAML (default: {DEFAULT_FILE.relative_to(REPO_ROOT)})")
    a = ap.parse_args(argv)
    ref = load_reference(a.file)
    for name in a.tables or list(ref.tables):
        t = ref.table(name)
        print(f"## {t.name}: {t.description}")
        for k, v in t.protocol.items():
            print(f"   {k}: {v}")
        cols = list(t.columns)
        print("   " + " | ".join(["row", *(t.columns[c] for c in cols)]))
        for r in t.rows:
            cells = ["OOM" if c in r.oom else (f"{r.values[c]:g}" if c in r.values else "-") for c in cols]
            print("   " + " | ".join([r.label, *cells]))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
