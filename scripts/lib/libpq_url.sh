# Shared by backup_cockpit_db.sh and restore_cockpit_db.sh (sourced, not run).
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
