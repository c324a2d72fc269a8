"""Headless runs over the same engine as the pages: ``python -m engine <command>`` (see docs/cli.md).

``experiment`` runs a TOML config or an exported JSON bundle; ``show`` prints a stored experiment's table
and answer again; ``generate`` trains (or reuses) a generator; ``make-set`` makes a judged synthetic set;
``loop`` runs a whole lesson from one TOML (dataset -> generator -> set -> experiment); ``runs``,
``sets`` and ``generators`` list the workspace; ``export-set`` and ``export-model`` write a set as a zip
and a run's classifier as a folder; ``users`` and ``limits`` manage a shared server's accounts and per-user
limits, and ``--as-user NAME`` runs any command as one of its users. ``--runner ray`` runs the heavy work of
``experiment``, ``loop``, ``generate`` and ``make-set`` (runs, generator training, sets) as Ray tasks on a cluster
(:mod:`engine.ray_cli`); the default, ``threads``, runs it here in the foreground. Every long step prints its progress
with the time left on stderr: one redrawn line on a terminal, a line per tenth (and per run or round) in a
log. Results go to stdout.
Exit status: 0 when everything finished, 1 when some runs (or a training) failed, 2 for input that is
not accepted, with one line naming the field, the value and what is accepted, 130 when interrupted. Input
is checked where it is first seen, before anything long starts; a lookup that fails elsewhere is one line
too (``SYNTHLAB_DEBUG=1`` shows its traceback), and any other error is a bug that keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import json
import logging
import os
import select
import sys
from pathlib import Path
from typing import Any

from engine import accounts, experiments, exports, limits, loop, owners, ray_cli, runs, store, threads
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
from engine.jobs import BACKENDS, Cancelled, user_message
from engine.synth import generators, make_sets, sets, split_sets

DEBUG_ENV = "SYNTHLAB_DEBUG"  # set to 1: a lookup that fails shows its traceback instead of one line

# Steps shared by the commands ---------------------------------------------------------------------------


def load_config(path: Path) -> experiments.ExperimentConfig:
    """An experiment config from TOML, or from an exported JSON bundle (its ``config``)."""
    if not path.is_file():
        raise experiments.ExperimentError(f"config={str(path)!r} is not accepted: expected an existing file")
    if path.suffix != ".json":
        return experiments.ExperimentConfig.from_dict(loop.read_toml(path))
    try:
        data: Any = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        message = f"config={str(path)!r} is not accepted: it is not valid JSON ({err})"
        raise experiments.ExperimentError(message) from None
    config = data.get("config", data) if isinstance(data, dict) else data
    if not isinstance(config, dict):
        raise experiments.ExperimentError(
            f"config={str(path)!r} is not accepted: expected a JSON object of experiment settings (an exported "
            f"bundle, or its 'config' object), not a {_json_kind(config)}"
        )
    return experiments.ExperimentConfig.from_dict(config)


def _json_kind(value: object) -> str:
    names = {list: "list", str: "string", bool: "true/false", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), "value")


def _check_results_options(args: argparse.Namespace) -> None:
    """--n-boot and --csv are checked before anything runs, not after the last run."""
    if args.n_boot < 1:
        raise ValueError(f"--n-boot={args.n_boot} is not accepted: expected a whole number >= 1, e.g. 2000")
    if args.csv:
        csv_path = Path(args.csv).expanduser()
        if csv_path.is_dir() or not csv_path.parent.is_dir():
            where = "a folder" if csv_path.is_dir() else f"in a folder that does not exist ({csv_path.parent})"
            raise ValueError(
                f"--csv={args.csv!r} is not accepted: it is {where}; expected a file in an existing folder"
            )


def _check_sets(cfg: experiments.ExperimentConfig) -> None:
    """Every synthetic set the experiment names is stored here and usable: checked before the dataset loads."""
    named = [m.synthetic_set for m in cfg.mixes if m.synthetic_set] + [twin for _, _, twin in cfg.split_sets]
    for set_id in dict.fromkeys(named):
        try:
            info = sets.load_info(sets.check_id(set_id))
        except sets.SetError:
            info = None
        if info is None or not owners.can_see(info.owner, info.shared):
            raise experiments.ExperimentError(
                f"mix.synthetic_set={set_id!r} is not accepted: expected the id of a synthetic set you can use "
                "(see sets)"
            )


def _check_generator(gen_id: str, field: str) -> dict[str, Any]:
    """A stored generator's origin record; ``field`` names where the id was given. Checked before any dataset loads."""
    origin = generators.load_origin(gen_id) if gen_id else None
    if origin is None:
        raise loop.LoopError(
            f"{field}={gen_id!r} is not accepted: expected the id of a stored generator (see generators)"
        )
    return origin


def _dataset(cfg: DatasetConfig) -> LabDataset:
    progress, on_progress = dataset_progress()
    dataset = loop.load_dataset(cfg, on_progress=on_progress)
    source = "read from the cache" if dataset.from_cache else "decoded"
    progress.finish(f"{describe(cfg)}, {len(dataset.train):,} training images, {source}")
    return dataset


