#!/usr/bin/env bash
# Restore a backup written by scripts/backup_cockpit_db.sh.
#
#   COCKPIT_DATABASE_URL=postgresql+psycopg://cockpit:pw@db:5432/cockpit \
#   bash scripts/restore_cockpit_db.sh /var/backups/cockpit/cockpit_20251017_030000.sql.gz
#
# Into an EMPTY database (create it first; stop every Cockpit replica): the dump
# recreates the schema, the alembic revision and every row in one transaction,
# and stops at the first error (ON_ERROR_STOP), so a failed restore leaves nothing
# half-done.  PSQL overrides the psql binary.
set -euo pipefail

FILE=${1:-}
[ -n "$FILE" ] && [ -r "$FILE" ] || { echo "usage: restore_cockpit_db.sh BACKUP.sql.gz" >&2; exit 2; }
URL=${COCKPIT_DATABASE_URL:-${DATABASE_URL:-}}
[ -n "$URL" ] || { echo "restore_cockpit_db: set COCKPIT_DATABASE_URL (postgresql://user:pass@host:port/db)" >&2; exit 2; }
PSQL=${PSQL:-psql}
# Sets LIBPQ_URL: the libpq URL without the password (which goes to PGPASSWORD, so it never shows
# in `ps`), from SQLAlchemy's form too (postgresql+psycopg:// -> postgresql://).
libpq_url() {
    local url rest userinfo hostpart user pw
    url=$(printf '%s' "$1" | sed -E 's#^postgres(ql)?(\+[A-Za-z0-9_]+)?://#postgresql://#')
    case "$url" in
        postgresql://*) ;;
        *) echo "$(basename "$0"): not a PostgreSQL URL: ${url%%://*}://..." >&2; return 2 ;;
    esac
    rest=${url#postgresql://}
    if [[ "$rest" == *@* ]]; then
        userinfo=${rest%%@*}; hostpart=${rest#*@}
        user=${userinfo%%:*}
        if [[ "$userinfo" == *:* ]]; then
            pw=${userinfo#*:}
            PGPASSWORD=$(printf '%b' "${pw//%/\\x}")   # percent-decoded
            export PGPASSWORD
        fi
        LIBPQ_URL="postgresql://$user@$hostpart"
    else
        LIBPQ_URL=$url
    fi
}
libpq_url "$URL" || exit 2

gzip -t "$FILE"
gunzip -c "$FILE" | "$PSQL" --dbname="$LIBPQ_URL" -X -q -v ON_ERROR_STOP=1 --single-transaction >/dev/null
echo "restored $FILE"
