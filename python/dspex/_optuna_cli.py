"""Optuna's command-line commands under ``dspex``, with Optuna's flags and output formats:
``create-study``, ``delete-study``, ``study set-user-attr``, ``studies``, ``trials``,
``best-trial``, ``best-trials``, ``ask``, ``tell`` and ``storage upgrade``. ``--storage`` may
come from the ``OPTUNA_STORAGE`` environment variable, as with Optuna; ``-f/--format`` is
``table``, ``json`` or ``yaml`` (``--flatten`` puts params in ``params_NAME`` columns)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
from typing import Any, Dict, List, Optional, TextIO

from dspex.exceptions import DSpexError

COMMANDS = ("create-study", "delete-study", "study", "studies", "trials", "best-trial", "best-trials", "ask", "tell", "storage")


# ------------------------------------------------------------------------------------ output


def _cell(v: Any) -> Any:
    """A value as Optuna's CLI prints it: datetimes to the second, durations as H:MM:SS.ffffff."""
    if isinstance(v, datetime.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, datetime.timedelta):
        return str(v)
    return v


def _table(rows: List[Dict[str, Any]], out: TextIO) -> None:
    cols: List[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    text = [[("" if r.get(c) is None else str(r[c] if not isinstance(r[c], list) else tuple(r[c]))) for c in cols] for r in rows]
    numeric = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in rows if r.get(c) is not None) for c in cols]
    widths = [max([len(c)] + [len(t[i]) for t in text]) for i, c in enumerate(cols)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out.write(rule + "\n")
    out.write("| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |\n")
    out.write(rule + "\n")
    for t in text:
        out.write("| " + " | ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(t, widths, numeric)) + " |\n")
    out.write(rule + "\n")


_YAML_WORDS = {"yes", "no", "true", "false", "on", "off", "null", "~", ""}
# Strings a YAML 1.1 reader would take for something else: numbers (sexagesimal too), dates.
_LOOKS_TYPED = re.compile(r"[-+]?(\.?\d[\d_:.]*([eE][-+]?\d+)?|\.inf|\.nan|0x[0-9a-fA-F]+)\Z|\d{4}-\d\d?-\d\d?([Tt ]|\Z)")


def _yaml_scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return {"inf": ".inf", "-inf": "-.inf", "nan": ".nan"}.get(repr(v), repr(v))
    s = str(v)
    plain = not (
        s.lower() in _YAML_WORDS
        or _LOOKS_TYPED.match(s)
        or s[0] in ",[]{}#&*!|>'\"%@` "
        or (s[0] in "-?:" and s[1:2] in ("", " "))
        or s[-1] == " "
        or any(x in s for x in (": ", " #", "\n", "\t"))
        or s.endswith(":")
    )
    if plain:
        return s
    return "'" + s.replace("'", "''") + "'"


def _yaml(v: Any, indent: int = 0) -> List[str]:
    pad = " " * indent
    if isinstance(v, dict):
        if not v:
            return [pad + "{}"]
        lines = []
        for k in sorted(v):
            item = v[k]
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{_yaml_scalar(k)}:")
                lines += _yaml(item, indent + (2 if isinstance(item, dict) else 0))
            else:
                lines.append(f"{pad}{_yaml_scalar(k)}: {_yaml(item)[0].strip()}")
        return lines
    if isinstance(v, list):
        if not v:
            return [pad + "[]"]
        lines = []
        for item in v:
            sub = _yaml(item, indent + 2)
            lines.append(f"{pad}- {sub[0].strip()}")
            lines += sub[1:]
        return lines
    return [pad + _yaml_scalar(v)]


def _emit(rows: List[Dict[str, Any]], fmt: str, out: TextIO, single: bool = False) -> None:
    rows = [{k: _cell(v) if not isinstance(v, dict) else {kk: _cell(vv) for kk, vv in v.items()} for k, v in r.items()} for r in rows]
    if fmt == "json":
        out.write(json.dumps(rows[0] if single and rows else rows) + "\n")
    elif fmt == "yaml":
        out.write("\n".join(_yaml(rows[0] if single and rows else rows)) + "\n")
    else:
        _table(rows, out)


# ------------------------------------------------------------------------------------- rows


def _trial_row(t: Any, flatten: bool, multi: bool) -> Dict[str, Any]:
    row: Dict[str, Any] = {"number": t.number}
    if multi:
        row["values"] = t.values
    else:
        row["value"] = t.value
    row["datetime_start"] = t.datetime_start
    row["datetime_complete"] = t.datetime_complete
    row["duration"] = t.duration
    if flatten:
        row.update({f"params_{k}": v for k, v in sorted(t.params.items())})
        row.update({f"user_attrs_{k}": v for k, v in sorted(t.user_attrs.items())})
    else:
        row["params"] = dict(sorted(t.params.items()))
        if t.user_attrs:
            row["user_attrs"] = dict(sorted(t.user_attrs.items()))
    row["state"] = t.state.name
    return row


def _tableable(rows: List[Dict[str, Any]], fmt: str) -> List[Dict[str, Any]]:
    """Dict cells as their repr in a table (Optuna prints them so)."""
    if fmt != "table":
        return rows
    return [{k: repr(v) if isinstance(v, dict) else v for k, v in r.items()} for r in rows]


# ---------------------------------------------------------------------------------- commands


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dspex", description="Optuna's commands, run on dspex.")
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(name: str, help_: str, study: bool = True, fmt: Optional[str] = None) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_)
        c.add_argument("--storage", default=os.environ.get("OPTUNA_STORAGE"), help="storage URL (default: $OPTUNA_STORAGE)")
        if study:
            c.add_argument("--study-name", "--study", dest="study_name", required=True, help="the study's name")
        if fmt:
            c.add_argument("-f", "--format", choices=["table", "json", "yaml"], default=fmt)
        return c

    c = cmd("create-study", "create a study and print its name", study=False)
    c.add_argument("--study-name", default=None)
    c.add_argument("--direction", choices=["minimize", "maximize"], default=None)
    c.add_argument("--directions", nargs="+", choices=["minimize", "maximize"], default=None)
    c.add_argument("--skip-if-exists", action="store_true")
    cmd("delete-study", "delete a study and its trials")
    c = cmd("study", "set a study's user attribute (study set-user-attr)", study=False)
    c.add_argument("action", choices=["set-user-attr"])
    c.add_argument("--study-name", "--study", dest="study_name", required=True)
    c.add_argument("--key", "-k", required=True)
    c.add_argument("--value", "-v", required=True)
    cmd("studies", "list the studies", study=False, fmt="table")
    for name in ("trials", "best-trial", "best-trials"):
        c = cmd(name, f"show the {name.replace('-', ' ')} of a study", fmt="table")
        c.add_argument("--flatten", action="store_true", help="params (and user attributes) in columns of their own")
    c = cmd("ask", "start a trial and print its parameters", fmt="json")
    c.add_argument("--direction", choices=["minimize", "maximize"], default=None)
    c.add_argument("--directions", nargs="+", choices=["minimize", "maximize"], default=None)
    c.add_argument("--sampler", default=None, help="a sampler class of dspex.samplers, e.g. TPESampler")
    c.add_argument("--sampler-kwargs", default=None, help="its keyword arguments as JSON")
    c.add_argument("--search-space", default=None, help="JSON: {name: distribution JSON}")
    c.add_argument("--flatten", action="store_true")
    c = cmd("tell", "finish a trial")
    c.add_argument("--trial-number", type=int, required=True)
    c.add_argument("--values", type=float, nargs="+", default=None)
    c.add_argument("--state", choices=["complete", "pruned", "fail"], default=None)
    c.add_argument("--skip-if-finished", action="store_true")
    c = cmd("storage", "storage upgrade: bring a storage to the current schema", study=False)
    c.add_argument("action", choices=["upgrade"])
    return p


def main(argv: List[str], out: Optional[TextIO] = None) -> int:
    """Runs one of Optuna's commands (``argv`` starts with the command's name)."""
    out = sys.stdout if out is None else out
    args = _parser().parse_args(argv)
    if not args.storage:
        print(f"dspex {args.command}: error: give --storage URL (or set OPTUNA_STORAGE)", file=sys.stderr)
        return 2
    try:
        return _run(args, out)
    except (DSpexError, ValueError, KeyError, TypeError, RuntimeError) as e:
        print(f"dspex {args.command}: error: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, out: TextIO) -> int:
    import dspex
    from dspex._studies_cli import _study_rows
    from dspex.storages import RDBStorage

    log = dspex.logging.get_logger("dspex.cli")
    if args.command == "studies":
        rows = [
            {"name": r["name"], "direction": r["directions"], "n_trials": r["n_trials"], "datetime_start": r["datetime_start"] and r["datetime_start"][:19], "user_attrs": r["user_attrs"]}
            for r in _study_rows(RDBStorage(args.storage))
        ]
        if not any(r["user_attrs"] for r in rows):  # the column only when a study has some
            rows = [{k: v for k, v in r.items() if k != "user_attrs"} for r in rows]
        _emit(rows, args.format, out)
        return 0
    if args.command == "storage":
        RDBStorage(args.storage)  # opening checks (and if needed creates) the schema
        log.info("This storage is up-to-date.")
        return 0
    if args.command == "create-study":
        if args.skip_if_exists and args.study_name in dspex.get_all_study_names(args.storage):
            log.info(f"Using an existing study with name {args.study_name!r} instead of creating a new one.")
            out.write(args.study_name + "\n")
            return 0
        directions = args.directions or [args.direction or "minimize"]
        study = dspex.create_study(storage=args.storage, study_name=args.study_name, directions=directions)
        out.write(study.study_name + "\n")
        return 0
    if args.command == "delete-study":
        dspex.delete_study(study_name=args.study_name, storage=args.storage)
        log.info(f"Study {args.study_name!r} deleted.")
        return 0
    if args.command == "study":
        dspex.load_study(study_name=args.study_name, storage=args.storage).set_user_attr(args.key, args.value)
        log.info("Attribute successfully written.")
        return 0
    if args.command == "ask":
        return _ask(args, out)
    study = dspex.load_study(study_name=args.study_name, storage=args.storage)
    if args.command == "tell":
        state = None if args.state is None else dspex.TrialState[args.state.upper()]
        values = args.values[0] if args.values and len(args.values) == 1 else args.values
        study.tell(args.trial_number, values, state=state, skip_if_finished=args.skip_if_finished)
        log.info(f"Told trial {args.trial_number} with values {args.values} and state {state}.")
        return 0
    multi = study._is_multi_objective()
    if args.command == "trials":
        trials = study.get_trials(deepcopy=False)
    elif args.command == "best-trial":
        trials = [study.best_trial]
    else:
        trials = study.best_trials
    rows = _tableable([_trial_row(t, args.flatten, multi) for t in trials], args.format)
    _emit(rows, args.format, out, single=args.command == "best-trial")
    return 0


def _ask(args: argparse.Namespace, out: TextIO) -> int:
    import dspex
    from dspex.distributions import json_to_distribution

    sampler = None
    if args.sampler is not None:
        cls = getattr(dspex.samplers, args.sampler, None)
        if not isinstance(cls, type) or not issubclass(cls, dspex.samplers.BaseSampler):
            raise ValueError(f"--sampler {args.sampler!r} is not a sampler of dspex.samplers")
        sampler = cls(**json.loads(args.sampler_kwargs or "{}"))
    if args.directions is None and args.direction is None and args.study_name in dspex.get_all_study_names(args.storage):
        study = dspex.load_study(storage=args.storage, study_name=args.study_name, sampler=sampler)
    else:
        directions = args.directions or [args.direction or "minimize"]
        study = dspex.create_study(storage=args.storage, study_name=args.study_name, directions=directions, sampler=sampler, load_if_exists=True)
    space = {k: json_to_distribution(json.dumps(v)) for k, v in json.loads(args.search_space or "{}").items()}
    trial = study.ask(fixed_distributions=space)
    params = {k: trial.params[k] for k in space}
    row: Dict[str, Any] = {"number": trial.number}
    row.update({f"params_{k}": v for k, v in params.items()} if args.flatten else {"params": params})
    dspex.logging.get_logger("dspex.cli").info(f"Asked trial {trial.number} with parameters {params}.")
    _emit(_tableable([row], args.format), args.format, out, single=True)
    return 0
