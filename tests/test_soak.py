"""scripts/soak: a short run ends with nothing lost, nothing partial and the store intact; and its
reconciliation does see a loss when there is one."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from soak.load import Journalist, Ledger, Sent, TimedClient, post_form
from soak.newsroom import make_newsroom
from soak.reconcile import reconcile
from soak.service import Service

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_short_soak_with_kills_loses_nothing_and_leaves_the_store_intact(tmp_path: Path):
    run = subprocess.run([str(REPO / "scripts" / "soak"), "0.3", "--kill-every", "5", "--export-every", "8",
                          "--work", str(tmp_path / "soak")], capture_output=True, text=True, timeout=900, cwd=REPO)
    out = run.stdout
    print(out)
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert re.search(r"^lost: 0$", out, re.MULTILINE)
    assert re.search(r"^partial: 0; pending uploads after recovery: 0$", out, re.MULTILINE)
    assert re.search(r"^intake check: The store is intact\.$", out, re.MULTILINE)
    acknowledged = int(re.search(r"^acknowledged: (\d+) requests", out, re.MULTILINE).group(1))
    assert acknowledged > 0
    kills = re.search(r"^kills: (.*); restarts: (\d+)$", out, re.MULTILINE)
    assert kills.group(1) != "none", "nothing was killed"
    replies = re.search(r"^replies: (\d+) imported, (\d+) read by their sources, 0 missing$", out, re.MULTILINE)
    assert replies and replies.group(1) == replies.group(2)


@pytest.mark.slow
def test_the_reconciliation_counts_an_acknowledged_submission_that_is_not_stored_as_lost(tmp_path: Path):
    room = make_newsroom(tmp_path)
    service = Service(room, tmp_path / "serve.log")
    ledger = Ledger()
    service.start()
    try:
        client = TimedClient(service.source_url, ledger)
        landing = client.get("/")
        page = client.submit(landing, landing.form_posting_to("/new"))
        ledger.codenames.append(page.codename())
        message, content = b"a real tip " + os.urandom(8).hex().encode(), os.urandom(70_000)
        status, location = post_form(client, page, message, [("scan.pdf", content)], piece=65536, pause=0)
        assert status == 303 and location.endswith("/thanks")
        real = [("message", hashlib.sha256(message).hexdigest()), ("file", hashlib.sha256(content).hexdigest())]
        phantom = [("file", hashlib.sha256(b"never sent to the server").hexdigest())]
        ledger.sent += [Sent(0, real, acknowledged=True), Sent(0, phantom, acknowledged=True)]
    finally:
        service.stop()
    result = reconcile(room, service, ledger, Journalist(room, service, ledger, 0, 1))
    assert (result.acknowledged_requests, result.acknowledged_parts, result.stored) == (2, 3, 2)
    assert result.decrypted == {"alice": 2, "bob": 2}
    assert result.lost == 1 and result.partial == 0 and result.check_clean
    assert result.failed
