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
# shellcheck source=scripts/lib/libpq_url.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/libpq_url.sh"
libpq_url "$URL" || exit 2

gzip -t "$FILE"
gunzip -c "$FILE" | "$PSQL" --dbname="$LIBPQ_URL" -X -q -v ON_ERROR_STOP=1 --single-transaction >/dev/null
echo "restored $FILE"
