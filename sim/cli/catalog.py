"""`llmsim catalog`: the devices, nodes, clusters, calibration profiles, models,
workloads and scenarios that ship (and those under LLMSIM_CATALOG_PATH)."""

from __future__ import annotations

import argparse

from sim.cli.options import print_json
from sim.errors import LlmsimError
from sim.spec import catalog


def setup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "catalog",
        help="list the devices, nodes, clusters, models, workloads and scenarios that ship",
    )
    p.add_argument(
        "kind", nargs="?", help="one of: device node cluster calibration model workload scenario"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    kinds = list(catalog.KINDS)
    if ns.kind:
        kind = ns.kind.rstrip("s") if ns.kind.rstrip("s") in kinds else ns.kind
        if kind not in kinds:
            raise LlmsimError(f"unknown catalog kind {ns.kind!r}; valid: {', '.join(kinds)}")
        kinds = [kind]
    listing = {
        kind: [
            {
                "name": e.name,
                "aliases": list(e.aliases),
                "description": e.description,
                "path": str(e.path),
            }
            for e in catalog.entries(kind)
        ]
        for kind in kinds
    }
    if ns.json:
        print_json(listing)
        return 0
    for kind, items in listing.items():
        print(f"{kind}s ({len(items)}):")
        for item in items:
            alias = f"  [{', '.join(item['aliases'])}]" if item["aliases"] else ""
            desc = f"  {item['description']}" if item["description"] else ""
            print(f"  {item['name']}{alias}{desc}")
    return 0
