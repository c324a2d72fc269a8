"""Headless runs over the same engine as the pages: ``python -m engine <command>`` (see docs/cli.md).

``experiment`` runs a TOML config or an exported JSON bundle; ``show`` prints a stored experiment's table
and answer again; ``generate`` trains (or reuses) a generator; ``make-set`` makes a judged synthetic set;
``loop`` runs a whole lesson from one TOML (dataset -> generator -> set -> experiment); ``runs``,
``sets`` and ``generators`` list the workspace; ``export-set`` and ``export-model`` write a set as a zip
and a run's classifier as a folder; ``users`` and ``limits`` manage a shared server's accounts and per-user
limits, and ``--as-user NAME`` runs any command as one of its users. Every long step prints its progress
with the time left on stderr: one redrawn line on a terminal, a line per tenth (and per run or round) in a
log. Results go to stdout.
Exit status: 0 when everything finished, 1 when some runs (or a training) failed, 2 for input that is
not accepted, with one line naming the field, the value and what is accepted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from engine import accounts, experiments, exports, limits, loop, owners, runs, store, threads
from engine.cli_output import (
    DatasetFacts,
    Progress,
    RunProgress,
    dataset_progress,
    describe,
    duration,
    echo,
    facts_of,
    generator_progress,
    report,
    say,
    set_progress,
    stored_facts,
    text_table,
)
from engine.config import DatasetConfig
from engine.datasets import LabDataset
from engine.jobs import Cancelled, user_message
from engine.synth import generators, make_sets, sets, split_sets

# Steps shared by the commands ---------------------------------------------------------------------------


def load_config(path: Path) -> experiments.ExperimentConfig:
    """An experiment config from TOML, or from an exported JSON bundle (its ``config``)."""
    if not path.is_file():
        raise experiments.ExperimentError(f"config={str(path)!r} is not accepted: expected an existing file")
    if path.suffix == ".json":
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            message = f"config={str(path)!r} is not accepted: it is not valid JSON ({err})"
            raise experiments.ExperimentError(message) from None
        return experiments.ExperimentConfig.from_dict(data.get("config", data))
    return experiments.ExperimentConfig.from_dict(loop.read_toml(path))


def _dataset(cfg: DatasetConfig) -> LabDataset:
    progress, on_progress = dataset_progress()
    dataset = loop.load_dataset(cfg, on_progress=on_progress)
    source = "read from the cache" if dataset.from_cache else "decoded"
    progress.finish(f"{describe(cfg)}, {len(dataset.train):,} training images, {source}")
    return dataset


def _generator(cfg: generators.GeneratorConfig, dataset: LabDataset) -> str:
    progress = Progress(f"generator {cfg.kind}")
    gen_id, reused = loop.train_or_reuse_generator(cfg, dataset, on_event=generator_progress(progress))
    progress.finish(
        f"{gen_id} " + ("reused: trained earlier with this config" if reused else f"trained, {cfg.steps:,} steps")
    )
    for warning in (generators.load_origin(gen_id) or {}).get("warnings", []):
        say(f"warning: generator {gen_id}: {warning}")
    return gen_id


def _make_set(request: make_sets.GenerateConfig, dataset: LabDataset, *, fresh: bool) -> sets.SetInfo:
    loop.check_generator(request.generator, dataset)
    make_sets.target_counts(dataset, request)  # class names checked before the judge trains
    progress = Progress("set")
    info, reused = loop.make_or_reuse_set(request, dataset, fresh=fresh, on_progress=set_progress(progress))
    progress.finish(f"{info.id} " + ("reused: made earlier by the same request" if reused else "made"))
    kept, total = sum(info.counts_kept), sum(info.counts_total)
    print(f"set {info.id}: kept {kept:,} of {total:,} generated images, from generator {info.generator}")
    wanted = info.config.get("wanted", [0] * len(info.class_names))
    real = dataset.train.class_counts()
    rows = [
        {"class": name, "real train": int(real[c]), "asked": wanted[c], "kept": info.counts_kept[c]}
        | {"generated": info.counts_total[c]}
        for c, name in enumerate(info.class_names)
        if wanted[c] or info.counts_total[c]
    ]
    print(text_table(rows))
    for line in info.config.get("short", []):
        echo(f"short class: {line} (its budget of candidates ran out)")
    if info.config.get("given_up"):
        echo(f"given up: {', '.join(map(repr, info.config['given_up']))} (no candidate passed the filter)")
    return info


def _experiment(cfg: experiments.ExperimentConfig, dataset: LabDataset) -> experiments.ExperimentRecord:
    progress = RunProgress(cfg.train.max_epochs)
    record = experiments.run_experiment(
        cfg, dataset=dataset, synthetic=sets.load_set, on_run=progress.on_run, on_event=progress.on_event
    )
    progress.progress.finish(f"{len(record.run_ids)} runs of experiment {record.id}")
    return record


def _report(summary: experiments.ExperimentSummary, facts: DatasetFacts, args: argparse.Namespace) -> int:
    return report(summary, facts, n_boot=args.n_boot, wide=args.wide, csv_path=args.csv)


# Commands -----------------------------------------------------------------------------------------------


def cmd_experiment(args: argparse.Namespace) -> int:
    cfg = load_config(Path(args.config))
    dataset = _dataset(cfg.dataset)
    record = _experiment(cfg, dataset)
    return _report(experiments.summarize(record.id, n_boot=args.n_boot), facts_of(dataset), args)


def cmd_show(args: argparse.Namespace) -> int:
    summary = experiments.summarize(args.experiment, n_boot=args.n_boot)
    return _report(summary, stored_facts(summary), args)


def cmd_generate(args: argparse.Namespace) -> int:
    cfg = loop.LoopConfig.load(Path(args.config))
    print(_generator(cfg.generator, _dataset(cfg.dataset)))
    return 0


def cmd_make_set(args: argparse.Namespace) -> int:
    if not args.config and not args.generator:
        raise loop.LoopError(
            "make-set was given neither a config nor --generator: expected config.toml or --generator ID"
        )
    cfg = loop.LoopConfig.load(Path(args.config)) if args.config else None
    if cfg is not None:
        dataset_cfg = cfg.dataset
    elif args.dataset:
        dataset_cfg = loop.LoopConfig.load(Path(args.dataset)).dataset
    else:
        dataset_cfg = loop.dataset_for_generator(args.generator)
    dataset = _dataset(dataset_cfg)
    gen_id = args.generator or (cfg.stored_generator if cfg else "")
    if cfg is not None and not gen_id:
        gen_id = _generator(cfg.generator, dataset)
    request = cfg.generate_for(gen_id) if cfg else make_sets.GenerateConfig(generator=gen_id)
    changes: dict[str, Any] = {
        "per_class": args.per_class,
        "classes": tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else None,
        "threshold": args.threshold,
        "seed": args.seed,
        "name": args.name,
    }
    request = dataclasses.replace(request, **{k: v for k, v in changes.items() if v is not None})
    _make_set(request, dataset, fresh=args.new)
    return 0


def cmd_loop(args: argparse.Namespace) -> int:
    cfg = loop.LoopConfig.load(Path(args.config))
    dataset = _dataset(cfg.dataset)
    make_sets.target_counts(dataset, cfg.generate)  # class names checked before anything trains
    gen_id = cfg.stored_generator or _generator(cfg.generator, dataset)
    info = _make_set(cfg.generate_for(gen_id), dataset, fresh=args.new_set)
    made = []
    for split_seed in cfg.further_splits:  # repeated splits: the same generator and set on each further split
        progress = Progress(f"set for split seed {split_seed}")
        split = dataclasses.replace(cfg.dataset.split, seed=split_seed)
        twin = split_sets.make_split_set(
            info.id,
            loop.load_dataset(dataclasses.replace(cfg.dataset, split=split)),
            on_progress=set_progress(progress),
            on_event=generator_progress(progress),
        )
        progress.finish(f"{twin} made like {info.id}")
        made.append((info.id, split_seed, twin))
    record = _experiment(cfg.experiment(info.id, made), dataset)
    return _report(experiments.summarize(record.id, n_boot=args.n_boot), facts_of(dataset), args)


def cmd_runs(args: argparse.Namespace) -> int:
    rows = [
        {
            "run": r.id,
            "experiment": r.experiment,
            "mix": r.config.mix.label,
            "seed": r.config.seed,
            "model": r.config.model,
            "status": r.status,
            "accuracy": "" if r.headline.get("accuracy") is None else f"{r.headline['accuracy']:.4f}",
            "owner": owners.owner_of(r.owner),
        }
        for r in runs.visible_records(frozenset(e.id for e in experiments.list_experiments() if e.shared))
    ]
    print(text_table(rows, squeeze="mix"))
    return 0


def _dataset_name(dataset_key: str) -> str:
    cfg = loop.config_for_key(dataset_key)
    return describe(cfg) if cfg is not None else "(not known here)"


def cmd_sets(args: argparse.Namespace) -> int:
    key = _dataset(loop.LoopConfig.load(Path(args.dataset)).dataset).key if args.dataset else None
    rows = [
        {
            "set": s.id,
            "name": s.name,
            "generator": s.generator if len(s.generator) <= 24 else "…" + s.generator[-23:],
            "dataset": _dataset_name(s.dataset_key),
            "px": s.resolution,
            "kept": f"{sum(s.counts_kept):,}",
            "generated": f"{sum(s.counts_total):,}",
            "owner": s.owner + (" (shared)" if s.shared else ""),
        }
        for s in sets.list_sets(key)
    ]
    print(text_table(rows, squeeze="dataset"))
    return 0


def cmd_generators(args: argparse.Namespace) -> int:
    rows = [
        {
            "generator": g["id"],
            "kind": g["kind"],
            "steps": f"{g['config'].get('steps', 0):,}",
            "dataset": _dataset_name(generators.made_for(g)),
            "classes": len(g.get("class_names", [])),
            "trained in": duration(float(g.get("seconds", 0.0))),
            "warnings": len(g.get("warnings", [])),
            "owner": owners.owner_of(str(g.get("owner", ""))),
        }
        for g in generators.list_generators()
    ]
    print(text_table(rows, squeeze="dataset"))
    return 0


def cmd_export_set(args: argparse.Namespace) -> int:
    path = exports.save_set_zip(args.set, Path(args.out))
    info = sets.load_info(args.set)
    print(f"{path}: {sum(info.counts_kept):,} kept images in class folders, with manifest.json and manifest.csv")
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    folder = exports.export_classifier(args.run, Path(args.out))
    print(f"{folder}: {', '.join(sorted(p.name for p in folder.iterdir()))}")
    print(f"predict one image: .venv/bin/python {folder / 'load.py'} IMAGE")
    return 0


# Accounts (docs/accounts.md) ---------------------------------------------------------------------------


def _new_password(args: argparse.Namespace) -> str:
    """The new password: one line of stdin with --password-stdin, else typed twice at a hidden prompt."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    try:
        first = getpass.getpass(f"password for {args.name}: ")
        again = getpass.getpass("the same password again: ")
    except EOFError:
        raise accounts.AccountError("no password was typed: nothing was changed") from None
    if first != again:
        raise accounts.AccountError("the two passwords differ: nothing was changed")
    return first


