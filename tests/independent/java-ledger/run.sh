#!/bin/sh
# Compiles the ledger (once per version of the sources) and runs it.
# PORT, DATABASE_URL, FRAUD_URL (and INDEP_BUG / INDEP_STYLE) come from the environment.
#
# Classes go to build/<hash of the sources>/ (LEDGER_BUILD_DIR moves build/): a directory is
# renamed into place only once complete and never modified afterwards, so several instances
# may start at once (each compiles or reuses, none sees half a build or loses its classes).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root="${LEDGER_BUILD_DIR:-$here/build}"
jdbc=/usr/share/java/postgresql.jar
[ -r "$jdbc" ] || { echo "run.sh: $jdbc is missing (apt-get install libpostgresql-jdbc-java)" >&2; exit 1; }
hash=$(cat "$here"/*.java | sha256sum | cut -c1-16)
classes="$root/$hash"
if [ ! -d "$classes" ]; then
    mkdir -p "$root"
    tmp=$(mktemp -d "$root/.javac.XXXXXX")
    chmod 755 "$tmp"
    javac -encoding UTF-8 -Xlint:all,-serial -d "$tmp" -cp "$jdbc" "$here"/*.java >&2
    # another instance may have won the race: then keep its copy
    mv -T "$tmp" "$classes" 2>/dev/null || rm -rf "$tmp"
fi
exec java -XX:+UseSerialGC -cp "$jdbc:$classes" Ledger
