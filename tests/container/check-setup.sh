#!/bin/bash
# Runs inside a booted Debian container (tests/test_deploy_container.py), as the unit
# intake-test.service: deploy/setup-debian.sh on a fresh Debian, then what it set up must run.
# Each check appends "ok NAME" or "FAIL NAME" to /results/verdict; everything else goes to
# /results/log. The container has loopback only: tor cannot reach any Tor network.
set -u
exec >/results/log 2>&1
set -x

check() {
    local name=$1
    shift
    if "$@"; then echo "ok $name" >>/results/verdict; else echo "FAIL $name" >>/results/verdict; fi
}

active() { systemctl is-active --quiet "$1"; }

wait_active() {
    for _ in $(seq 60); do active "$1" && return 0; sleep 1; done
    systemctl status --no-pager "$1"
    return 1
}

# GET / from the source interface, where tor's torrc service sends it (a loopback port or a
# unix socket: whatever deploy/torrc's HiddenServicePort line says).
serves() {
    python3 - <<'PY'
import http.client, re, socket, sys, time
target = re.search(r"^HiddenServicePort 80 (\S+)", open("/etc/tor/torrc").read(), re.M).group(1)

class UnixConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(target[len("unix:"):].strip('"'))

for _ in range(60):
    try:
        if target.startswith("unix:"):
            connection = UnixConnection("localhost", timeout=10)
        else:
            host, port = target.rsplit(":", 1)
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("GET", "/")
        response = connection.getresponse()
        body = response.read()
        print("GET / ->", response.status, len(body), "bytes")
        sys.exit(0 if response.status == 200 and b"</html>" in body else 1)
    except OSError as error:
        print("not yet:", error)
        time.sleep(1)
sys.exit(1)
PY
}

tor_runs_unprivileged() {
    local pid
    pid=$(systemctl show -p MainPID --value tor@default)
    grep -E "^Uid:\s+$(id -u debian-tor)\s" "/proc/$pid/status" && grep -E "^CapEff:\s+0+$" "/proc/$pid/status"
}

# tor publishes the source service from deploy/torrc with intake's own key: its hostname is
# the source address intake announces.
same_source_address() {
    local hostname
    for _ in $(seq 30); do [ -s /var/lib/tor/intake-source/hostname ] && break; sleep 1; done
    hostname=$(cat /var/lib/tor/intake-source/hostname) || return 1
    # intake prints its address once it has attached to tor, which may come after "active".
    for _ in $(seq 30); do
        journalctl --namespace=intake -u intake --no-pager | grep -qF "http://$hostname/" && return 0
        sleep 1
    done
    return 1
}

# intake's own output is in its journald namespace, in memory (/run/log/journal), and not in the
# system journal, which this container keeps on disk (/var/log/journal, made before the setup).
log_in_memory_only() {
    journalctl --namespace=intake -u intake --no-pager | grep -qF "http://" || return 1
    ! journalctl -u intake --no-pager | grep -F "http://" || return 1
    compgen -G "/run/log/journal/*.intake/*.journal" >/dev/null || return 1
    ls -laR /var/log/journal /run/log/journal
    ! compgen -G "/var/log/journal/*.intake/*.journal*" >/dev/null || return 1
    compgen -G "/var/log/journal/*/system.journal" >/dev/null  # the system journal is on disk here
}

key_stays_out_of_the_data_dir() {
    [ ! -e /var/lib/intake/db.key ] && [ -s /var/lib/intake/db-key.recovery ] \
        && [ "$(stat -c '%U %a' /var/lib/intake/db-key.recovery)" = "intake 600" ]
}

