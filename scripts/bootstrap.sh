#!/usr/bin/env bash
# Install posture on Debian or Ubuntu, as root: system packages, a virtualenv in .venv, the package.
#   scripts/bootstrap.sh          nmap + posture
#   scripts/bootstrap.sh --demo   also the demo lab: sshd, nginx, vsftpd, snmpsim and its device recordings
#   scripts/bootstrap.sh --dev    also what the tests and benchmarks use: snmpd, the net-snmp tools, samba (smbd
#                                 for the SMB host-script test; the AD DC for the directory tests, with the three
#                                 packages samba only recommends: its schema files, LDB and VFS modules),
#                                 ldap-utils (bench floor), chromium, LibreOffice Writer and poppler (documents
#                                 rendered to PDF and read back), postgresql (the tests start their own server:
#                                 scanner/lab.py PostgresLab), dev tools
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
demo=0
case "${1:-}" in
  --dev) dev=1; demo=1 ;;
  --demo) demo=1 ;;
  "") ;;
  *) echo "usage: scripts/bootstrap.sh [--demo|--dev]" >&2; exit 2 ;;
esac

python=${PYTHON:-python3}
packages=(nmap)
command -v "$python" >/dev/null 2>&1 || packages+=(python3)
"$python" -c 'import venv, ensurepip' >/dev/null 2>&1 || packages+=(python3-venv python3-pip)
if [ "$demo" = 1 ]; then
  packages+=(openssh-server openssh-client nginx-light vsftpd)
fi
if [ "$dev" = 1 ]; then
  packages+=(snmpd snmp samba samba-ad-provision samba-dsdb-modules samba-vfs-modules ldap-utils iproute2 procps
             util-linux chromium fonts-dejavu-core libreoffice-writer-nogui poppler-utils groff-base postgresql)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: these Debian packages are missing: ${missing[*]}; run as root (or sudo) to install them" >&2
    exit 2
  fi
  echo "bootstrap: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$dev" = 1 ]; then
  .venv/bin/python -m pip install -q -e '.[dev]'
elif [ "$demo" = 1 ]; then
  .venv/bin/python -m pip install -q '.[demo]'
else
  .venv/bin/python -m pip install -q .
fi
echo "bootstrap: posture installed in $(pwd)/.venv (run .venv/bin/posture --help)" >&2