def cmd_users(args: argparse.Namespace) -> int:
    if args.action in ("remove", "passwd"):
        accounts.get_user(args.name)  # an unknown name is refused before the password prompt
    if args.action == "add":
        user = accounts.add_user(args.name, _new_password(args), admin=args.admin)
        print(f"added {user.name} ({user.role}) to {accounts.users_file()}")
    elif args.action == "remove":
        accounts.remove_user(args.name)
        print(f"removed {args.name} and ended their sessions")
    elif args.action == "passwd":
        accounts.set_password(args.name, _new_password(args))
        print(f"new password for {args.name}; their open sessions ended")
    else:
        print(text_table([{"name": u.name, "role": u.role} for u in accounts.list_users()]))
    if accounts.auth_mode() != "users":
        say(f"note: the server uses these accounts only with {accounts.AUTH_ENV}=users (docs/accounts.md)")
    return 0


def _users_parser(sub: Any) -> None:
    users = sub.add_parser("users", help="the accounts of the server's users mode (docs/accounts.md)")
    actions = users.add_subparsers(dest="action", required=True)
    for action, text in [
        ("add", "add an account (password typed twice, or --password-stdin)"),
        ("remove", "remove an account and end its sessions"),
        ("passwd", "set a new password (ends the account's sessions)"),
    ]:
        p = actions.add_parser(action, help=text)
        p.add_argument("name", help="user name: 1 to 32 letters, digits, '.', '_' or '-'")
        if action != "remove":
            p.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    actions.choices["add"].add_argument("--admin", action="store_true", help="give the account the admin role")
    actions.add_parser("list", help="names and roles (never the password hashes)")
    users.set_defaults(fn=cmd_users)


