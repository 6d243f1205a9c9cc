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
pid=""
embedded_pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  [ -n "$embedded_pid" ] && kill "$embedded_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
npm install --silent --no-audit --no-fund --prefix "$work/npm" playwright-core@1 >/dev/null

cargo build --quiet
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
admin_token="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
env -u STRIPE_SECRET_KEY -u STRIPE_WEBHOOK_SECRET -u DATABASE_URL -u SMTP_URL \
  BIND="127.0.0.1:$port" PUBLIC_URL="$base" CATALOG=catalog.toml \
  DATABASE_URL="sqlite://$work/shop.db" MAIL_DIR="$work/mail" RUST_LOG=warn \
  ADMIN_TOKEN="$admin_token" \
  "${CARGO_TARGET_DIR:-target}/debug/fulfilld" >"$work/fulfilld.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

session="$(NODE_PATH="$work/npm/node_modules" node tests/browser/shop.cjs "$base" "$shots")" || {
  echo "browser test failed; fulfilld's log:" >&2
  cat "$work/fulfilld.log" >&2
  exit 1
}
for _ in $(seq 1 100); do
  [ -f "$work/mail/$session.receipt.eml" ] && break
  sleep 0.1
done
[ -f "$work/mail/$session.receipt.eml" ] || { echo "no receipt for $session" >&2; exit 1; }
NODE_PATH="$work/npm/node_modules" node tests/browser/admin.cjs "$base" "$admin_token" "$session" "$shots" || {
  echo "admin browser test failed; fulfilld's log:" >&2
  cat "$work/fulfilld.log" >&2
  exit 1
}
NODE_PATH="$work/npm/node_modules" node tests/browser/refund.cjs "$base" "$session" "$shots" || {
  echo "refund browser test failed; fulfilld's log:" >&2
  cat "$work/fulfilld.log" >&2
  exit 1
}
for _ in $(seq 1 100); do
  [ -f "$work/mail/$session.refund_email.eml" ] && break
  sleep 0.1
done
[ -f "$work/mail/$session.refund_email.eml" ] || { echo "no refund email for $session" >&2; exit 1; }

# The same shop with CHECKOUT_UI=embedded, and one mug left: Stripe's form mounted in the
# shop's page, then the mug sold out.
mkdir -p "$work/embedded"
sed 's/^stock = 10$/stock = 1/' catalog.toml >"$work/embedded/catalog.toml"
grep -q '^stock = 1$' "$work/embedded/catalog.toml" || { echo "the mug's stock line moved" >&2; exit 1; }
embedded_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
embedded_base="http://127.0.0.1:$embedded_port"
env -u STRIPE_SECRET_KEY -u STRIPE_WEBHOOK_SECRET -u DATABASE_URL -u SMTP_URL \
  BIND="127.0.0.1:$embedded_port" PUBLIC_URL="$embedded_base" CATALOG="$work/embedded/catalog.toml" \
  DATABASE_URL="sqlite://$work/embedded/shop.db" MAIL_DIR="$work/embedded/mail" RUST_LOG=warn \
  CHECKOUT_UI=embedded \
  "${CARGO_TARGET_DIR:-target}/debug/fulfilld" >"$work/embedded/fulfilld.log" 2>&1 &
embedded_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$embedded_base/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
embedded="$(NODE_PATH="$work/npm/node_modules" node tests/browser/embedded.cjs "$embedded_base" "$shots")" || {
  echo "embedded browser test failed; fulfilld's log:" >&2
  cat "$work/embedded/fulfilld.log" >&2
  exit 1
}
for _ in $(seq 1 100); do
  [ -f "$work/embedded/mail/$embedded.receipt.eml" ] && break
  sleep 0.1
done
[ -f "$work/embedded/mail/$embedded.receipt.eml" ] || { echo "no receipt for $embedded" >&2; exit 1; }

echo "browser test passed: $session fulfilled, receipt saved, found on /admin, refunded, refund email saved; embedded form: $embedded fulfilled, receipt saved, sold out shown${shots:+, screenshots in $shots}"
