"""The `assistant` command: ingest, search, ask, documents, delete, the portal's users, the API's keys and server."""

import argparse
import getpass
import json
import os
import sys

from assistant.api.keys import ApiKeyStore
from assistant.assembly import build_assistant
from assistant.audit import AuditError
from assistant.errors import AssistantError
from assistant.service import Assistant
from assistant.settings import Settings
from assistant.types import Answer, Source, User
from assistant.users import UserStore, UserStoreError
from model import ModelLoadError
from model.generators import GeneratorError
from retrieval import EmbedderMismatch, InvalidGroupName, StoreLockedError
from retrieval.embedding import ModelNotFound


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistant", description="Ask questions of your organisation's documents.")
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="add or update files and folders")
    ingest.add_argument("paths", nargs="+")
    ingest.add_argument("--group", action="append", default=[], help="a group that may read them (repeat)")
    ingest.add_argument("--prune", action="store_true", help="remove stored documents whose files are gone")
    ingest.add_argument("--strict", action="store_true", help="exit non-zero if any file fails")
    ingest.add_argument("--json", action="store_true")

    for name, help_text in (("search", "find passages"), ("ask", "answer a question with sources")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("query")
        _add_reader(command)
        command.add_argument("--k", type=int, default=10 if name == "search" else 5)
        command.add_argument("--json", action="store_true")

    documents = commands.add_parser("documents", help="list stored documents (all of them unless --group)")
    _add_reader(documents)
    documents.add_argument("--json", action="store_true")

    delete = commands.add_parser("delete", help="remove a document by path or id")
    delete.add_argument("path_or_id")

    users = commands.add_parser("users", help="the portal's local accounts (ASSISTANT_USERS_FILE)")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    add = users_commands.add_parser("add", help="add a user, or set an existing user's password and groups")
    add.add_argument("name")
    add.add_argument("--group", action="append", required=True, help="a group the user is in (repeat)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    remove = users_commands.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    users_commands.add_parser("list", help="list users and their groups")

    keys = commands.add_parser("keys", help="the HTTP API's keys (ASSISTANT_API_KEYS_FILE)")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    add_key = keys_commands.add_parser("add", help="create a key; it is printed once, and only its hash is kept")
    add_key.add_argument("name", help="the key's name (to list and remove it)")
    add_key.add_argument("--group", action="append", required=True, help="a group the key's user is in (repeat)")
    add_key.add_argument("--user", default=None, help="the user the audit log names (default: the key's name)")
    remove_key = keys_commands.add_parser("remove", help="revoke a key (from the next request on)")
    remove_key.add_argument("name")
    keys_commands.add_parser("list", help="list keys, their users and groups")

    commands.add_parser(
        "reembed",
        help="re-embed every stored chunk with the configured embedding model (ASSISTANT_EMBEDDING_MODEL), after a "
        "change of model; needs no original file",
    )
    commands.add_parser(
        "serve", help="the HTTP API (ASSISTANT_API_ADDRESS / _API_PORT, default 127.0.0.1:8000; README: HTTP API)"
    )
    return parser


def _add_reader(command: argparse.ArgumentParser) -> None:
    command.add_argument("--user", default=None, help="who is asking (default: the login name)")
    command.add_argument(
        "--group", action="append", default=[], help="a group the user is in (repeat); 'admin' sees everything"
    )


def _user(args: argparse.Namespace) -> User:
    return User(args.user or getpass.getuser(), tuple(args.group))


def _print_sources(sources: list[Source]) -> None:
    for number, source in enumerate(sources, 1):
        where = f", {source.location}" if source.location else ""
        print(f"[{number}] {source.path}{where} (score {source.score:.3f})")
        print("    " + source.text[:300].replace("\n", " ") + ("..." if len(source.text) > 300 else ""))


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("password: ")
    if getpass.getpass("password again: ") != password:
        raise UserStoreError("the two passwords differ: nothing changed, run the command again")
    return password


def run_users(args: argparse.Namespace, store: UserStore) -> int:
    if args.users_command == "add":
        exists = any(user.name == args.name for user in store.users())
        store.add(args.name, _read_password(args.password_stdin), args.group)
        print(f"{'updated' if exists else 'added'} {args.name} in {store.path}")
        return 0
    if args.users_command == "remove":
        store.remove(args.name)
        print(f"removed {args.name} from {store.path}")
        return 0
    if args.users_command == "list":
        for user in store.users():
            print(f"{user.name}  groups={','.join(user.groups) or '(none: sees nothing)'}")
        return 0
    raise AssertionError(args.users_command)


def run_keys(args: argparse.Namespace, store: ApiKeyStore) -> int:
    if args.keys_command == "add":
        key = store.add(args.name, args.group, user=args.user)
        print(
            f"added key {args.name} to {store.path}; it is shown only now, so store it in a secret store:",
            file=sys.stderr,
        )
        print(key)  # alone on stdout, so a script can capture it
        return 0
    if args.keys_command == "remove":
        store.remove(args.name)
        print(f"removed key {args.name} from {store.path}: it is refused from the next request on")
        return 0
    if args.keys_command == "list":
        for key in store.entries():
            groups = ",".join(key.user.groups) or "(none: sees nothing)"
            print(f"{key.name}  user={key.user.name}  groups={groups}  created={key.created}")
        return 0
    raise AssertionError(args.keys_command)


def run(args: argparse.Namespace, assistant: Assistant) -> int:
    if args.command == "ingest":
        # The operator's own shell paths: `../docs` means what it says here. The assistant refuses '..' in a path it
        # is handed (one built from an uploaded name could climb anywhere), so it gets them made absolute.
        paths = [os.path.abspath(os.path.expanduser(path)) for path in args.paths]
        report = assistant.ingest(paths, groups=args.group, prune=args.prune, progress=not args.json)
        if args.json:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            for failure in report.failed:
                print(f"failed: {failure.path}: {failure.reason}", file=sys.stderr)
            for skipped in report.skipped:
                print(f"skipped: {skipped.path}: {skipped.reason}", file=sys.stderr)
            print(report.summary())
        return 1 if args.strict and not report.ok else 0

    if args.command == "search":
        sources = assistant.search(args.query, _user(args), k=args.k)
        if args.json:
            print(json.dumps({"sources": [s.to_dict() for s in sources]}, indent=2))
        else:
            _print_sources(sources) if sources else print("no passage you may read matches")
        return 0

    if args.command == "ask":
        if args.json:
            print(json.dumps(assistant.ask(args.query, _user(args), k=args.k).to_dict(), indent=2))
            return 0
        for piece in assistant.stream(args.query, _user(args), k=args.k):
            if isinstance(piece, Answer):
                print("\nSources:")
                _print_sources(piece.sources)
            else:
                print(piece, end="", flush=True)
        return 0

    if args.command == "documents":
        # The operator of the command line holds the data directory, so sees everything unless
        # they name groups to see the store as a member of those groups would.
        reader = _user(args) if args.group else User("operator", ("admin",))
        documents = assistant.documents(reader)
        if args.json:
            print(json.dumps({"documents": [d.to_dict() for d in documents]}, indent=2))
        else:
            for d in documents:
                print(f"{d.doc_id}  {d.path}  groups={','.join(d.groups) or '(admins only)'}  chunks={d.chunks}")
        return 0

    if args.command == "delete":
        info = assistant.delete(args.path_or_id)
        print(f"deleted {info.path} ({info.chunks} chunks)")
        return 0

    if args.command == "reembed":
        chunks = assistant.reembed(progress=True)
        print(f"re-embedded {chunks} chunks with {assistant.embedder.model_name}")
        return 0

    if args.command == "serve":
        from assistant.api.server import serve  # the web framework only for the command that needs it

        return serve(assistant)
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "users":
        # Accounts need no store and no model: this works while the portal holds the embedded store.
        try:
            return run_users(args, UserStore(Settings().users_file))
        except (ValueError, OSError) as exc:  # UserStoreError, a bad setting, an unwritable users file
            print(f"assistant: {exc}", file=sys.stderr)
            return 2
    if args.command == "keys":
        # Like accounts: no store, no model, and it works while `assistant serve` runs (which sees the change).
        try:
            return run_keys(args, ApiKeyStore(Settings().api_keys_file))
        except (ValueError, OSError) as exc:  # KeyStoreError, a bad setting, an unwritable keys file
            print(f"assistant: {exc}", file=sys.stderr)
            return 2
    # A command's output is its answer; the model loader's progress bars are noise there.
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    try:
        with build_assistant(Settings()) as assistant:
            return run(args, assistant)
    except (
        StoreLockedError,
        EmbedderMismatch,
        ModelNotFound,
        ModelLoadError,
        GeneratorError,
        InvalidGroupName,
        AssistantError,
        AuditError,
        FileNotFoundError,
        ValueError,
    ) as exc:
        # The operator runs this on the server: the whole detail (paths, adapters), not the words for a reader.
        print(f"assistant: {getattr(exc, 'detail', exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
