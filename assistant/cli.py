"""The `assistant` command: ingest, search, ask, documents, delete, the portal's users, the API's keys and server."""

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from assistant.api.keys import ApiKeyStore
from assistant.assembly import build_assistant
from assistant.audit import AuditError
from assistant.errors import AssistantError
from assistant.evaluation import report
from assistant.evaluation.comparison import Threshold, compare, parse_threshold, slower
from assistant.evaluation.records import RunNotFound, read_run
from assistant.evaluation.scoring import METRICS, label
from assistant.service import EVALUATION_READER, Assistant
from assistant.settings import Settings
from assistant.types import Answer, Source, User
from assistant.users import UserStore, UserStoreError
from model import ModelLoadError
from model.generators import GeneratorError
from retrieval import ADMIN_GROUP, EmbedderMismatch, InvalidGroupName, StoreLockedError
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

    evaluate = commands.add_parser(
        "eval",
        help="measure how well the right documents are found (and answered from) for a question file; each run is "
        "kept, to compare with the next (README: Evaluating the assistant)",
    )
    evaluate.add_argument(
        "questions",
        nargs="?",
        help='JSON lines: {"question": ..., "expected": ["glob or document id"], "answer": ..., "page": N, '
        '"groups": [...]}',
    )
    evaluate.add_argument("--user", default=None, help="ask every question as this user (a portal account's groups)")
    evaluate.add_argument(
        "--group", action="append", default=[], help="ask every question as a member of this group (repeat)"
    )
    evaluate.add_argument("--k", type=int, default=5, help="passages scored per question (default 5)")
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--compare", metavar="RUN", help="a kept run's id, 'latest' (on this file) or a run file")
    evaluate.add_argument(
        "--fail-below",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        type=_threshold,
        help="exit 1 when a figure is below VALUE, e.g. hit@5=0.9 (repeat); " + ", ".join(METRICS),
    )
    evaluate.add_argument(
        "--max-drop",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        type=_threshold,
        help="with --compare: exit 1 when a figure fell by more than VALUE, e.g. mrr=0.02 (repeat)",
    )
    evaluate.add_argument(
        "--max-p95-ms", type=float, default=None, metavar="MS", help="exit 1 when the search's p95 latency is above MS"
    )
    evaluate.add_argument("--no-answers", action="store_true", help="score the search only, not the answers")
    evaluate.add_argument("--list", action="store_true", help="list the kept runs")
    evaluate.add_argument("--show", metavar="RUN", help="print a kept run again (its id, or 'latest')")

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


def _threshold(text: str) -> Threshold:
    try:
        return parse_threshold(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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


def run_eval(args: argparse.Namespace, assistant: Assistant) -> int:
    """0: every gate passed; 1: a figure is below its gate, or a line of the file was not a question; 2: no run."""
    operator = User(getpass.getuser(), (ADMIN_GROUP,))  # who holds the data directory, and is audited by name
    if args.list:
        runs = assistant.evaluation_runs(operator)
        if args.json:
            print(json.dumps({"runs": [_run_row(run) for run in runs]}, indent=2))
        for run in [] if args.json else runs:
            row = _run_row(run)
            print(
                f"{row['id']}  {row['questions_file']}  {row['questions']} questions  "
                + "  ".join(f"{name}={value:.3f}" for name, value in row["figures"].items())
            )
        return 0
    if args.show:
        shown = assistant.evaluation_run(args.show, operator)
        print(
            shown.model_dump_json(indent=1)
            if args.json
            else "\n".join([*report.summary(shown), *report.question_table(shown)])
        )
        return 0
    if not args.questions:
        raise ValueError("name a question file (or --list, or --show RUN): assistant eval QUESTIONS.jsonl")
    if args.max_drop and not args.compare:
        raise ValueError("--max-drop needs a run to compare with: add --compare RUN (or --compare latest)")
    path = Path(args.questions).expanduser()
    data = path.read_bytes()
    baseline = None
    if args.compare:
        # A run file from elsewhere (a staging installation) is the operator's own to read; an id or "latest" is a
        # kept run of this installation.
        compare_path = Path(args.compare).expanduser()
        baseline = (
            read_run(compare_path)
            if compare_path.suffix == ".json" and compare_path.is_file()
            else assistant.evaluation_run(args.compare, operator, questions_file=path.name)
        )
    bar = tqdm(desc="evaluating", unit="question", disable=args.json, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    with bar:
        run = assistant.evaluate(
            data,
            path.name,
            operator,
            reader=_reader(args, assistant),
            k=args.k,
            answers=not args.no_answers,
            progress=progress,
        )
    compared = compare(run, baseline) if baseline is not None else None
    failures = [
        *(threshold.below(run) for threshold in args.fail_below),
        *(threshold.dropped(run, baseline) for threshold in args.max_drop),
        slower(run, args.max_p95_ms) if args.max_p95_ms is not None else None,
    ]
    failures = [failure for failure in failures if failure]
    if args.json:
        print(
            json.dumps(
                {
                    "run": run.model_dump(mode="json"),
                    "comparison": compared.to_dict(run.k) if compared else None,
                    "gates": {"passed": not failures, "failures": failures},
                },
                indent=1,
            )
        )
    else:
        print("\n".join(report.summary(run)))
        print()
        print("\n".join(report.question_table(run)))
        if compared is not None:
            print()
            print("\n".join(report.comparison(compared, run.k)))
        print(f"\nkept as run {run.id} in {assistant.evaluations.directory} (compare a later run: --compare {run.id})")
    for failure in failures:
        print(f"assistant eval: below the gate: {failure}", file=sys.stderr)
    if run.problems:
        print(f"assistant eval: {len(run.problems)} line(s) of {path} were not asked (listed above)", file=sys.stderr)
    return 1 if failures or run.problems else 0


def _reader(args: argparse.Namespace, assistant: Assistant) -> User | None:
    """Whom the questions are asked as: --group (as --user, or 'evaluation'); --user alone: that portal account's
    groups; neither: each question's own groups."""
    if args.group:
        return User(args.user or EVALUATION_READER, tuple(args.group))
    if args.user:
        account = next(
            (user for user in UserStore(assistant.settings.users_file).users() if user.name == args.user), None
        )
        if account is None:
            raise ValueError(
                f"{args.user} has no portal account in {assistant.settings.users_file}: name the groups to ask as "
                "with --group"
            )
        return account
    return None


def _run_row(run) -> dict:
    figures = {label(metric, run.k): run.figure(metric) for metric in METRICS if run.figure(metric) is not None}
    return {
        "id": run.id,
        "started": run.started,
        "questions_file": run.questions_file,
        "questions": len(run.results),
        "reader": run.reader,
        "figures": figures,
    }


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

    if args.command == "eval":
        return run_eval(args, assistant)

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
        RunNotFound,
        OSError,  # a file named that is missing, a directory, unreadable
        ValueError,
    ) as exc:
        # The operator runs this on the server: the whole detail (paths, adapters), not the words for a reader.
        print(f"assistant: {getattr(exc, 'detail', exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
