#!/usr/bin/env bash
# Sets up (or updates) intake on a Debian server, as root, from this source tree:
#
#   deploy/setup-debian.sh [--yes] JOURNALIST.public [MORE.public ...]
#   deploy/setup-debian.sh --restore BACKUP KEY_FILE
#
# The first run needs at least one journalist public key (made with `intake-keys generate`
# on the air-gapped laptop); later runs take none, or new ones to register. Running it
# again is safe: it only adds what is missing and updates the installed code and configs.
# It shows each new journalist key's fingerprint and asks you to confirm that the journalist
# reads the same one on their laptop; --yes says you have already checked them.
# --restore sets up a new server from `intake backup`'s file instead, with the database key
# a journalist recovered with `intake-keys recover-db-key` (docs/operator.md, "Backups and
# recovery"): same onion addresses, every submission.
#
# What it does (docs/operator.md, "Setting up a Debian server"):
#   1. apt-get install tor python3-venv (only if missing)
#   2. system user and group `intake`
#   3. this tree -> /opt/intake (root-owned, read-only for intake), venv /opt/intake/.venv
#   4. the database key: made once, piped straight into `systemd-creds encrypt`; only the
#      encrypted credential /etc/intake/db-key.cred is ever written (the plaintext never
#      touches the disk: intake reads it from systemd's credentials directory, in memory)
#   5. /usr/local/sbin/intake-admin (deploy/intake-admin: intake commands run by systemd as
#      user intake with that credential), and with it `intake restore` (--restore) and
#      `intake init` in /var/lib/intake
#   6. deploy/torrc -> /etc/tor/torrc, and intake's source onion key into tor's
#      HiddenServiceDir, so tor's own source service has intake's address; intake's sockets
#      added to Debian's AppArmor profile for tor (deploy/apparmor-system_tor); the hardening
#      drop-in deploy/tor-hardening.conf for tor@default.service; restart tor
#   7. deploy/intake.service -> /etc/systemd/system, enable and (re)start it; its log in a
#      journald namespace kept in memory only (deploy/journald@intake.conf)
#
# Needs systemd (systemd-creds, systemd-run) and network access to Debian and PyPI.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=/opt/intake
DATA=/var/lib/intake
ETC=/etc/intake
CRED="$ETC/db-key.cred"
TOR_HS_DIR=/var/lib/tor/intake-source
TORRC=/etc/tor/torrc
TOR_DEFAULTS=/usr/share/tor/tor-service-defaults-torrc
TOR_DROPIN=/etc/systemd/system/tor@default.service.d/intake-hardening.conf
UNIT=/etc/systemd/system/intake.service
JOURNALD_CONF=/etc/systemd/journald@intake.conf
# Runs intake commands as the service does (user intake, the key from the credential).
ADMIN=/usr/local/sbin/intake-admin