# Limits (docs/settings.md) -----------------------------------------------------------------------------


def cmd_limits(args: argparse.Namespace) -> int:
    if args.action == "set":
        now = limits.set_limit(args.field, args.value, user=args.user)
        who = f"for {args.user}" if args.user else "for everyone without their own value"
        again = " (the default again)" if args.user and args.value == "default" else ""
        print(f"{args.field} is now {getattr(now, args.field)} {who}{again}")
        return 0
    shown = limits.show()
    rows = [{"user": "(default)", **shown["default"]}]
    rows += [{"user": name, **{f: over.get(f, "") for f in limits.FIELDS}} for name, over in shown["users"].items()]
    print(text_table(rows))
    say(f"kept in {shown['file']}; an empty cell means the default")
    return 0


def _limits_parser(sub: Any) -> None:
    lim = sub.add_parser("limits", help="per-user limits of a shared server: show them or set one")
    actions = lim.add_subparsers(dest="action", required=True)
    actions.add_parser("show", help="the server default and each user's own values")
    st = actions.add_parser("set", help="set a limit for everyone, or for one user with --user")
    st.add_argument("field", help=f"one of {', '.join(limits.FIELDS)}")
    st.add_argument("value", help="a number; with --user, 'default' removes the user's own value")
    st.add_argument("--user", help="only this user (default: the server default for everyone)")
    lim.set_defaults(fn=cmd_limits)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="SynthLab headless runs (docs/cli.md)")
    parser.add_argument(
        "--as-user",
        metavar="NAME",
        default="",
        help="on a shared server, act as this user: lists show their own items and shared ones, and what is made "
        "is theirs (default: the server's local administrator, who sees everything)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def results(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the intervals")
        p.add_argument("--wide", action="store_true", help="every column, wider than 120 characters")
        p.add_argument("--csv", metavar="PATH", help="write every column of the results to a CSV file")

    exp = sub.add_parser("experiment", help="run an experiment from a TOML config or an exported JSON bundle")
    exp.add_argument("config", help="path to config.toml or bundle.json")
    results(exp)
    exp.set_defaults(fn=cmd_experiment)
    show = sub.add_parser("show", help="print a stored experiment's table and answer again")
    show.add_argument("experiment", help="experiment id (see the Compare page or `runs`)")
    results(show)
    show.set_defaults(fn=cmd_show)
    gen = sub.add_parser("generate", help="train (or reuse) the generator of a TOML's [generator]; prints its id")
    gen.add_argument("config", help="TOML with [dataset] and [generator] tables (a loop config will do)")
    gen.set_defaults(fn=cmd_generate)
    make = sub.add_parser("make-set", help="make a judged synthetic set; prints its id and per-class counts")
    make.add_argument("config", nargs="?", help="TOML with [dataset], [generator] and [generate] tables")
    make.add_argument("--generator", help="id of a stored generator (see `generators`)")
    make.add_argument("--dataset", help="TOML whose [dataset] the generator learnt from, when not known here")
    make.add_argument("--per-class", type=int, help="images per class (0 = fill every class up to the largest)")
    make.add_argument("--classes", help="only these classes, comma-separated")
    make.add_argument("--threshold", type=float, help="least real-classifier confidence kept (0 = off)")
    make.add_argument("--seed", type=int, help="noise seed")
    make.add_argument("--name", help="the set's name")
    make.add_argument("--new", action="store_true", help="make a new set even if the same request made one")
    make.set_defaults(fn=cmd_make_set)
    lp = sub.add_parser("loop", help="dataset -> generator -> set -> experiment, from one TOML")
    lp.add_argument("config", help="loop TOML, e.g. examples/default_loop.toml")
    lp.add_argument("--new-set", action="store_true", help="make a new set even if the same request made one")
    results(lp)
    lp.set_defaults(fn=cmd_loop)
    sub.add_parser("runs", help="list the runs in the workspace").set_defaults(fn=cmd_runs)
    ls = sub.add_parser("sets", help="list the synthetic sets in the workspace")
    ls.add_argument("--dataset", help="only the sets made for the [dataset] of this TOML")
    ls.set_defaults(fn=cmd_sets)
    sub.add_parser("generators", help="list the stored generators").set_defaults(fn=cmd_generators)
    es = sub.add_parser("export-set", help="a synthetic set as a zip of class folders with its manifest")
    es.add_argument("set", help="set id (see `sets`)")
    es.add_argument("out", help="the .zip file to write")
    es.set_defaults(fn=cmd_export_set)
    em = sub.add_parser("export-model", help="a run's classifier: safetensors, config.json, load.py, README.md")
    em.add_argument("run", help="run id (see `runs`)")
    em.add_argument("out", help="the folder to write")
    em.set_defaults(fn=cmd_export_model)
    _users_parser(sub)
    _limits_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The folder-roots guard protects a shared web server from its visitors; the CLI runs as its own user.
    os.environ.setdefault(store.FOLDER_ROOTS_ENV, os.sep)
    args = _parser().parse_args(argv)
    try:
        acting = owners.acting_as(owners.check_name(args.as_user)) if args.as_user else contextlib.nullcontext()
        with acting, threads.heavy_job():  # the CLI's work is one heavy job: the thread budget applies as on the server
            return int(args.fn(args))
    except KeyboardInterrupt:
        say("interrupted: nothing more was stored")
        return 130
    except (ValueError, OSError) as err:  # the lab's own messages: field, value, what is accepted
        say(f"error: {user_message(err)}", wrap=False)
        return 2
    except (RuntimeError, Cancelled) as err:  # a training that diverged, weights that are missing
        say(f"error: {user_message(err)}", wrap=False)
        return 1
