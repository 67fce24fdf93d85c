# Shared by the bench scripts: a throwaway nginx on loopback serving a static answer, and
# `scimrun sandbox` started in the background.
# Usage: source bench/lib.sh; start_nginx; ... "$NGINX_URL" ...; stop_nginx
#        start_sandbox OUT ERR [ARGS...] || exit 1; ... "$BASE" ...; kill "$SB_PID"
start_nginx() {
  NGINX_DIR=$(mktemp -d)
  NGINX_PORT=${NGINX_PORT:-18$((RANDOM % 900 + 100))}
  cat >"$NGINX_DIR/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $NGINX_DIR;
  proxy_temp_path $NGINX_DIR;
  fastcgi_temp_path $NGINX_DIR;
  uwsgi_temp_path $NGINX_DIR;
  scgi_temp_path $NGINX_DIR;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { default_type application/json; return 200 '{"ok":true}'; }
  }
}
CONF
  nginx -c "$NGINX_DIR/nginx.conf" -p "$NGINX_DIR"
  NGINX_URL="http://127.0.0.1:$NGINX_PORT/"
  for _ in $(seq 50); do curl -fsS "$NGINX_URL" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "nginx did not start: $(cat "$NGINX_DIR/error.log")" >&2
  return 1
}

stop_nginx() {
  [ -f "$NGINX_DIR/nginx.pid" ] && kill "$(cat "$NGINX_DIR/nginx.pid")" 2>/dev/null || true
  rm -rf "$NGINX_DIR"
}

# wrk_rps URL CONNECTIONS SECONDS -> requests/s
wrk_rps() {
  wrk -t1 -c"$2" -d"${3:-3}s" "$1" | awk '/Requests\/sec/ {print $2}'
}

# start_sandbox OUT ERR [ARGS...]: starts `$BIN sandbox --port 0 --quiet ARGS` in the background
# (stdout to OUT, stderr to ERR; the same file for both when ERR is OUT) and waits up to 10 s
# for the `url:` line of its banner. Sets SB_PID and BASE (its .../scim/v2 URL); returns 1, with
# what it wrote to ERR, when no URL appears.
start_sandbox() {
  local out=$1 err=$2
  shift 2
  if [ "$err" = "$out" ]; then
    "$BIN" sandbox --port 0 --quiet "$@" >"$out" 2>&1 &
  else
    "$BIN" sandbox --port 0 --quiet "$@" >"$out" 2>"$err" &
  fi
  SB_PID=$!
  BASE=
  for _ in $(seq 200); do
    BASE=$(awk '/url:/ { print $2 }' "$out" 2>/dev/null)
    [ -n "$BASE" ] && return 0
    sleep 0.05
  done
  echo "the sandbox did not start: $(cat "$err")" >&2
  return 1
}
