#!/bin/bash
# Starts a private RabbitMQ, PostgreSQL, stock mock and TCP proxy under $BASE (default
# /tmp/indep-events); `env.sh stop` stops exactly those processes (by the pids recorded).
BASE=${BASE:-/tmp/indep-events}
HERE=$(cd "$(dirname "$0")" && pwd)
RMQ_PORT=27672 EPMD_PORT=27369 DIST_PORT=27673 PG_PORT=27432 STOCK_PORT=27501
PROXY_PORT=27680 PROXY_CTL=27681
if [ "$1" = stop ]; then
  for f in "$BASE"/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    case "$f" in
      *pg.pid) su postgres -c "/usr/lib/postgresql/15/bin/pg_ctl -D $BASE/pg -m immediate stop" >/dev/null 2>&1 ;;
      *) kill -- -"$pid" 2>/dev/null || kill "$pid" 2>/dev/null ;;
    esac
  done
  sleep 1
  rm -rf "$BASE"
  exit 0
fi
mkdir -p "$BASE/rmq/mnesia" "$BASE/rmq/log" "$BASE/pg"
cd "$BASE/rmq"
cat > rabbitmq.conf <<CONF
loopback_users = none
default_user = grader
default_pass = s3cret
listeners.tcp.default = 127.0.0.1:$RMQ_PORT
CONF
echo '[].' > enabled_plugins
: > env.conf
setsid epmd -port $EPMD_PORT > epmd.log 2>&1 & echo $! > "$BASE/epmd.pid"
setsid env HOME=$BASE/rmq ERL_EPMD_PORT=$EPMD_PORT RABBITMQ_CONF_ENV_FILE=$BASE/rmq/env.conf \
  RABBITMQ_NODENAME=indep-ev@localhost RABBITMQ_NODE_PORT=$RMQ_PORT RABBITMQ_DIST_PORT=$DIST_PORT \
  RABBITMQ_MNESIA_BASE=$BASE/rmq/mnesia RABBITMQ_LOG_BASE=$BASE/rmq/log RABBITMQ_LOGS=- \
  RABBITMQ_CONFIG_FILE=$BASE/rmq/rabbitmq.conf RABBITMQ_ENABLED_PLUGINS_FILE=$BASE/rmq/enabled_plugins \
  /usr/lib/rabbitmq/bin/rabbitmq-server > server.log 2>&1 & echo $! > "$BASE/rmq.pid"
chown -R postgres "$BASE/pg"
su postgres -c "/usr/lib/postgresql/15/bin/initdb -D $BASE/pg -A trust -U postgres" > "$BASE/initdb.log" 2>&1
su postgres -c "/usr/lib/postgresql/15/bin/pg_ctl -D $BASE/pg -o '-p $PG_PORT -k $BASE/pg -c listen_addresses=127.0.0.1' -l $BASE/pg/log -w start" > /dev/null
head -1 "$BASE/pg/postmaster.pid" > "$BASE/pg.pid"
setsid /usr/bin/python3 "$HERE/stockmock.py" $STOCK_PORT > "$BASE/stock.log" 2>&1 & echo $! > "$BASE/stock.pid"
setsid /usr/bin/python3 "$HERE/tcpproxy.py" $PROXY_PORT $RMQ_PORT $PROXY_CTL > "$BASE/proxy.log" 2>&1 & echo $! > "$BASE/proxy.pid"
for i in $(seq 1 600); do (echo > /dev/tcp/127.0.0.1/$RMQ_PORT) 2>/dev/null && break; sleep 0.1; done
echo "rabbitmq after ~$((i/10))s; postgres on $PG_PORT"