def _generator(cfg: generators.GeneratorConfig, dataset: LabDataset, *, runner: str = "threads") -> str:
    progress = Progress(f"generator {cfg.kind}")
    if runner == "ray":
        gen_id, reused = ray_cli.generator(cfg, dataset)
    else:
        gen_id, reused = loop.train_or_reuse_generator(cfg, dataset, on_event=generator_progress(progress))
    progress.finish(
        f"{gen_id} " + ("reused: trained earlier with this config" if reused else f"trained, {cfg.steps:,} steps")
    )
    for warning in (generators.load_origin(gen_id) or {}).get("warnings", []):
        say(f"warning: generator {gen_id}: {warning}")
    return gen_id


def _make_set(
    request: make_sets.GenerateConfig, dataset: LabDataset, *, fresh: bool, runner: str = "threads"
) -> sets.SetInfo:
    loop.check_generator(request.generator, dataset)
    make_sets.target_counts(dataset, request)  # class names checked before the judge trains
    progress = Progress("set")
    if runner == "ray":
        found = None if fresh else loop.find_set(request, dataset)
        info, reused = (found, True) if found is not None else (ray_cli.make_set(request, dataset), False)
    else:
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


def _experiment(
    cfg: experiments.ExperimentConfig, dataset: LabDataset, *, runner: str = "threads"
) -> experiments.ExperimentRecord:
    if runner == "ray":
        return ray_cli.experiment(cfg, dataset, sets.load_set)
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
    _check_results_options(args)
    cfg = load_config(Path(args.config))
    _check_sets(cfg)
    dataset = _dataset(cfg.dataset)
    record = _experiment(cfg, dataset, runner=args.runner)
    return _report(experiments.summarize(record.id, n_boot=args.n_boot), facts_of(dataset), args)


def cmd_show(args: argparse.Namespace) -> int:
    _check_results_options(args)
    summary = experiments.summarize(args.experiment, n_boot=args.n_boot)
    return _report(summary, stored_facts(summary), args)


def cmd_generate(args: argparse.Namespace) -> int:
    cfg = loop.LoopConfig.load(Path(args.config))
    print(_generator(cfg.generator, _dataset(cfg.dataset), runner=args.runner))
    return 0


def cmd_make_set(args: argparse.Namespace) -> int:
    if not args.config and not args.generator:
        raise loop.LoopError(
            "make-set was given neither a config nor --generator: expected config.toml or --generator ID"
        )
    # 1. Check every input before any dataset loads or anything trains.
    changes = {k: v for k, v in _set_changes(args).items() if v is not None}
    cfg = loop.LoopConfig.load(Path(args.config)) if args.config else None
    gen_id = args.generator or (cfg.stored_generator if cfg else "")
    if gen_id:
        origin = _check_generator(gen_id, "--generator" if args.generator else "generate.generator")
        known = origin.get("class_names", [])
        unknown = [c for c in changes.get("classes", ()) if known and c not in known]
        if unknown:
            raise make_sets.GenerateError(
                f"--classes={unknown[0]!r} is not accepted: the generator's classes are {', '.join(known)}"
            )
    request = cfg.generate_for(gen_id or loop.PENDING) if cfg else make_sets.GenerateConfig(generator=gen_id)
    request = dataclasses.replace(request, **changes)  # the numbers are checked here
    if cfg is not None:
        dataset_cfg = cfg.dataset
    elif args.dataset:
        dataset_cfg = loop.LoopConfig.load(Path(args.dataset)).dataset
    else:
        dataset_cfg = loop.dataset_for_generator(args.generator)
    # 2. The dataset, the generator when the config trains one, then the set.
    dataset = _dataset(dataset_cfg)
    if cfg is not None and not gen_id:
        gen_id = _generator(cfg.generator, dataset, runner=args.runner)
    _make_set(dataclasses.replace(request, generator=gen_id), dataset, fresh=args.new, runner=args.runner)
    return 0


