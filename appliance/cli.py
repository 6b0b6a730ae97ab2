"""The `appliance` command."""

from __future__ import annotations

import argparse
import sys

from .settings import SettingsError, load_settings


def _add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home", help="data home (default $APPLIANCE_HOME or ~/.local/share/appliance)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appliance", description="A local Ultralytics Platform."
    )
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API, the store and the job queue")
    _add_home(serve)
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8000)")
    serve.add_argument("--public-url", help="URL clients use to reach this appliance")
    serve.add_argument("--workers", type=int, help="job queue threads (default 2)")
    serve.add_argument("--device", help="auto, cpu, or a CUDA index such as 0")
    serve.add_argument(
        "--owner", help="username of the owner account made on first start"
    )

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="make a new API key and print it once")
    _add_home(create)
    create.add_argument("--user", help="username (default: the owner)")
    create.add_argument("--name", default="cli", help="a label for the key")

    users = sub.add_parser("users", help="manage local accounts")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    for name, text in (
        ("create", "add an account (its password is read from the terminal or stdin)"),
        ("reset-password", "set a new password for an account"),
    ):
        command = users_sub.add_parser(name, help=text)
        _add_home(command)
        command.add_argument("username")
        command.add_argument(
            "--password-stdin", action="store_true", help="read the password from stdin"
        )
        if name == "create":
            command.add_argument("--name", help="display name")
            command.add_argument(
                "--key", action="store_true", help="also print an API key"
            )

    weights = sub.add_parser(
        "weights", help="official weights brought in by hand (air-gapped labs)"
    )
    weights_sub = weights.add_subparsers(dest="weights_command", required=True)
    imported = weights_sub.add_parser(
        "import", help="register a .pt such as yolo26n.pt for training and ul://"
    )
    _add_home(imported)
    imported.add_argument("file", help="the checkpoint, e.g. /media/usb/yolo26n.pt")
    imported.add_argument("--name", help="register under this name (default: its own)")
    imported.add_argument(
        "--replace", action="store_true", help="swap a weight of the same name"
    )
    listed = weights_sub.add_parser("list", help="show the imported weights")
    _add_home(listed)

    demo = sub.add_parser(
        "demo", help="run the whole job on the bundled sample through the REST API"
    )
    _add_home(demo)
    demo.add_argument("--url", help="an appliance to use instead of starting one")
    demo.add_argument("--key", help="API key for --url")
    demo.add_argument("--epochs", type=int, default=80)
    demo.add_argument("--imgsz", type=int, default=160)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .server import StartupError, configure_logging

    configure_logging(args.log_level)
    try:
        return _run(args)
    except (SettingsError, StartupError) as exc:
        sys.stderr.write(f"appliance: {exc}\n")
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from .server import serve

        settings = load_settings(
            home=args.home,
            host=args.host,
            port=args.port,
            public_url=args.public_url,
            workers=args.workers,
            device=args.device,
        )
        serve(settings, owner=args.owner)
        return 0
    if args.command == "keys":
        return _keys_create(args)
    if args.command == "users":
        return _users(args)
    if args.command == "weights":
        return _weights(args)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args)
    return 2


def _keys_create(args: argparse.Namespace) -> int:
    from .keys import create_key
    from .server import ensure_owner
    from .store import Database

    settings = load_settings(home=args.home)
    owner, first_key = ensure_owner(settings)
    db = Database(settings.db_path)
    user = db.user_by_name(args.user) if args.user else owner
    if user is None:
        sys.stderr.write(f"no user named {args.user}\n")
        return 1
    key = (
        first_key
        if first_key and not args.user
        else create_key(db, user["id"], args.name)
    )
    sys.stdout.write(key + "\n")
    return 0


def _read_password(from_stdin: bool) -> str:
    import getpass

    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise SettingsError("the two passwords differ")
    if len(password) < 8:
        raise SettingsError("passwords need at least 8 characters")
    return password


def _users(args: argparse.Namespace) -> int:
    from .ids import check_username
    from .keys import create_key
    from .secrets_ import hash_secret
    from .store import Database

    settings = load_settings(home=args.home)
    settings.home.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_path)
    user = db.user_by_name(args.username)
    if args.users_command == "create":
        if reason := check_username(args.username):
            raise SettingsError(f"{args.username!r}: {reason}")
        if user is not None:
            raise SettingsError(f"the name {args.username} is taken")
        password = _read_password(args.password_stdin)
        user = db.create_user(
            args.username, args.name, password_hash=hash_secret(password)
        )
        sys.stdout.write(f"created {user['username']}\n")
        if args.key:
            sys.stdout.write(create_key(db, user["id"], "cli") + "\n")
        return 0
    if user is None or user["kind"] != "personal":
        raise SettingsError(f"no user named {args.username}")
    db.update_user(
        user["id"], password_hash=hash_secret(_read_password(args.password_stdin))
    )
    db.delete_sessions_of(user["id"])
    sys.stdout.write(
        f"password changed for {user['username']}; its sessions were ended\n"
    )
    return 0


def _weights(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .errors import Invalid
    from .vision import apply_offline_environment
    from .weights import Registry, uri_of

    settings = load_settings(home=args.home)
    registry = Registry(settings.home)
    if args.weights_command == "list":
        for entry in registry.entries().values():
            where = uri_of(entry) or "(training only)"
            sys.stdout.write(
                f"{entry['name']}\t{entry['task']}\t{entry['size']}\t{where}\n"
            )
        return 0
    apply_offline_environment(settings.home)  # reading a checkpoint imports ultralytics
    try:
        entry, changed = registry.add(Path(args.file), args.name, replace=args.replace)
    except Invalid as exc:
        sys.stderr.write(f"appliance: {exc.message}\n")
        return 1
    verb = "imported" if changed else "already imported:"
    uses = [f"trainArgs.model: {entry['name']}"]
    if uri_of(entry):
        uses.append(uri_of(entry))
    sys.stdout.write(
        f"{verb} {entry['name']} ({entry['task']}, {entry['classCount']} classes, "
        f"{entry['size']} bytes); use it as {' or '.join(uses)}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
