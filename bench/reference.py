"""The reference: dbworker as it was at an earlier commit, served in the same run as this code.

A ratio measured in two runs mixes the code's change with the machine's drift (seen here: every row
of one run a third slower against its peers than in a run two hours before, in libraries no commit
touched). So a run given ``--reference REV`` exports that commit's tree (``git archive``), seeds it
a database of its own like this code's, starts its daemon (``python -m dbworker`` from that tree,
same configuration, same broker), and measures it in paired rounds beside this code
(:mod:`bench.rounds`, alternating order): the ratio of each pair is one measurement, their median
the verdict.

The reference is sent calls by :class:`~bench.workloads.ClientWithoutTerms` (the client as it was
before a call carried a deadline and a key). This code's ``volume_get`` is sent by
``dbworker.client`` as shipped (with its deadline), its ``volume_create`` by the same client as the
reference's, so that pair compares the two workers' code on the same messages (what a key and a
deadline add to a write is the *terms* pair's measure). Its database is created by this
code's schema and stamped at the reference's own head revision, which its daemon checks at start:
the tables it uses are the same, and ``rpc_calls`` has two more nullable columns it never writes.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import servers, workloads
from bench.measure import Call
from bench.services import ROOT, Resources, python


@dataclass
class Reference:
    """The reference's started daemon, its commit, its calls (by operation) and its database."""

    server: servers.Server
    commit: str
    calls: dict[str, Call]
    data: workloads.Data


def export(rev: str, into: Path) -> str:
    """Write commit ``rev``'s tree of this repository into ``into``; return the full commit id.

    Raises:
        subprocess.CalledProcessError: ``rev`` is not a commit of this repository.
    """
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return commit


def head_revision(tree: Path) -> str:
    """The schema's head revision of the dbworker package in ``tree`` (asked of that code)."""
    code = "from dbworker import migration as m; print(m.head())"
    try_new = "from dbworker import schema as m; print(m.head())"
    for snippet in (code, try_new):  # flat package (before the layers), then the layered one
        done = subprocess.run(python("-c", snippet), cwd=tree, capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout.strip()
    raise RuntimeError(f"cannot read the schema head of the reference tree {tree}: {done.stderr[-500:]}")


def start(res: Resources, rpc: Any, rabbit: str, rev: str, rows: int) -> Reference:
    """Export ``rev``, seed its database with ``rows`` volumes, start its daemon (1 worker)."""
    tree = res.workdir / "reference"
    commit = export(rev, tree)
    url = res.database("postgresql", suffix="_reference")
    data = workloads.Data(url)
    res.callback(data.dispose)
    data.fill(rows)
    with data.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :head"), {"head": head_revision(tree)})
    server, _client = servers.start_daemon(res, rpc, rabbit, url, 1, "reference", source=tree)
    client = workloads.ClientWithoutTerms(rpc, topic=server.topic, timeout=30)
    return Reference(server, commit, workloads.dbworker_calls(client, data), data)