def _set_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The make-set flags that change the request; None where a flag was not given."""
    classes = None
    if args.classes is not None:
        classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
        if not classes:
            raise make_sets.GenerateError(
                f"--classes={args.classes!r} is not accepted: expected class names separated by commas, e.g. 'a,b'"
            )
    if args.seed is not None and args.seed < 0:
        raise make_sets.GenerateError(f"--seed={args.seed} is not accepted: expected a whole number >= 0")
    return {
        "per_class": args.per_class,
        "classes": classes,
        "threshold": args.threshold,
        "seed": args.seed,
        "name": args.name,
    }


def cmd_loop(args: argparse.Namespace) -> int:
    _check_results_options(args)
    cfg = loop.LoopConfig.load(Path(args.config))
    if cfg.stored_generator:
        _check_generator(cfg.stored_generator, "generate.generator")
    dataset = _dataset(cfg.dataset)
    make_sets.target_counts(dataset, cfg.generate)  # class names checked before anything trains
    gen_id = cfg.stored_generator or _generator(cfg.generator, dataset, runner=args.runner)
    info = _make_set(cfg.generate_for(gen_id), dataset, fresh=args.new_set, runner=args.runner)
    made = []
    for split_seed in cfg.further_splits:  # repeated splits: the same generator and set on each further split
        split = dataclasses.replace(cfg.dataset.split, seed=split_seed)
        other = loop.load_dataset(dataclasses.replace(cfg.dataset, split=split))
        if args.runner == "ray":
            twin = ray_cli.split_set(info.id, other)
        else:
            progress = Progress(f"set for split seed {split_seed}")
            twin = split_sets.make_split_set(
                info.id, other, on_progress=set_progress(progress), on_event=generator_progress(progress)
            )
            progress.finish(f"{twin} made like {info.id}")
        made.append((info.id, split_seed, twin))
    record = _experiment(cfg.experiment(info.id, made), dataset, runner=args.runner)
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
        if args.user is not None:
            owners.check_name(args.user)
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
        help="on a shared server, act as this user: lists show their own items and shared ones, and what is made "
        "is theirs (default: the server's local administrator, who sees everything)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def results(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the intervals")
        p.add_argument("--wide", action="store_true", help="every column, wider than 120 characters")
        p.add_argument("--csv", metavar="PATH", help="write every column of the results to a CSV file")

    def runner_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--runner",
            choices=BACKENDS,
            default="threads",
            help="where the runs and trainings run: threads (here, one at a time; the default) or ray (as tasks on "
            "the Ray cluster SYNTHLAB_RAY_ADDRESS names, in parallel as its CPUs allow; unset: a local Ray)",
        )

    exp = sub.add_parser("experiment", help="run an experiment from a TOML config or an exported JSON bundle")
    exp.add_argument("config", help="path to config.toml or bundle.json")
    results(exp)
    runner_option(exp)
    exp.set_defaults(fn=cmd_experiment)
    show = sub.add_parser("show", help="print a stored experiment's table and answer again")
    show.add_argument("experiment", help="experiment id (see the Compare page or `runs`)")
    results(show)
    show.set_defaults(fn=cmd_show)
    gen = sub.add_parser("generate", help="train (or reuse) the generator of a TOML's [generator]; prints its id")
    gen.add_argument("config", help="TOML with [dataset] and [generator] tables (a loop config will do)")
    runner_option(gen)
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
    runner_option(make)
    make.set_defaults(fn=cmd_make_set)
    lp = sub.add_parser("loop", help="dataset -> generator -> set -> experiment, from one TOML")
    lp.add_argument("config", help="loop TOML, e.g. examples/default_loop.toml")
    lp.add_argument("--new-set", action="store_true", help="make a new set even if the same request made one")
    results(lp)
    runner_option(lp)
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


def _checked_user(name: str) -> str:
    """--as-user: a name an owner can have, and with the server's own accounts (users mode) one of them."""
    owners.check_name(name)
    if accounts.auth_mode() == "users":
        known = [u.name for u in accounts.list_users()]
        if name not in known:
            raise accounts.AccountError(
                f"--as-user={name!r} is not accepted: expected one of the server's users "
                f"({', '.join(known) or 'none yet: add one with users add'})"
            )
    return name


def _missing(err: LookupError) -> str:
    """What a lookup did not find, in one line: the key of a KeyError, the message of any other lookup."""
    if isinstance(err, KeyError) and len(err.args) == 1:
        return repr(err.args[0])
    return " ".join(str(err).split()) or "an entry"


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (poll reports an error on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll here, or no real file behind sys.stdout
        return False


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The folder-roots guard protects a shared web server from its visitors; the CLI runs as its own user.
    os.environ.setdefault(store.FOLDER_ROOTS_ENV, os.sep)
    args = _parser().parse_args(argv)
    try:
        acting = contextlib.nullcontext() if args.as_user is None else owners.acting_as(_checked_user(args.as_user))
        with acting, threads.heavy_job():  # the CLI's work is one heavy job: the thread budget applies as on the server
            return int(args.fn(args))
    except KeyboardInterrupt:
        say("interrupted: nothing more was stored")
        return 130
    except BrokenPipeError as err:
        if _stdout_closed():  # the reader stopped early (`runs | head`): not an error of the lab's
            raise
        say(f"error: {user_message(err)}", wrap=False)  # another connection, e.g. to a cluster, was lost
        return 1
    except (ValueError, OSError) as err:  # the lab's own messages: field, value, what is accepted
        say(f"error: {user_message(err)}", wrap=False)
        return 2
    except LookupError as err:  # an id or a name looked up and not found; the traceback on request
        if os.environ.get(DEBUG_ENV):
            raise
        say(f"error: {_missing(err)} was not found (set {DEBUG_ENV}=1 to see where it was looked up)", wrap=False)
        return 2
    except (RuntimeError, Cancelled) as err:  # a training that diverged, weights that are missing
        say(f"error: {user_message(err)}", wrap=False)
        return 1
    finally:
        ray_cli.close()  # a cluster joined for --runner ray is left (a local Ray it started stops)
