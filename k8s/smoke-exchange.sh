#!/usr/bin/env bash
# One full authorization-code exchange against the TikTok sandbox, the way Auth0 makes it:
# mint a code at the sandbox, then POST it to the proxy's /token and expect an access token.
#
#   k8s/smoke-exchange.sh [PROXY_URL] [SANDBOX_URL]
#
# PROXY_URL defaults to http://localhost (the kind cluster's ingress) and SANDBOX_URL to
# http://localhost:9400 (the sandbox port that Tilt forwards). The app's credentials and the
# redirect URI default to the sandbox's development ones and can be changed with SMOKE_CLIENT_KEY,
# SMOKE_CLIENT_SECRET and SMOKE_REDIRECT_URI. Tokens are never printed.
set -euo pipefail

proxy_url=${1:-http://localhost}
sandbox_url=${2:-http://localhost:9400}
client_key=${SMOKE_CLIENT_KEY:-sandbox-client-key}
client_secret=${SMOKE_CLIENT_SECRET:-sandbox-client-secret}
redirect_uri=${SMOKE_REDIRECT_URI:-https://sandbox.auth0.example/login/callback}

body=$(mktemp)
trap 'rm -f "$body"' EXIT

fail() {
  echo "smoke-exchange: $*" >&2
  exit 1
}

# Value of a top-level string field in a flat JSON object; enough for the sandbox's and the
# proxy's answers, and keeps the script free of jq.
json_string() {
  sed -n 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$2"
}

status=$(curl -sS --max-time 10 -o "$body" -w '%{http_code}' -X POST \
  --data-urlencode "client_key=$client_key" \
  --data-urlencode "redirect_uri=$redirect_uri" \
  "$sandbox_url/sandbox/codes") || fail "cannot reach the sandbox at $sandbox_url"
[ "$status" = 200 ] || fail "sandbox answered $status to POST /sandbox/codes: $(cat "$body")"
code=$(json_string code "$body")
[ -n "$code" ] || fail "sandbox answer has no code: $(cat "$body")"

# Form-encoded with the credentials in the body, as Auth0 sends them; each value is encoded
# exactly once because codes contain characters such as '*' and '!'.
status=$(curl -sS --max-time 20 -o "$body" -w '%{http_code}' -X POST \
  --data-urlencode "grant_type=authorization_code" \
  --data-urlencode "client_id=$client_key" \
  --data-urlencode "client_secret=$client_secret" \
  --data-urlencode "code=$code" \
  --data-urlencode "redirect_uri=$redirect_uri" \
  "$proxy_url/token") || fail "cannot reach the proxy at $proxy_url"
if [ "$status" != 200 ]; then
  # Error answers carry no token, so they are safe to show.
  fail "POST $proxy_url/token answered $status: $(cat "$body")"
fi
[ -n "$(json_string access_token "$body")" ] \
  || fail "POST $proxy_url/token answered 200 without an access_token"

echo "smoke-exchange: $proxy_url/token exchanged a sandbox code for an access token" \
  "(token_type $(json_string token_type "$body"), open_id $(json_string open_id "$body"))"
