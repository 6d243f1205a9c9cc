#!/usr/bin/env bash
# The headless-Chromium test: a real browser buys a T-shirt in the sandbox storefront, pays
# on the hosted checkout and reaches the fulfilled landing page; the receipt must follow.
# Then an operator signs in to /admin, finds that order and refunds part of it, and the rest
# is refunded with the sandbox's button: the landing page shows it and the refund email
# follows. Last, a shop with CHECKOUT_UI=embedded sells its last mug through Stripe's
# form mounted in its own page, and shows it sold out.
# Usage: tests/browser/run.sh [SCREENSHOT_DIR]   (tests/browser/run.sh docs refreshes the
# README's screenshots)
set -euo pipefail
cd "$(dirname "$0")/../.."
shots="${1:-}"
[ -n "$shots" ] && shots="$(mkdir -p "$shots" && cd "$shots" && pwd)"

if ! command -v chromium >/dev/null; then
  echo "installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
fi

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
npm install --silent --no-audit --no-fund --prefix "$work/npm" playwright-core@1 >/dev/null

cargo build --quiet

# Starts a sandbox fulfilld on a free port, its database, mail and log under DIR, with
# the settings that follow; its address goes to $base.
start_shop() {
  local dir="$1"
  shift
  mkdir -p "$dir"
  local port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  base="http://127.0.0.1:$port"
  env -u STRIPE_SECRET_KEY -u STRIPE_WEBHOOK_SECRET -u DATABASE_URL -u SMTP_URL \
    BIND="127.0.0.1:$port" PUBLIC_URL="$base" CATALOG=catalog.toml \
    DATABASE_URL="sqlite://$dir/shop.db" MAIL_DIR="$dir/mail" RUST_LOG=warn "$@" \
    "${CARGO_TARGET_DIR:-target}/debug/fulfilld" >"$dir/fulfilld.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do
    curl -fsS "$base/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
}

# Runs one of the browser scripts; on failure, shows the log of the fulfilld under DIR.
browse() {
  local dir="$1" script="$2"
  shift 2
  NODE_PATH="$work/npm/node_modules" node "tests/browser/$script" "$@" || {
    echo "$script failed; fulfilld's log:" >&2
    cat "$dir/fulfilld.log" >&2
    exit 1
  }
}

# Waits for FILE, the email a test expects.
await_mail() {
  for _ in $(seq 1 100); do
    [ -f "$1" ] && return 0
    sleep 0.1
  done
  echo "no email $1" >&2
  exit 1
}

admin_token="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
start_shop "$work/hosted" ADMIN_TOKEN="$admin_token"
session="$(browse "$work/hosted" shop.cjs "$base" "$shots")"
await_mail "$work/hosted/mail/$session.receipt.eml"
browse "$work/hosted" admin.cjs "$base" "$admin_token" "$session" "$shots"
browse "$work/hosted" refund.cjs "$base" "$session" "$shots"
await_mail "$work/hosted/mail/$session.refund_email.eml"

# The same shop with CHECKOUT_UI=embedded, and one mug left: Stripe's form mounted in the
# shop's page, then the mug sold out.
mkdir -p "$work/embedded"
sed 's/^stock = 10$/stock = 1/' catalog.toml >"$work/embedded/catalog.toml"
grep -q '^stock = 1$' "$work/embedded/catalog.toml" || { echo "the mug's stock line moved" >&2; exit 1; }
start_shop "$work/embedded" CHECKOUT_UI=embedded CATALOG="$work/embedded/catalog.toml"
embedded="$(browse "$work/embedded" embedded.cjs "$base" "$shots")"
await_mail "$work/embedded/mail/$embedded.receipt.eml"

echo "browser test passed: $session fulfilled, receipt saved, found on /admin, refunded, refund email saved; embedded form: $embedded fulfilled, receipt saved, sold out shown${shots:+, screenshots in $shots}"