exposure_at_most_2() {
    local score
    score=$(systemd-analyze security --no-pager "$1" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    echo "$1: $score"
    [ -n "$score" ] && python3 -c "import sys; sys.exit(0 if float('$score') <= 2.0 else 1)"
}

reload_keeps_tor() {
    local before
    before=$(systemctl show -p MainPID --value tor@default)
    systemctl reload tor@default || return 1
    sleep 5
    active tor@default && [ "$(systemctl show -p MainPID --value tor@default)" = "$before" ]
}

# A backup would succeed here without the refusal, and be lost with intake-admin's private /tmp.
admin_refuses_private_tmp() {
    local said status
    said=$(/usr/local/sbin/intake-admin backup --out /tmp/x.backup 2>&1) && status=0 || status=$?
    [ "$status" -eq 2 ] && printf '%s' "$said" | grep -q "private temporary folder"
}

# A source key that may have leaked (docs/operator.md): stop intake, delete the key, run the script
# again. tor's copy of the old key in its service folder is replaced (it would go on publishing the
# leaked address), tor publishes the new address, and intake announces that one.
new_address_after_a_leak() {
    local old
    old=$(cat /var/lib/tor/intake-source/hostname) || return 1
    cp /var/lib/intake/onion/source.key /root/leaked-source.key || return 1
    systemctl stop intake || return 1
    rm /var/lib/intake/onion/source.key || return 1
    /src/deploy/setup-debian.sh || return 1
    for _ in $(seq 30); do [ -s /var/lib/tor/intake-source/hostname ] && break; sleep 1; done
    [ "$(cat /var/lib/tor/intake-source/hostname)" != "$old" ] || return 1
    ! cmp -s /root/leaked-source.key /var/lib/tor/intake-source/hs_ed25519_secret_key || return 1
    ! grep -rqsF "${old%.onion}" /var/lib/tor/intake-source/ || return 1
    rm /root/leaked-source.key
    wait_active intake && same_source_address
}

# A persistent system journal, as many servers have: intake's log must still stay off the disk.
mkdir -p /var/log/journal && systemctl restart systemd-journald && journalctl --flush
check first-run /src/deploy/setup-debian.sh --yes /keys/alice.public
check intake-active wait_active intake
check tor-active wait_active tor@default
check tor-unprivileged tor_runs_unprivileged
check serves serves
check same-source-address same_source_address
check log-in-memory-only log_in_memory_only
check admin-status /usr/local/sbin/intake-admin status
check admin-refuses-private-tmp admin_refuses_private_tmp
check key-recovery key_stays_out_of_the_data_dir
check reset-login bash -c '/usr/local/sbin/intake-admin journalist reset-login --name alice | grep -q "Login passphrase"'
check tor-exposure exposure_at_most_2 tor@default.service
check intake-exposure exposure_at_most_2 intake.service
check tor-survives-reload reload_keeps_tor
check intake-reload bash -c 'systemctl reload intake && sleep 2 && systemctl is-active --quiet intake'
check second-run /src/deploy/setup-debian.sh
check intake-active-again wait_active intake
check serves-again serves
check new-address-after-a-leak new_address_after_a_leak

# Another machine: every trace of this instance goes (data dir, credential, this host's
# credential key, tor's copy of the source key) but a backup; a journalist recovers the
# database key from the backup's db-key.recovery on the laptop; --restore brings it all back.
source_address=$(cat /var/lib/tor/intake-source/hostname)
install -d -o intake -g intake -m 0700 /var/backups/intake
check backup /usr/local/sbin/intake-admin backup --out /var/backups/intake/intake.backup
systemctl stop intake tor@default
cp /var/backups/intake/intake.backup /root/intake.backup
rm -rf /var/lib/intake /etc/intake /var/lib/tor/intake-source /var/lib/systemd/credential.secret /var/backups/intake
mkdir -p /root/laptop /root/usb
tar -xf /root/intake.backup -C /root/laptop db-key.recovery
check recover-db-key /opt/intake/.venv/bin/intake-keys recover-db-key /root/laptop/db-key.recovery \
    --key /keys/alice.secret --passphrase-file /keys/passphrase --out /root/usb/db.key
check restore-run /src/deploy/setup-debian.sh --restore /root/intake.backup /root/usb/db.key
check restored-intake-active wait_active intake
check restored-serves serves
check restored-same-source-address same_source_address
check restored-same-address bash -c "[ \"\$(cat /var/lib/tor/intake-source/hostname)\" = '$source_address' ]"
check restored-store bash -c '/usr/local/sbin/intake-admin status | grep -qx "journalists: 1"'
check restored-key-stays-out key_stays_out_of_the_data_dir

journalctl --namespace=intake -u intake --no-pager | tail -40
journalctl -u intake -u tor@default --no-pager | tail -60
echo finished >>/results/verdict
