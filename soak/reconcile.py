"""The end of a soak: what the server acknowledged against what is stored and what decrypts.

After the load, `intake serve` is started once more (its start-up recovers the store), `intake status`
must show no pending upload, every source with a reply imported signs in and reads it, the service
stops, then `intake export --all` and `intake-keys decrypt` (as each journalist types them) must give
back every acknowledged part byte-exact (sha256), of an unacknowledged request only its first parts
in the order sent (each part is published once whole), nothing nobody sent (a part stored in part
would be that), no damaged item; and `intake check` must find the store intact.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass, field

from soak.load import REPLY_TOKEN, Journalist, Ledger, TimedClient, decrypted_items
from soak.newsroom import JOURNALISTS, Newsroom
from soak.service import Service


@dataclass
class Reckoning:
    acknowledged_requests: int = 0
    acknowledged_parts: int = 0
    stored: int = 0
    decrypted: dict[str, int] = field(default_factory=dict)  # journalist -> items
    lost: int = 0
    partial: int = 0
    partial_reasons: Counter = field(default_factory=Counter)
    unacknowledged_but_complete: int = 0
    unacknowledged_first_parts: int = 0  # requests cut after some of their parts were published whole
    pending_after_recovery: int = -1
    replies_imported: int = 0
    replies_read: int = 0
    replies_missing: int = 0
    check: str = ""
    check_clean: bool = False
    failures: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.partial or self.replies_missing or not self.check_clean or self.failures
                    or any(count != self.stored for count in self.decrypted.values()))


def status_counts(room: Newsroom) -> dict[str, int]:
    out = room.intake("status").out
    return {name: int(value) for name, value in re.findall(r"^([a-z ]+): (\d+)$", out, re.MULTILINE)}


def read_replies(service: Service, ledger: Ledger) -> None:
    """Every source that was sent a reply signs in with its codename and reads its replies page."""
    for number in sorted(set(ledger.replies_imported.values())):
        client = TimedClient(service.source_url, ledger)
        page = client.log_in(ledger.codenames[number])
        ledger.replies_read |= set(REPLY_TOKEN.findall(html.unescape(page.text)))


def reconcile(room: Newsroom, service: Service, ledger: Ledger, journalist: Journalist) -> Reckoning:
    result = Reckoning(failures=list(ledger.failures))
    service.restart()
    counts = status_counts(room)
    result.pending_after_recovery = counts["pending uploads"]
    result.stored = counts["submissions"]
    if result.pending_after_recovery:
        result.partial_reasons["pending uploads after recovery"] += result.pending_after_recovery
    read_replies(service, ledger)
    service.stop()

    bundle = room.work / "exports" / "final-all.bundle"
    bundle.parent.mkdir(exist_ok=True)
    exported = room.intake("export", "--all", "--out", bundle, ok=(0, 1))
    if exported.code and not result.stored:  # "nothing exported": nothing to decrypt either
        result.failures.append("no submission was stored")
    elif exported.code:
        result.failures.append(f"intake export --all: {exported.err.strip()[-300:]}")
    found: dict[str, list[tuple[str, str]]] = {}
    for name in JOURNALISTS:
        out = room.laptop / f"final-{name}"
        if exported.code:
            out.mkdir(parents=True, exist_ok=True)
        elif journalist.decrypt(bundle, out, name) == 3:
            result.partial_reasons[f"items {name} could not decrypt"] += 1
        found[name] = [(kind, digest) for kind, digest, _ in decrypted_items(out)]
        result.decrypted[name] = len(found[name])

    seen = Counter(found[JOURNALISTS[0]])
    if any(count > 1 for count in seen.values()):
        result.partial_reasons["an item stored twice"] += sum(count - 1 for count in seen.values() if count > 1)
    if Counter(found[JOURNALISTS[1]]) != seen:
        result.partial_reasons["the journalists decrypted different items"] += 1
    sent_keys: set[tuple[str, str]] = set()
    for request in ledger.sent:
        keys = set(request.parts)
        sent_keys |= keys
        present = keys & seen.keys()
        if request.acknowledged:
            result.acknowledged_requests += 1
            result.acknowledged_parts += len(keys)
            result.lost += len(keys - present)
        elif present == keys:
            result.unacknowledged_but_complete += 1
        elif present:
            stored = [part in seen for part in request.parts]  # in the order sent: message, then files
            if stored == sorted(stored, reverse=True):
                result.unacknowledged_first_parts += 1
            else:
                result.partial_reasons["an unacknowledged request stored out of order"] += 1
    result.partial_reasons["an item nobody sent"] += len(seen.keys() - sent_keys)
    result.partial_reasons["exports during the run with damaged items"] += ledger.damaged_during_run
    result.partial_reasons["items nobody sent in exports during the run"] += ledger.unknown_during_run
    result.partial_reasons += Counter()  # drops the zero counts
    result.partial = sum(result.partial_reasons.values())

    result.replies_imported = len(ledger.replies_imported)
    result.replies_read = len(ledger.replies_read & ledger.replies_imported.keys())
    result.replies_missing = result.replies_imported - result.replies_read

    check = room.intake("check", ok=(0, 1))
    result.check = (check.out + check.err).strip().splitlines()[-1] if (check.out + check.err).strip() else ""
    result.check_clean = check.code == 0 and "intact" in check.out
    return result
