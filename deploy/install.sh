#!/usr/bin/env bash
# Installs wamux as a systemd service on Debian/Ubuntu. Safe to run again: it
# upgrades the binary and unit and keeps the configuration and data.
#
#   sudo deploy/install.sh [path/to/wamux]     (default: target/release/wamux)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
binary="${1:-$here/../target/release/wamux}"
prefix="${WAMUX_INSTALL_PREFIX:-}"   # set for a dry run into a scratch root

if [[ ! -x "$binary" ]]; then
    echo "wamux binary not found at $binary; build it with: cargo build --release -p wamux" >&2
    exit 1
fi
if [[ -z "$prefix" && $EUID -ne 0 ]]; then
    echo "run as root (sudo $0)" >&2
    exit 1
fi

if [[ -z "$prefix" ]]; then
    if ! getent group wamux >/dev/null; then groupadd --system wamux; fi
    if ! getent passwd wamux >/dev/null; then
        useradd --system --gid wamux --home-dir /var/lib/wamux --no-create-home \
            --shell /usr/sbin/nologin wamux
    fi
fi

install -d -m 0755 "$prefix/usr/local/bin" "$prefix/etc/systemd/system" "$prefix/usr/share/doc/wamux"
install -m 0755 "$binary" "$prefix/usr/local/bin/wamux"
install -m 0644 "$here/systemd/wamux.service" "$prefix/etc/systemd/system/wamux.service"
for doc in README.md docs/operations.md docs/webhooks.md; do
    if [[ -f "$here/../$doc" ]]; then
        install -m 0644 "$here/../$doc" "$prefix/usr/share/doc/wamux/$(basename "$doc")"
    fi
done

install -d -m 0750 "$prefix/etc/wamux" "$prefix/var/lib/wamux" "$prefix/var/log/wamux"
if [[ ! -f "$prefix/etc/wamux/wamux.env" ]]; then
    # The API key is generated here once; it is never overwritten on upgrades.
    key="$(head -c 32 /dev/urandom | base64 | tr -d '/+=' | head -c 43)"
    umask 077
    cat > "$prefix/etc/wamux/wamux.env" <<CONF
# wamux settings (see README "Settings"). Restart after changes:
#   systemctl restart wamux
WAMUX_API_KEY=$key
# Public base URL of media links, e.g. https://wamux.example.com
#WAMUX_PUBLIC_URL=
WAMUX_LOG=info
# nginx on this host: believe its X-Forwarded-For/Proto/Host.
WAMUX_TRUSTED_PROXIES=127.0.0.1,::1
# Mask phone numbers in logs:
#WAMUX_LOG_MASK_PHONES=true
# Daily log files kept per name under /var/log/wamux:
#WAMUX_LOG_RETENTION=14
# Built-in HTTPS without nginx (files readable by the wamux group):
#WAMUX_TLS_CERT=/etc/wamux/tls/fullchain.pem
#WAMUX_TLS_KEY=/etc/wamux/tls/privkey.pem
# Prometheus scrape without the API key, on a private address:
#WAMUX_METRICS_LISTEN=127.0.0.1:9100
CONF
    echo "Generated an API key in /etc/wamux/wamux.env"
fi

if [[ -z "$prefix" ]]; then
    chown -R wamux:wamux /var/lib/wamux /var/log/wamux
    chown root:wamux /etc/wamux /etc/wamux/wamux.env
    chmod 0640 /etc/wamux/wamux.env
    if [[ -d /run/systemd/system ]]; then
        systemctl daemon-reload
        systemctl enable wamux.service
        systemctl restart wamux.service
        systemctl --no-pager status wamux.service || true
    else
        echo "systemd is not running here; start wamux with: systemctl start wamux"
    fi
fi
echo "wamux installed."
