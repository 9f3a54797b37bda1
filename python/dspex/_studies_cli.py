"""``dspex studies list|show|delete|export --storage URL``: look at the studies of a database
(one that dspex or Optuna wrote)."""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import sys
from typing import Any, Dict, List, Optional, TextIO

from dspex.exceptions import DSpexError
from dspex.storages import RDBStorage
from dspex.study import delete_study, load_study


def _num(v: Any) -> Any:
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return str(v)  # "inf", "-inf", "nan": JSON has no such numbers
    return v


def _dt(t: Optional[datetime.datetime]) -> Optional[str]:
    return None if t is None else t.isoformat(sep=" ")


def _trial_dict(t: Any) -> Dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state.name,
        "values": None if t.values is None else [_num(v) for v in t.values],
        "params": {k: _num(v) for k, v in t.params.items()},
        "intermediate_values": {str(k): _num(v) for k, v in t.intermediate_values.items()},
        "user_attrs": t.user_attrs,
        "system_attrs": t.system_attrs,
        "datetime_start": _dt(t.datetime_start),
        "datetime_complete": _dt(t.datetime_complete),
        "duration": None if t.duration is None else t.duration.total_seconds(),
    }


def _study_rows(storage: Any) -> List[Dict[str, Any]]:
    rows = []
    for s in storage.get_all_studies():
        ds = s["datetime_start"]
        rows.append(
            {
                "study_id": s["study_id"],
                "name": s["study_name"],
                "directions": [d.upper() for d in s["directions"]],
                "n_trials": s["n_trials"],
                "datetime_start": None if ds is None else datetime.datetime.fromtimestamp(ds).isoformat(sep=" "),
                "user_attrs": s["user_attrs"],
            }
        )
    return rows


def _flat(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Trial dicts -> CSV rows (columns in the style of Optuna's trials_dataframe)."""
    out = []
    for r in rows:
        flat: Dict[str, Any] = {"number": r["number"]}
        vals = r["values"]
        if vals is not None and len(vals) == 1:
            flat["value"] = vals[0]
        elif vals is not None:
            for i, v in enumerate(vals):
                flat[f"values_{i}"] = v
        flat["datetime_start"] = r["datetime_start"]
        flat["datetime_complete"] = r["datetime_complete"]
        flat["duration"] = r["duration"]
        for k, v in r["params"].items():
            flat[f"params_{k}"] = v
        for k, v in r["user_attrs"].items():
            flat[f"user_attrs_{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)
        flat["state"] = r["state"]
        out.append(flat)
    return out


def _write_csv(rows: List[Dict[str, Any]], out: TextIO) -> None:
    cols: List[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    w = csv.DictWriter(out, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})


def _table(rows: List[Dict[str, Any]], cols: List[str], out: TextIO) -> None:
    cells = [[str(r.get(c, "")) if r.get(c) is not None else "" for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    out.write("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip() + "\n")
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() + "\n")


def main(argv: List[str], out: Optional[TextIO] = None) -> int:
    out = sys.stdout if out is None else out
    parser = argparse.ArgumentParser(prog="dspex studies", description="List, show, delete or export the studies of a storage.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, help_ in (
        ("list", "list the studies"),
        ("show", "show one study and its trials"),
        ("delete", "delete a study and its trials"),
        ("export", "export the trials of a study"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--storage", required=True, help="storage URL: sqlite:///path.db or postgresql://...")
        if name != "list":
            p.add_argument("--study-name", "--study", dest="study", required=True, help="study name")
        if name in ("list", "show"):
            p.add_argument("--format", choices=["table", "json", "csv"], default="table")
        if name == "export":
            p.add_argument("--format", choices=["csv", "json"], default="csv")
            p.add_argument("--output", "-o", help="file to write (default: standard output)")
        if name == "delete":
            p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    args = parser.parse_args(argv)

    try:
        storage = RDBStorage(args.storage)
        if args.cmd == "list":
            rows = _study_rows(storage)
            if args.format == "json":
                json.dump(rows, out, indent=2)
                out.write("\n")
            elif args.format == "csv":
                _write_csv([{**r, "directions": " ".join(r["directions"]), "user_attrs": json.dumps(r["user_attrs"])} for r in rows], out)
            else:
                _table(
                    [{**r, "directions": ",".join(r["directions"])} for r in rows],
                    ["name", "directions", "n_trials", "datetime_start"],
                    out,
                )
            return 0
        names = storage.get_all_study_names()
        if args.study not in names:
            print(f"dspex studies: error: no study {args.study!r} in {args.storage} (studies: {', '.join(names) or 'none'})", file=sys.stderr)
            return 1
        if args.cmd == "delete":
            if not args.yes:
                if not sys.stdin.isatty():
                    print("dspex studies: error: delete needs --yes when standard input is not a terminal", file=sys.stderr)
                    return 2
                if input(f"delete study {args.study!r} and its trials? [y/N] ").strip().lower() not in ("y", "yes"):
                    print("not deleted", file=sys.stderr)
                    return 1
            delete_study(study_name=args.study, storage=storage)
            print(f"deleted study {args.study!r}", file=out)
            return 0
        study = load_study(study_name=args.study, storage=storage)
        trials = [_trial_dict(t) for t in study.trials]
        if args.cmd == "show":
            info: Dict[str, Any] = {
                "name": study.study_name,
                "directions": [d.name for d in study.directions],
                "n_trials": len(trials),
                "user_attrs": study.user_attrs,
                "trials": trials,
            }
            if args.format == "json":
                json.dump(info, out, indent=2)
                out.write("\n")
            elif args.format == "csv":
                _write_csv(_flat(trials), out)
            else:
                states: Dict[str, int] = {}
                for t in trials:
                    states[t["state"]] = states.get(t["state"], 0) + 1
                out.write(f"study      {info['name']}\n")
                out.write(f"directions {', '.join(info['directions'])}\n")
                out.write(f"trials     {len(trials)} ({', '.join(f'{k} {v}' for k, v in sorted(states.items()))})\n")
                if info["user_attrs"]:
                    out.write(f"user_attrs {json.dumps(info['user_attrs'])}\n")
                out.write("\n")
                _table(
                    [{**t, "values": "" if t["values"] is None else " ".join(str(v) for v in t["values"]), "params": json.dumps(t["params"])} for t in trials],
                    ["number", "state", "values", "datetime_start", "params"],
                    out,
                )
            return 0
        # export
        target = open(args.output, "w", newline="") if args.output else out
        try:
            if args.format == "json":
                json.dump(trials, target, indent=2)
                target.write("\n")
            else:
                _write_csv(_flat(trials), target)
        finally:
            if args.output:
                target.close()
        return 0
    except (DSpexError, ValueError, KeyError, OSError) as e:
        print(f"dspex studies: error: {e}", file=sys.stderr)
        return 1
