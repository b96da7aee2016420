"""`syncd backup`, `restore` and `journal verify`: the journal and its S3 copy."""

from __future__ import annotations

import argparse
from typing import Any

from syncd.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    config_of,
)
from syncd.core.text import printable
from syncd.errors import JournalCorrupt, UsageError


def _mirror_store(config: Any) -> Any:
    from syncd.cloudformation import make_session
    from syncd.s3 import S3Store

    if not config.backup.url:
        raise UsageError("backup.url is not set in the config: there is no S3 backup")
    endpoint = config.aws.endpoint_url
    if config.aws.embedded:
        raise UsageError(
            "the embedded emulator lives only while syncd runs: its S3 cannot hold a backup "
            "to restore or verify from another process"
        )
    session = make_session(config.aws.target, endpoint)
    return S3Store(
        session,
        config.backup.url,
        endpoint_url=endpoint,
        sse=config.backup.sse,
        kms_key_id=config.backup.kms_key_id,
    )


def cmd_backup(args: argparse.Namespace) -> int:
    from syncd import render
    from syncd.app import backup_key, open_journal
    from syncd.journal.mirror import Mirror

    config = config_of(args)
    store = _mirror_store(config)
    journal = open_journal(config)
    try:
        mirror = Mirror(
            journal, store, config.state_dir, config.backup.interval, key=backup_key(config)
        )
        sent = mirror.cycle()
        cursor = mirror.cursor
    finally:
        journal.close()
    result = {
        "url": store.url,
        "lineage": cursor.lineage,
        "uploaded_records": sent,
        "last_seq": cursor.seq,
        "last_hash": cursor.hash,
    }
    if args.format == "json":
        print(render.as_json(result))
    else:
        print(
            f"backup: {sent} new record(s) uploaded; {store.url}lineages/{cursor.lineage}/ "
            f"holds records 1..{cursor.seq}"
        )
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    from syncd import render
    from syncd.app import backup_key
    from syncd.journal.restore import normalise_time, restore

    config = config_of(args)
    key = backup_key(config)
    if key is None and not args.unauthenticated:
        raise UsageError(
            "backup.key_file is not set, so syncd cannot tell this backup from one forged by "
            "whoever can write to the bucket. Set it to the key the backup was written with, "
            "or pass --unauthenticated to restore it as it is"
        )
    store = _mirror_store(config)
    at = normalise_time(args.at) if args.at else None
    read = restore(
        store,
        config.state_dir,
        at=at,
        force=args.force,
        partial=args.partial,
        lineage_id=args.lineage,
        key=key,
    )
    result = {
        "url": store.url,
        "lineage": read.lineage.id,
        "records": read.last_seq,
        "last_time": read.last_time,
        "damage": read.damage,
        "authenticated": read.authenticated,
        "skipped": read.skipped,
        "unsigned_tail": read.unsigned_tail,
    }
    if args.format == "json":
        print(render.as_json(result))
    else:
        print(
            f"restored {read.last_seq} record(s) from {store.url}lineages/{read.lineage.id}/"
            + (f", up to {read.last_time}" if read.last_time else "")
        )
        if read.damage:
            print(f"stopped before damage: {read.damage}")
        for why in read.skipped:
            print(printable(f"skipped, not authenticated: {why}"))
        if read.unsigned_tail:
            print(f"left out {read.unsigned_tail} record(s) after the newest signed checkpoint")
        if not read.authenticated:
            print("warning: restored without authentication (no backup.key_file)")
    return EXIT_OK


def cmd_journal(args: argparse.Namespace) -> int:
    from syncd import render
    from syncd.journal.store import Journal, verify_journal

    config = config_of(args)
    warnings: list[str] = []
    result: dict[str, Any] = {"ok": True, "local": None, "remote": None}
    has_local = (config.state_dir / "journal").is_dir()
    if not has_local and not args.remote:
        raise UsageError(
            f"there is no journal in {config.state_dir} to verify (a new host: "
            "`syncd restore`, or `journal verify --remote` to check the backup alone)"
        )
    try:
        if has_local:
            checked = verify_journal(config.state_dir, warnings.append)
            result["local"] = {
                "records": checked.last_seq,
                "last_hash": checked.last_hash,
                "torn_tail_bytes": checked.torn,
                "problem": None,
            }
    except JournalCorrupt as exc:
        result["ok"] = False
        result["local"] = {"problem": str(exc)}
    if args.remote:
        from syncd.journal.restore import verify_remote

        store = _mirror_store(config)
        local = None
        if result["ok"] and has_local:
            local = Journal.open(config.state_dir, writer=False, warn=warnings.append)
        from syncd.app import backup_key

        read = verify_remote(store, local, backup_key(config))
        result["remote"] = {
            "url": store.url,
            "lineage": read.lineage.id,
            "records": read.last_seq,
            "last_hash": read.last_hash,
            "deletions_visible": read.deleted is not None,
            "authenticated": read.authenticated,
            "skipped": read.skipped,
            "problem": read.damage,
        }
        if not read.authenticated:
            warnings.append("the backup was not authenticated (no backup.key_file)")
        warnings.extend(f"skipped, not authenticated: {why}" for why in read.skipped)
        result["ok"] = result["ok"] and not read.damage
    if args.format == "json":
        print(render.as_json(result))
    else:
        for where in ("local", "remote"):
            part = result[where]
            if part is None:
                continue
            if part["problem"]:
                print(f"{where}: DAMAGED: {part['problem']}")
            else:
                print(f"{where}: ok, {part['records']} record(s), last hash {part['last_hash']}")
        for warning in warnings:
            print(f"warning: {warning}")
    return EXIT_OK if result["ok"] else EXIT_FAILED
