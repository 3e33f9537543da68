"""The key command: init (a new key file), rotate (a new signing key, the old ones kept),
check (the key opens the newest point in every store) and decrypt (an encrypted copy
downloaded by hand, for `sha256sum -c` and a manual restore)."""

from __future__ import annotations

from pathlib import Path

from .console import EXIT_FAILED, EXIT_OK, UsageError, emit

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    import argparse

    from .keys import KeySource
    from .site import Site

DEFAULT_KEY_FILE = "backup.key"
KEEP_IT_AWAY = ("Store a copy of it away from this machine now (a password manager, or "
                "printed and kept in a safe), never beside the backups: whoever holds it can "
                "sign copies, and without it the signed copies in mirrors and S3 cannot be "
                "restored.")


def key_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("action", choices=("init", "rotate", "check", "decrypt"),
                   help="init: write a new key file (0600; never overwrites); rotate: add "
                        "a new signing key, keeping the old ones to read older copies; "
                        "check: prove the key opens the newest point in every store; "
                        "decrypt FILE --out OUT: an encrypted copy, downloaded")
    c.add_argument("file", nargs="?", metavar="FILE", help="decrypt: the downloaded object")
    c.add_argument("--out", metavar="OUT", help="decrypt: where to write the plaintext")
    c.add_argument("--name", help="decrypt: the object's name in the store (default: FILE's)")
    c.add_argument("--key-file", metavar="PATH",
                   help="the key file (default: backup.key_file of the config, or "
                        f"{DEFAULT_KEY_FILE} beside it for init)")


def cmd_key(site: Site, args: argparse.Namespace) -> int:
    if args.action != "decrypt" and (args.file or args.out or args.name):
        raise UsageError(f"key {args.action} takes no FILE, --out or --name")
    return {"init": _init, "rotate": _rotate, "check": _check, "decrypt": _decrypt}[
        args.action](site, args)


def _configured(site: Site) -> KeySource | None:
    from .config import sealing
    found = sealing(site.config.get("backup") or {}, site.base)
    return found.keys if found is not None else None


def _key_file(site: Site, args: argparse.Namespace) -> Path:
    if args.key_file:
        return Path(args.key_file)
    source = _configured(site)
    if source is not None and source.file is not None:
        return source.file
    if source is not None:
        raise UsageError(f"the key comes from the {source.label} (backup.key_env): name "
                         "the key file to write with --key-file PATH")
    return site.base / DEFAULT_KEY_FILE


def _init(site: Site, args: argparse.Namespace) -> int:
    from .keys import init_key_file
    path = _key_file(site, args)
    try:
        new_id = init_key_file(path)
    except FileExistsError:
        raise UsageError(f"{site.shown(path)} exists already: never overwritten (key rotate "
                         "adds a new key to it; a new file could not open older copies)"
                         ) from None
    configured = _configured(site)
    lines = [f"wrote key file {site.shown(path)} (mode 0600), key {new_id}.", KEEP_IT_AWAY]
    if configured is None or configured.file != path.absolute():
        lines.append(f"Then name it in config.yaml, under backup:  key_file: {site.shown(path)}"
                     "  (or put its key line in an environment variable named by "
                     "backup.key_env)")
    emit(args, {"key_file": str(path), "key": new_id}, lines)
    return EXIT_OK


def _rotate(site: Site, args: argparse.Namespace) -> int:
    from .keys import add_key
    path = _key_file(site, args)
    try:
        new_id = add_key(path)
    except FileNotFoundError:
        raise UsageError(f"{site.shown(path)} does not exist: key init makes a key file"
                         ) from None
    emit(args, {"key_file": str(path), "key": new_id}, [
        f"added key {new_id} to {site.shown(path)}: it signs every copy from now on; the "
        "older keys stay in the file to check and decrypt older copies (never remove them "
        "while such copies may be needed).", "The file changed: " + KEEP_IT_AWAY])
    return EXIT_OK


def _check(site: Site, args: argparse.Namespace) -> int:
    from .key_check import check_key
    rows = check_key(site.manager)
    source = _configured(site)
    lines = [f"{'ok' if r['ok'] else 'FAILED'}: {site.shown(r['store'])}: {r['detail']}"
             for r in rows]
    failed = [r for r in rows if not r["ok"]]
    lines.append(f"key check: the {source.label} opens the newest point in every store"
                 if not failed else f"key check: {len(failed)} store(s) FAILED with the "
                                    f"{source.label}")
    emit(args, {"ok": not failed, "key_source": source.label, "stores": rows}, lines)
    return EXIT_OK if not failed else EXIT_FAILED


def _decrypt(site: Site, args: argparse.Namespace) -> int:
    from .envelope import NotAuthentic, is_sealed, unseal
    from .keys import KeySource
    if not args.file or not args.out:
        raise UsageError("key decrypt FILE --out OUT: the downloaded object, and where to "
                         "write its plaintext")
    source = KeySource(file=Path(args.key_file)) if args.key_file else _configured(site)
    if source is None:
        raise UsageError("no key configured: pass --key-file PATH")
    data = Path(args.file).read_bytes()
    if not is_sealed(data):
        raise UsageError(f"{args.file} is not encrypted: check it as it is, with "
                         "sha256sum -c and its .sha256")
    name = args.name or Path(args.file).name
    try:
        plain = unseal(source.keyring(), name, data)
    except NotAuthentic as exc:
        emit(args, {"ok": False, "error": str(exc)}, [
            f"{args.file} does not open as {name} with the {source.label}: {exc} (downloaded "
            "under another name? pass --name with its name in the store)"])
        return EXIT_FAILED
    out = Path(args.out)
    with open(out, "xb") as f:  # never over an existing file
        f.write(plain)
    emit(args, {"ok": True, "out": str(out), "bytes": len(plain)},
         [f"wrote {len(plain)} bytes to {out}: check them with sha256sum -c against the "
          "object's .sha256 (saved beside it under the object's name)"])
    return EXIT_OK
