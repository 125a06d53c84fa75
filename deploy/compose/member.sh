#!/bin/sh
# One control-plane member of the compose example (docker-compose.yml): `ui up --no-node`
# (the apiserver and every controller; the controllers elect one leader each), with its
# metrics on METRICS_PORT for Prometheus.
#
# The member named FOUNDER founds the cluster and lets the others in: each other member makes
# its key, asks through the shared directory to be added (its did, transport address and API
# URL), waits until the founder has run `ui cluster add` for it, then joins. A restarted member
# resumes from its data dir. tests/observability.rs runs this script as three processes.
set -eu
# A stop before `ui up` runs (this script is the container's first process) ends it at once.
trap 'exit 143' TERM INT

UI="${UI:-ui}"
NAME="${NAME:?set NAME: this member's name}"
FOUNDER="${FOUNDER:?set FOUNDER: the name of the member that founds the cluster}"
DATA="${DATA:-/data}"
SHARED="${SHARED:-/shared}"
# The address the other members reach this one at (the container's own, by default).
HOST="${HOST:-$(hostname -i | cut -d' ' -f1)}"
LISTEN_IP="${LISTEN_IP:-0.0.0.0}"
API_PORT="${API_PORT:-6443}"
PEER_PORT="${PEER_PORT:-7000}"
METRICS_PORT="${METRICS_PORT:-9091}"
# The name clients use for this member's API (it is in the server certificate).
API_HOST="${API_HOST:-$NAME}"
export UNIVRS_CONFIG_DIR="${UNIVRS_CONFIG_DIR:-$DATA/config}"

mkdir -p "$SHARED/requests"
did=$("$UI" cluster member-key --data-dir "$DATA")
peer="$HOST:$PEER_PORT"
echo "member $NAME: $did at $peer"

set -- up --no-node --data-dir "$DATA" --kubeconfig "$DATA/kubeconfig" \
  --listen "$LISTEN_IP:$API_PORT" --tls-san "$API_HOST" --tls-san "$HOST" \
  --peer-listen "$LISTEN_IP:$PEER_PORT" --peer-advertise "$peer" \
  --metrics-addr "$LISTEN_IP:$METRICS_PORT"

if [ "$NAME" = "$FOUNDER" ]; then
  echo "$did@$peer" > "$SHARED/founder.tmp" && mv "$SHARED/founder.tmp" "$SHARED/founder"
else
  request="$SHARED/requests/$NAME"
  if [ ! -e "$request.added" ]; then
    echo "$did $peer https://$API_HOST:$API_PORT" > "$request.tmp" && mv "$request.tmp" "$request"
    echo "member $NAME: waiting for $FOUNDER to add it"
    until [ -e "$request.added" ]; do sleep 1; done
  fi
  set -- "$@" --join "$(cat "$SHARED/founder")"
fi

"$UI" "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' TERM INT

if [ "$NAME" = "$FOUNDER" ]; then
  # Adds each member that asked, once this member's own kubeconfig (as the member) exists.
  while kill -0 "$pid" 2>/dev/null; do
    for r in "$SHARED"/requests/*; do
      case "$r" in *.added | *.tmp | *'*') continue ;; esac
      [ -e "$r.added" ] && continue
      [ -e "$DATA/member.kubeconfig" ] || break
      read -r rdid rpeer rapi < "$r"
      if "$UI" cluster add "$rdid" "$rpeer" --api "$rapi" --kubeconfig "$DATA/member.kubeconfig"; then
        touch "$r.added"
      fi
    done
    sleep 1
  done
fi

# Waits for `ui up` (again after a signal interrupted the wait: the trap forwarded it).
status=0
wait "$pid" || status=$?
if kill -0 "$pid" 2>/dev/null; then
  wait "$pid" || status=$?
fi
exit "$status"