say() { printf 'setup-debian: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run this as root"
[ -d /run/systemd/system ] || die "systemd is not running here: intake's unit and credentials need it"
restore_backup=""
restore_key=""
fingerprints_checked=""
if [ "${1:-}" = "--yes" ]; then
    fingerprints_checked=1
    shift
fi
if [ "${1:-}" = "--restore" ]; then
    [ $# -eq 3 ] || die "usage: $0 --restore BACKUP KEY_FILE"
    restore_backup=$2
    restore_key=$3
    shift 3
    [ -f "$restore_backup" ] || die "no such backup file: $restore_backup"
    [ -f "$restore_key" ] || die "no such key file: $restore_key"
    [ ! -e "$DATA/intake.db" ] || die "$DATA holds an instance already: restore on a new server"
fi
for key in "$@"; do
    [ -f "$key" ] || die "no such public key file: $key"
done

# 1. Debian packages.
missing=()
for pkg in tor python3-venv; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The service user: no shell, no home of its own but the data dir.
if ! getent passwd intake >/dev/null; then
    say "creating system user intake"
    adduser --system --group --home "$DATA" --no-create-home --shell /usr/sbin/nologin intake >/dev/null
fi

# 3. The code: a copy of this tree (without its venv, git data or demo), and a venv.
# Installed editable because intake finds deploy/gunicorn.conf.py beside its package.
if [ "$SRC" != "$PREFIX" ]; then
    say "installing the code into $PREFIX"
    install -d -o root -g root -m 0755 "$PREFIX"
    find "$PREFIX" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
    tar -C "$SRC" --exclude=./.venv --exclude=./.git --exclude=./demo --exclude='*.pyc' -cf - . \
        | tar -C "$PREFIX" --no-same-owner -xf -
    chmod -R u=rwX,go=rX "$PREFIX"
fi
[ -x "$PREFIX/.venv/bin/python" ] || python3 -m venv "$PREFIX/.venv"
"$PREFIX/.venv/bin/python" -m pip install -q --require-hashes -r "$PREFIX/requirements/build.txt"
"$PREFIX/.venv/bin/python" -m pip install -q --require-hashes --no-build-isolation -r "$PREFIX/requirements/runtime.txt"
"$PREFIX/.venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$PREFIX"

# 4. The database key, only ever as an encrypted systemd credential (TPM2 if there is one,
# else the host key in /var/lib/systemd/credential.secret). $ETC is root's, but group intake
# may enter it: `intake init` runs as intake and reads the journalists' public keys in
# $ETC/journalists; the credential itself stays root-only (0600).
install -d -o root -g intake -m 0750 "$ETC"
if [ -n "$restore_backup" ] || [ ! -f "$CRED" ]; then
    if [ -n "$restore_backup" ]; then
        say "sealing the recovered database key as the encrypted credential $CRED"
        systemd-creds encrypt --name=intake-db-key "$restore_key" "$CRED.new"
    else
        say "making the database key as the encrypted credential $CRED"
        "$PREFIX/.venv/bin/python" -c 'import secrets; print(secrets.token_hex(32))' \
            | systemd-creds encrypt --name=intake-db-key - "$CRED.new"
    fi
    chmod 0600 "$CRED.new"
    mv "$CRED.new" "$CRED"
fi

# 5. The data dir and its database, the way the service will open it: systemd decrypts the
# credential into a private in-memory directory and sets $CREDENTIALS_DIRECTORY.
install -d -o intake -g intake -m 0700 "$DATA"
install -o root -g root -m 0755 "$PREFIX/deploy/intake-admin" "$ADMIN"
if [ -n "$restore_backup" ]; then
    # intake restore runs as user intake, which may read this copy of the backup (and no other).
    install -o root -g intake -m 0640 "$restore_backup" "$ETC/restore.backup"
    say "intake restore into $DATA"
    "$ADMIN" restore "$ETC/restore.backup" --data "$DATA"
    rm -f "$ETC/restore.backup"
fi
journalist_args=()
if [ $# -gt 0 ]; then
    install -d -o root -g intake -m 0750 "$ETC/journalists"
    for key in "$@"; do
        copy="$ETC/journalists/$(basename "$key")"
        install -o root -g root -m 0644 "$key" "$copy"
        journalist_args+=(--journalist-key "$copy")
    done
fi
if [ ${#journalist_args[@]} -gt 0 ] && [ -z "$fingerprints_checked" ]; then
    # intake init runs under systemd-run, with no terminal to ask on: ask here.
    for key in "$@"; do
        say "fingerprint of $(basename "$key"): $("$PREFIX/.venv/bin/intake-keys" fingerprint "$key")"
    done
    [ -t 0 ] || die "cannot ask to confirm the fingerprints without a terminal: check them, then run again with --yes"
    read -r -p "Does each journalist read the same fingerprint on their laptop? [y/N] " answer
    case "$answer" in [yY]*) ;; *) die "stopped: nothing was registered" ;; esac
fi
say "intake init --data $DATA"
"$ADMIN" init --yes --data "$DATA" "${journalist_args[@]}"

# 6. The system tor: intake's torrc, and intake's source key for its source service.
if [ -f "$TORRC" ] && ! cmp -s "$TORRC" "$PREFIX/deploy/torrc" && [ ! -f "$TORRC.before-intake" ]; then
    cp -p "$TORRC" "$TORRC.before-intake"
    say "kept the previous $TORRC as $TORRC.before-intake"
fi
install -o root -g root -m 0644 "$PREFIX/deploy/torrc" "$TORRC"
install -d -o debian-tor -g debian-tor -m 0700 "$TOR_HS_DIR"
if ! cmp -s "$DATA/onion/source.key" "$TOR_HS_DIR/hs_ed25519_secret_key"; then
    # tor derives the rest (public key, hostname) from the secret key; stale copies would disagree.
    rm -f "$TOR_HS_DIR/hs_ed25519_public_key" "$TOR_HS_DIR/hostname"
    install -o debian-tor -g debian-tor -m 0600 "$DATA/onion/source.key" "$TOR_HS_DIR/hs_ed25519_secret_key"
fi
tor --defaults-torrc "$TOR_DEFAULTS" -f "$TORRC" --verify-config >/dev/null \
    || die "tor refuses $TORRC: check it with: tor --defaults-torrc $TOR_DEFAULTS -f $TORRC --verify-config"
# Debian's AppArmor profile for tor lets it reach only the sockets deploy/apparmor-system_tor
# names; its local/ file is the site's own, so intake's lines are added to it, never replace it.
APPARMOR_LOCAL=/etc/apparmor.d/local/system_tor
if [ -f /etc/apparmor.d/system_tor ]; then
    if ! grep -qs "run/intake/source.sock" "$APPARMOR_LOCAL"; then
        install -d -o root -g root -m 0755 "$(dirname "$APPARMOR_LOCAL")"
        cat "$PREFIX/deploy/apparmor-system_tor" >>"$APPARMOR_LOCAL"
    fi
    if command -v apparmor_parser >/dev/null && [ -d /sys/kernel/security/apparmor ]; then
        apparmor_parser -r /etc/apparmor.d/system_tor || die "apparmor_parser refused /etc/apparmor.d/system_tor"
    fi
fi
# Debian's tor.service starts tor@default (the instance that reads /etc/tor/torrc); it runs
# as debian-tor with no capability under intake's drop-in.
install -d -o root -g root -m 0755 "$(dirname "$TOR_DROPIN")"
install -o root -g root -m 0644 "$PREFIX/deploy/tor-hardening.conf" "$TOR_DROPIN"
systemctl daemon-reload
systemctl enable --quiet tor
systemctl restart tor@default

# 7. intake's unit, and its journal kept in memory only (LogNamespace=intake).
install -o root -g root -m 0644 "$PREFIX/deploy/journald@intake.conf" "$JOURNALD_CONF"
install -o root -g root -m 0644 "$PREFIX/deploy/intake.service" "$UNIT"
systemctl daemon-reload
systemctl enable --quiet intake
systemctl restart intake

[ -z "$restore_key" ] || say "restored. The database key is now only in $CRED: destroy $restore_key (shred -u)"
say "done. Onion addresses: journalctl --namespace=intake -u intake | grep onion; status: systemctl status intake"
say "journalists get their logins with: intake-admin journalist reset-login --name NAME (then systemctl reload intake)"
say "now back up $DATA/onion and $DATA/db-key.recovery (docs/operator.md, \"Backups and recovery\")"
