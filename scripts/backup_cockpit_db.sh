#!/usr/bin/env bash
# Daily PostgreSQL backup (the runbook's), from Cockpit's own connection URL.
#
#   COCKPIT_DATABASE_URL=postgresql+psycopg://cockpit:pw@db:5432/cockpit \
#   BACKUP_DIR=/var/backups/cockpit bash scripts/backup_cockpit_db.sh
#
# Writes $BACKUP_DIR/cockpit_YYYYmmdd_HHMMSS.sql.gz (plain SQL, gzip; restore with
# scripts/restore_cockpit_db.sh) and deletes backups older than $KEEP_DAYS (7).
# The URL may be SQLAlchemy's (`postgresql+psycopg://`) or libpq's
# (`postgresql://`); the password travels in the environment, never in argv.
# PG_DUMP overrides the pg_dump binary (it must be >= the server's major version).
# Prints the file written.  Cron: `0 3 * * * root /opt/cockpit/scripts/backup_cockpit_db.sh`.
set -euo pipefail
umask 077

URL=${COCKPIT_DATABASE_URL:-${DATABASE_URL:-}}
[ -n "$URL" ] || { echo "backup_cockpit_db: set COCKPIT_DATABASE_URL (postgresql://user:pass@host:port/db)" >&2; exit 2; }
BACKUP_DIR=${BACKUP_DIR:-/var/backups/cockpit}
KEEP_DAYS=${KEEP_DAYS:-7}
PG_DUMP=${PG_DUMP:-pg_dump}

# shellcheck source=scripts/lib/libpq_url.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/libpq_url.sh"
libpq_url "$URL" || exit 2

mkdir -p "$BACKUP_DIR"
DATE=$(date +%Y%m%d_%H%M%S)
OUT="$BACKUP_DIR/cockpit_$DATE.sql.gz"
TMP="$OUT.partial"
trap 'rm -f "$TMP"' EXIT

# --no-owner/--no-acl: restorable into a database owned by another role.
"$PG_DUMP" --dbname="$LIBPQ_URL" --no-owner --no-acl --quote-all-identifiers | gzip -c >"$TMP"
gzip -t "$TMP"
mv "$TMP" "$OUT"
trap - EXIT

# Keep only the last KEEP_DAYS days.
find "$BACKUP_DIR" -maxdepth 1 -name 'cockpit_*.sql.gz' -mtime +"$KEEP_DAYS" -delete
echo "$OUT"
