#!/usr/bin/env bash
# PostgreSQL 15 (Debian's package) for the integration tests.
#
# A private cluster: initdb into the state dir, owned by the `postgres` user (the
# server refuses to run as root), listening on 127.0.0.1 on a spare port that is
# kept across stop/start/restart, with its unix socket in the state dir.  fsync is
# off (a lost OS, not a killed server, is what it risks); synchronous_commit stays
# on so a SIGKILLed server keeps every committed transaction, as in production.
# The Debian binaries are used explicitly (/usr/lib/postgresql/15/bin) because
# another pg_ctl may come first on PATH.
#
# Exports:
#   COCKPIT_TEST_POSTGRES_URL        postgresql+psycopg://cockpit:<pw>@127.0.0.1:<port>/cockpit_test
#   COCKPIT_TEST_POSTGRES_ADMIN_URL  the superuser's URL (database `postgres`), to create
#                                    and drop per-test databases
#   COCKPIT_TEST_POSTGRES_PORT       the port
#   COCKPIT_TEST_PG_BIN              the bin dir (psql, pg_dump, pg_restore...)
SVC_NAME=postgres
SVC_PROC_MATCH=postgres
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PG_MAJOR=15
PG_BIN=${COCKPIT_PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
APP_USER=cockpit
APP_DB=cockpit_test

svc_install() {
    if ! deb_installed "postgresql-$PG_MAJOR"; then
        # Debian's package would otherwise create (and, with a working init
        # system, start) a `main` cluster on port 5432 that nothing here stops.
        as_root mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" \
            | as_root tee /etc/postgresql-common/createcluster.d/50-cockpit-no-main-cluster.conf >/dev/null
        apt_install "postgresql-$PG_MAJOR"
    fi
    [ -x "$PG_BIN/pg_ctl" ] || svc_die "$PG_BIN/pg_ctl missing after install"
}

# Run a PostgreSQL binary as the cluster's owner: `postgres` when we are root,
# ourselves otherwise.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

pg_owner() { if [ "$(id -u)" -eq 0 ]; then echo postgres; else id -un; fi; }

# Where the cluster's files live.  Normally $SVC_DIR/cluster; if the owner cannot
# reach the state dir (a repo under /root, say) or the socket path would be too
# long for a unix socket, a stable directory under /tmp keyed by the state dir.
pg_root() {
    if [ -s "$SVC_DIR/root" ]; then cat "$SVC_DIR/root"; return; fi
    local root="$SVC_DIR/cluster" owner
    owner=$(pg_owner)
    mkdir -p "$root"
    [ "$(id -u)" -eq 0 ] && chown "$owner:" "$root"
    if ! as_pg test -w "$root" || [ ${#root} -gt 80 ]; then
        root="/tmp/cockpit-pg-$(printf '%s' "$SVC_DIR" | sha1sum | cut -c1-12)"
        mkdir -p "$root"
        [ "$(id -u)" -eq 0 ] && chown "$owner:" "$root"
        chmod 700 "$root"
        svc_log "cluster files in $root (state dir not reachable by $owner, or path too long)"
    fi
    echo "$root" >"$SVC_DIR/root"
    echo "$root"
}

pg_secret() {
    local file="$SVC_DIR/$1"
    if [ ! -s "$file" ]; then
        (umask 077; "$COCKPIT_PYTHON" -c 'import secrets; print(secrets.token_hex(16))' >"$file")
    fi
    cat "$file"
}

pg_record_pid() {
    local root=$1
    if [ -s "$root/data/postmaster.pid" ]; then head -n1 "$root/data/postmaster.pid" >"$SVC_DIR/pid"; fi
}

pg_env_lines() {
    local port=$1 app_pw admin_pw
    app_pw=$(pg_secret app_password)
    admin_pw=$(pg_secret admin_password)
    printf '%s\n' \
        "export COCKPIT_TEST_POSTGRES_URL=postgresql+psycopg://$APP_USER:$app_pw@127.0.0.1:$port/$APP_DB" \
        "export COCKPIT_TEST_POSTGRES_ADMIN_URL=postgresql+psycopg://postgres:$admin_pw@127.0.0.1:$port/postgres" \
        "export COCKPIT_TEST_POSTGRES_PORT=$port" \
        "export COCKPIT_TEST_PG_BIN=$PG_BIN"
}

# The postmaster is alive (by its lock file; pg_ctl's own check would count a
# killed, not yet reaped postmaster as running).
pg_running() {
    local pidfile
    pidfile="$(pg_root)/data/postmaster.pid"
    [ -s "$pidfile" ] && pid_is_ours "$(head -n1 "$pidfile")"
}

pg_is_up() {
    local root port
    root=$(pg_root)
    port=$(cat "$SVC_DIR/port" 2>/dev/null) || return 1
    as_pg "$PG_BIN/pg_isready" -q -h "$root" -p "$port" -d postgres -U postgres
}

svc_start() {
    [ -x "$PG_BIN/pg_ctl" ] || svc_die "$PG_BIN/pg_ctl not found; run '$0 install' first"
    local root data port log
    root=$(pg_root)
    data="$root/data"
    log="$root/postgres.log"

    if pg_running; then
        pg_record_pid "$root"
        port=$(cat "$SVC_DIR/port")
        svc_log "already running on port $port"
        mapfile -t lines < <(pg_env_lines "$port")
        svc_write_env "${lines[@]}"
        return 0
    fi

    if [ ! -s "$data/PG_VERSION" ]; then
        local pwfile="$root/.pwfile"
        pg_secret admin_password >/dev/null
        (umask 077; cat "$SVC_DIR/admin_password" >"$pwfile")
        [ "$(id -u)" -eq 0 ] && chown "$(pg_owner):" "$pwfile"
        svc_log "initdb $data"
        as_pg "$PG_BIN/initdb" -D "$data" -U postgres --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
            --auth-local=trust --auth-host=scram-sha-256 >"$SVC_DIR/initdb.log" 2>&1 \
            || { rm -f "$pwfile"; svc_fail_start "$SVC_DIR/initdb.log" "initdb failed"; }
        rm -f "$pwfile"
    fi

    # A SIGKILLed postmaster leaves lock files naming its pid.  This machine's
    # init may never reap it, so PostgreSQL's own "is that pid alive?" check
    # would see the zombie and refuse to start: clear the stale locks here.
    rm -f "$data/postmaster.pid" "$root"/.s.PGSQL.*.lock "$root"/.s.PGSQL.[0-9]*[0-9]

    port=$(svc_port)
    touch "$log"
    [ "$(id -u)" -eq 0 ] && chown "$(pg_owner):" "$log"
    svc_log "starting on 127.0.0.1:$port"
    # pg_ctl detaches the postmaster with its output in the log file (-l).
    as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$log" -w -t 60 -o "\
-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$root \
-c fsync=off -c full_page_writes=off -c max_connections=300 \
-c shared_buffers=64MB" start </dev/null >>"$SVC_DIR/pg_ctl.log" 2>&1 \
        || svc_fail_start "$log" "pg_ctl start failed"
    wait_until 30 "ready" pg_is_up || svc_fail_start "$log" "not accepting connections on port $port"
    pg_record_pid "$root"

    local app_pw
    app_pw=$(pg_secret app_password)
    as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$root" -p "$port" -U postgres -d postgres \
        >"$SVC_DIR/bootstrap.log" 2>&1 <<SQL || svc_fail_start "$SVC_DIR/bootstrap.log" "creating role/database failed"
SELECT format('CREATE ROLE %I LOGIN CREATEDB', '$APP_USER')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$APP_USER')\\gexec
ALTER ROLE $APP_USER WITH LOGIN CREATEDB PASSWORD '$app_pw';
ALTER ROLE postgres WITH PASSWORD '$(pg_secret admin_password)';
SELECT format('CREATE DATABASE %I OWNER %I', '$APP_DB', '$APP_USER')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$APP_DB')\\gexec
SQL
    # Prove the exported credentials work over TCP, as the tests will use them.
    PGPASSWORD=$app_pw as_pg "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U "$APP_USER" -d "$APP_DB" \
        -c 'SELECT 1' >>"$SVC_DIR/bootstrap.log" 2>&1 \
        || svc_fail_start "$SVC_DIR/bootstrap.log" "password login as $APP_USER failed"

    mapfile -t lines < <(pg_env_lines "$port")
    svc_write_env "${lines[@]}"
}

svc_stop() {
    local root data pid children
    root=$(pg_root)
    data="$root/data"
    pg_record_pid "$root"
    pid=$(svc_pid)
    if pid_is_ours "$pid"; then
        children=$(child_pids "$pid")
        if ! as_pg "$PG_BIN/pg_ctl" -D "$data" stop -m fast -w -t 30 >>"$SVC_DIR/pg_ctl.log" 2>&1; then
            svc_log "fast shutdown failed; immediate shutdown"
            as_pg "$PG_BIN/pg_ctl" -D "$data" stop -m immediate -w -t 15 >>"$SVC_DIR/pg_ctl.log" 2>&1 || true
        fi
        stop_pid "$pid" 5 KILL
        for pid in $children; do stop_pid "$pid" 5 KILL; done
        svc_log "stopped"
    fi
    # A postmaster that was SIGKILLed leaves its lock file behind.
    pg_running || rm -f "$data/postmaster.pid"
    rm -f "$SVC_DIR/pid"
}

# The cluster may live outside the state dir (see pg_root).
svc_clean() {
    local root
    root=$(pg_root)
    case "$root" in "$SVC_DIR"/*) ;; *) rm -rf "$root" ;; esac
}

svc_status() {
    local root
    root=$(pg_root)
    if pg_running && pg_is_up; then
        echo "running (port $(cat "$SVC_DIR/port"), data $root/data)"
        return 0
    fi
    echo "stopped"
    return 3
}

# A crash: SIGKILL the postmaster and every backend (a lone dead postmaster would
# leave backends holding shared memory and block the next start).
svc_kill() {
    local root pid children
    root=$(pg_root)
    pg_record_pid "$root"
    pid=$(svc_pid)
    pid_is_ours "$pid" || { svc_log "not running"; return 0; }
    children=$(child_pids "$pid")
    # shellcheck disable=SC2086
    kill -KILL "$pid" $children 2>/dev/null || true
    for p in $pid $children; do
        wait_until 10 "exit" pid_gone "$p" || svc_die "pid $p survived SIGKILL"
    done
    svc_log "killed (SIGKILL) postmaster $pid and its backends"
}

svc_main "$@"
