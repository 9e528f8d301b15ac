# velocity-pg through Docker Compose: backups of the db service's database.
# Run `just` to list the recipes. Each runs velocity-pg as the postgres user
# inside the db container, passes extra arguments through and exits with
# velocity-pg's status (0 ok, 1 failed, 2 bad usage/config, 130 interrupted).

set positional-arguments

# The app services that must not use the database while it is swapped.
# Only those that are running are stopped, and exactly those are started
# again. Override for one run: just app_services="web worker" db-restore NAME
app_services := "web celery-worker " + long_lived

# Services that may keep a database connection for as long as they run: with
# persistent connections (CONN_MAX_AGE > 0) the swap ends it and their next query
# fails. Restarted around a swap whenever they run, even if app_services leaves
# them out. (With the Django Velocity template's settings, no persistent
# connection, the DatabaseScheduler of django_celery_beat 2.9 reconnected at
# each tick and kept scheduling through a swap: docs/docker.md.)
long_lived := "celery-beat"

# The scheduled backups' service (velocity-pg schedule): paused for the swap
# like the app, since the swap would cut off a pg_dump it runs meanwhile and
# fail that run; started again with the app (it catches up at once on start
# when its newest backup is older than one schedule period).
backup_service := "db-backup"

# Seconds db-restore counts down before it stops anything (--yes skips it).
restore_countdown := "5"

# db-restore migrates the staged copy of a Django database before the swap, with
# the command BACKUP_MIGRATE_COMMAND (split on spaces) run in the compose service
# BACKUP_MIGRATE_SERVICE (its image and settings, DATABASE_URL pointed at the
# staged copy), as velocity-pg reads them in db (from .env); after the swap, the
# same command with --check. Override for one run:
# just migrate_command="python manage.py migrate --noinput" db-restore FILE
# (empty: velocity-pg's); --no-migrate skips it.
migrate_command := ""
migrate_service := ""

# List the recipes
default:
    @{{ quote(just_executable()) }} --justfile {{ quote(justfile()) }} --list --unsorted

# Create a backup in the backup-data volume (no downtime)
[no-exit-message]
db-backup *args:
    @docker compose exec -u postgres db velocity-pg backup "$@"

# List the backups, newest first (--json for scripts)
[no-exit-message]
db-backup-list *args:
    @docker compose exec -u postgres db velocity-pg list "$@"

# Restore a backup: check, stage it with the app running, stop the app only for the swap (--online: stop nothing)
[no-exit-message]
db-restore file *args:
    #!/usr/bin/env bash
    set -uo pipefail
    file=$1
    shift
    # --online (the recipe's, not velocity-pg's): swap with the app running, stop nothing.
    # --no-migrate (the recipe's too): swap the staged copy in without migrating it.
    online=
    migrate=1
    rest=()
    for arg in "$@"; do
        case "$arg" in
            --online) online=1 ;;
            --no-migrate) migrate= ;;
            *) rest+=("$arg") ;;
        esac
    done
    set -- ${rest[@]+"${rest[@]}"}
    # Ctrl+C must not skip restarting the services: remember it, let the
    # running step end, and decide afterwards.
    interrupted=
    trap 'interrupted=1' INT TERM HUP
    say() { printf 'db-restore: %s\n' "$*" >&2; }
    # `docker compose exec` passes no signal on to what it runs: velocity-pg gets
    # --stop-on-eof and its input from a pipe this recipe holds open, in a process group
    # of its own (set -m) that Ctrl+C does not reach. On Ctrl+C or SIGTERM the recipe
    # closes the pipe: velocity-pg stops as on Ctrl+C (what is past its point of no
    # return finishes first), and the client returns velocity-pg's real status.
    vpg() {
        local dir client feed status
        dir=$(mktemp -d) && mkfifo "$dir/in" || return 1
        set -m
        docker compose exec -T -u postgres db velocity-pg --stop-on-eof "$@" < "$dir/in" &
        client=$!
        sleep 2147483647 > "$dir/in" &
        feed=$!
        set +m
        while :; do
            wait "$client"
            status=$?
            kill -0 "$client" 2>/dev/null || break
            kill "$feed" 2>/dev/null
        done
        kill "$feed" 2>/dev/null
        wait "$feed" 2>/dev/null
        rm -rf "$dir"
        return "$status"
    }
    # Seconds since the epoch (bash 5's EPOCHREALTIME; whole seconds from date elsewhere).
    now() { local t=${EPOCHREALTIME:-}; [ -n "$t" ] || t=$(date +%s); printf '%s' "${t/,/.}"; }

    # 1. Check the file and the server. Nothing has been stopped yet: a bad
    #    file or Ctrl+C ends here.
    #    (Ctrl+C decides the status: the docker client it ends may exit 1 or 130.)
    vpg restore --check "$file" "$@"
    status=$?
    if [ -n "$interrupted" ]; then say "interrupted; nothing was changed"; exit 130; fi
    if [ "$status" -ne 0 ]; then exit "$status"; fi

    # 1b. Count down before anything is stopped (Ctrl+C cancels; --yes skips it).
    yes=
    for arg in "$@"; do case "$arg" in --yes|-y) yes=1 ;; esac; done
    remaining={{ restore_countdown }}
    if [ -n "$online" ]; then what="restoring $file with the app running"; else what="stopping the app and restoring $file"; fi
    if [ -z "$yes" ] && [ "$remaining" -gt 0 ]; then
        say "$what in $remaining s; press Ctrl+C to cancel"
        while [ "$remaining" -gt 0 ]; do
            sleep 1
            if [ -n "$interrupted" ]; then say "interrupted; nothing was changed"; exit 130; fi
            remaining=$((remaining - 1))
            if [ "$remaining" -gt 0 ]; then say "$remaining..."; fi
        done
    fi

    # 2. Build the restored copy beside the database while the app keeps
    #    running. A failure or Ctrl+C here stops nothing and changes nothing.
    staged_json=$(mktemp) || exit 1
    vpg restore --stage --yes --json "$file" "$@" > "$staged_json"
    status=$?
    stage_out=$(cat "$staged_json"); rm -f "$staged_json"
    if [ -n "$interrupted" ]; then
        say "interrupted; the app was not stopped and the database was not changed (a finished staged copy is kept for the next run to use; drop it with: docker compose exec -u postgres db velocity-pg restore --abort)"
        exit 130
    fi
    if [ "$status" -ne 0 ]; then say "the app was not stopped; the database was not changed"; exit "$status"; fi
    # One JSON field a line (velocity-pg's --json); a value with a quote or a backslash
    # (escaped in JSON) is not read: the command is split on spaces, it needs neither.
    field() { printf '%s\n' "$stage_out" | sed -n "s/^  \"$1\": \"\\([^\"\\\\]*\\)\",\\{0,1\\}\$/\\1/p"; }
    staged_as=$(field staged_as)
    drift=$(field migration_drift)
    migrate_text={{ quote(migrate_command) }}
    [ -n "$migrate_text" ] || migrate_text=$(field migrate_command)
    migrate_service={{ quote(migrate_service) }}
    [ -n "$migrate_service" ] || migrate_service=$(field migrate_service)
    if [ -n "$staged_as" ]; then say "staged $file as $staged_as; the app keeps running"; fi

    # 2a. A Django database behind the code (its migrations older than the live
    #     database's): run the project's own migrate on the staged copy, in the
    #     BACKUP_MIGRATE_SERVICE's image and settings with DATABASE_URL pointed at
    #     the copy (passed through the environment, never on a command line). Only a
    #     migrate that succeeded lets the swap go on; on failure the copy is dropped and
    #     nothing was stopped or changed. A backup ahead of the live database is never
    #     migrated (backwards): it is swapped in as it is, after the check's WARNING.
    set -f; migrate_cmd=($migrate_text); set +f
    if [ "$drift" = behind ] && [ -n "$migrate" ] && { [ "${#migrate_cmd[@]}" -eq 0 ] || [ -z "$migrate_service" ]; }; then
        say "cannot read BACKUP_MIGRATE_COMMAND / BACKUP_MIGRATE_SERVICE (a quote or a backslash in them?); the app was not stopped and the database was not changed (the staged copy is kept: --no-migrate swaps it in unmigrated)"
        exit 2
    fi
    case "$drift" in
        behind)
            if [ -z "$migrate" ]; then
                say "warning: --no-migrate: the staged copy is behind the live database's migrations and is swapped in unmigrated; run the project's migrate after the restore"
            else
                say "migrating the staged copy: ${migrate_cmd[*]} (in $migrate_service)"
                live_url=$(docker compose run --rm --no-deps -T "$migrate_service" printenv DATABASE_URL)
                status=$?
                if [ "$status" -ne 0 ] || [ -z "$live_url" ]; then say "$migrate_service has no DATABASE_URL to point at the staged copy"; status=1; fi
                # The URL (it holds the password) goes by pipes and the environment only:
                # printf is the shell's own, no process has it in its arguments.
                if [ "$status" -eq 0 ]; then
                    DATABASE_URL=$(printf '%s\n' "$live_url" | docker compose exec -T -u postgres db velocity-pg restore --staged-url)
                    status=$?
                fi
                unset live_url
                if [ "$status" -eq 0 ]; then
                    export DATABASE_URL
                    docker compose run --rm --no-deps -T -e DATABASE_URL "$migrate_service" "${migrate_cmd[@]}"
                    status=$?
                fi
                unset DATABASE_URL
                if [ -n "$interrupted" ] || [ "$status" -ne 0 ]; then
                    vpg restore --abort >/dev/null || say "warning: could not drop the staged copy; drop it with: docker compose exec -u postgres db velocity-pg restore --abort"
                    if [ -n "$interrupted" ]; then say "interrupted; the app was not stopped and the database was not changed"; exit 130; fi
                    say "the staged copy could not be migrated (see the output above); it was dropped, the app was not stopped and the database was not changed"
                    exit 1
                fi
            fi
            ;;
        ahead|mixed)
            say "WARNING: the backup is ahead of the live database's migrations: it is not migrated backwards; it is swapped in as it is (the code may not know its schema)"
            ;;
    esac
    # After the swap: the project's migrate --check against the live database.
    check_migrations() {
        if [ -n "$drift" ] && [ "${#migrate_cmd[@]}" -gt 0 ] && [ -n "$migrate_service" ] && [ -z "$interrupted" ]; then
            if docker compose run --rm --no-deps -T "$migrate_service" "${migrate_cmd[@]}" --check; then
                say "migrate --check: the database is at the code's migration state"
            else
                say "warning: migrate --check: the database is not at the code's migration state; run the project's migrate"
            fi
        fi
    }

    # 2b. --online: swap with every service running. Sessions are ended by the swap
    #     (persistent connections see one error each); a scheduled pg_dump running
    #     at that moment fails and is retried at its next due time.
    if [ -n "$online" ]; then
        say "swapping with the app running (--online): no service is stopped"
        vpg restore --yes --drop-later "$file" "$@"
        status=$?
        if [ -n "$interrupted" ] && [ "$status" -eq 0 ]; then say "interrupted after the swap had committed: $file is restored (undo with: just db-restore-undo)"; fi
        if [ -n "$interrupted" ]; then status=130; fi
        if [ "$status" -eq 0 ]; then
            check_migrations
            vpg restore --tidy || say "warning: could not drop what the restore replaced; the next restore drops it"
        fi
        exit "$status"
    fi

    # 3. Stop the app services that are running (and only those).
    running=$(docker compose ps --services --filter status=running)
    status=$?
    if [ "$status" -ne 0 ]; then say "cannot tell which services run; nothing was changed"; exit "$status"; fi
    stopped=()
    for service in {{ app_services }} {{ long_lived }} {{ backup_service }}; do
        case " ${stopped[*]} " in *" $service "*) continue ;; esac
        if printf '%s\n' "$running" | grep -qxF -- "$service"; then stopped+=("$service"); fi
    done
    down_since=$(now)
    restart() {
        if [ "${#stopped[@]}" -gt 0 ]; then
            say "starting ${stopped[*]}"
            docker compose start "${stopped[@]}" || { say "could not start ${stopped[*]}: start them with: docker compose start ${stopped[*]}"; return 1; }
            say "the app services were down for $(awk -v a="$down_since" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }') s"
        fi
    }
    status=0
    if [ "${#stopped[@]}" -gt 0 ]; then
        say "stopping ${stopped[*]}"
        docker compose stop "${stopped[@]}"
        status=$?
    fi
    if [ -n "$interrupted" ]; then say "interrupted; the database was not restored"; restart; exit 130; fi
    if [ "$status" -ne 0 ]; then say "could not stop ${stopped[*]}; the database was not restored"; restart; exit "$status"; fi

    # 4. Swap the staged copy in (no second countdown), then start exactly what
    #    was stopped, also when the swap failed; exit with the restore's status.
    #    What the swap replaced for good (an older rollback point) is dropped
    #    after the app runs again: that drop takes longer the larger the database.
    vpg restore --yes --drop-later "$file" "$@"
    status=$?
    restart_failed=
    restart || restart_failed=1
    if [ -n "$interrupted" ] && [ "$status" -eq 0 ]; then say "interrupted after the swap had committed: $file is restored (undo with: just db-restore-undo)"; fi
    if [ -n "$interrupted" ]; then status=130; fi
    if [ -n "$restart_failed" ] && [ "$status" -eq 0 ]; then status=1; fi
    if [ "$status" -eq 0 ]; then
        check_migrations
        vpg restore --tidy || say "warning: could not drop what the restore replaced; the next restore drops it"
    fi
    exit "$status"

# Undo the last restore: swap the previous contents back in (the app stopped meanwhile)
[no-exit-message]
db-restore-undo *args:
    #!/usr/bin/env bash
    set -uo pipefail
    interrupted=
    trap 'interrupted=1' INT TERM HUP
    say() { printf 'db-restore-undo: %s\n' "$*" >&2; }
    # `docker compose exec` passes no signal on to what it runs: velocity-pg gets
    # --stop-on-eof and its input from a pipe this recipe holds open, in a process group
    # of its own (set -m) that Ctrl+C does not reach. On Ctrl+C or SIGTERM the recipe
    # closes the pipe: velocity-pg stops as on Ctrl+C (what is past its point of no
    # return finishes first), and the client returns velocity-pg's real status.
    vpg() {
        local dir client feed status
        dir=$(mktemp -d) && mkfifo "$dir/in" || return 1
        set -m
        docker compose exec -T -u postgres db velocity-pg --stop-on-eof "$@" < "$dir/in" &
        client=$!
        sleep 2147483647 > "$dir/in" &
        feed=$!
        set +m
        while :; do
            wait "$client"
            status=$?
            kill -0 "$client" 2>/dev/null || break
            kill "$feed" 2>/dev/null
        done
        kill "$feed" 2>/dev/null
        wait "$feed" 2>/dev/null
        rm -rf "$dir"
        return "$status"
    }
    # Seconds since the epoch (bash 5's EPOCHREALTIME; whole seconds from date elsewhere).
    now() { local t=${EPOCHREALTIME:-}; [ -n "$t" ] || t=$(date +%s); printf '%s' "${t/,/.}"; }

    # 1. Check that there is a rollback point, and count down (Ctrl+C cancels).
    vpg restore --undo --check "$@"
    status=$?
    if [ -n "$interrupted" ]; then say "interrupted; nothing was changed"; exit 130; fi
    if [ "$status" -ne 0 ]; then exit "$status"; fi

    # 2. Stop the app services that are running (and only those).
    running=$(docker compose ps --services --filter status=running)
    status=$?
    if [ "$status" -ne 0 ]; then say "cannot tell which services run; nothing was changed"; exit "$status"; fi
    stopped=()
    for service in {{ app_services }} {{ long_lived }} {{ backup_service }}; do
        case " ${stopped[*]} " in *" $service "*) continue ;; esac
        if printf '%s\n' "$running" | grep -qxF -- "$service"; then stopped+=("$service"); fi
    done
    down_since=$(now)
    restart() {
        if [ "${#stopped[@]}" -gt 0 ]; then
            say "starting ${stopped[*]}"
            docker compose start "${stopped[@]}" || { say "could not start ${stopped[*]}: start them with: docker compose start ${stopped[*]}"; return 1; }
            say "the app services were down for $(awk -v a="$down_since" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }') s"
        fi
    }
    status=0
    if [ "${#stopped[@]}" -gt 0 ]; then
        say "stopping ${stopped[*]}"
        docker compose stop "${stopped[@]}"
        status=$?
    fi
    if [ -n "$interrupted" ]; then say "interrupted; nothing was undone"; restart; exit 130; fi
    if [ "$status" -ne 0 ]; then say "could not stop ${stopped[*]}; nothing was undone"; restart; exit "$status"; fi

    # 3. Swap the rollback point back in, then start exactly what was stopped.
    vpg restore --undo --yes "$@"
    status=$?
    restart_failed=
    restart || restart_failed=1
    if [ -n "$interrupted" ] && [ "$status" -eq 0 ]; then say "interrupted after the swap had committed: the previous contents are back"; fi
    if [ -n "$interrupted" ]; then status=130; fi
    if [ -n "$restart_failed" ] && [ "$status" -eq 0 ]; then status=1; fi
    exit "$status"

# Move to a newer PostgreSQL major (after setting POSTGRES_IMAGE and POSTGRES_DATA_VOLUME in .env): back up, restore on the new server, keep the old volume
[no-exit-message]
db-upgrade *args:
    #!/usr/bin/env bash
    set -uo pipefail
    # The new image and volume are what .env (Compose) says now; the running db
    # container is still the old server on the old volume. Nothing touches the old
    # volume: going back is setting the two lines back (the recipe prints them).
    interrupted=
    trap 'interrupted=1' INT TERM HUP
    say() { printf 'db-upgrade: %s\n' "$*" >&2; }
    yes=
    for arg in "$@"; do
        case "$arg" in
            --yes|-y) yes=1 ;;
            *) say "unknown argument $arg (only --yes)"; exit 2 ;;
        esac
    done
    data=/var/lib/postgresql/data
    # The data volume of the running db container (Docker's name) and its project.
    old_id=$(docker compose ps -q db)
    if [ -z "$old_id" ]; then say "the db service is not running: start the old server first (docker compose up -d --wait db, with the old POSTGRES_IMAGE and POSTGRES_DATA_VOLUME)"; exit 2; fi
    mount() { docker inspect -f "{{{{range .Mounts}}{{{{if eq .Destination \"$data\"}}{{{{.Name}}{{{{end}}{{{{end}}" "$1"; }
    old_volume=$(mount "$old_id") || exit 1
    project=$(docker inspect -f '{{{{index .Config.Labels "com.docker.compose.project"}}' "$old_id") || exit 1
    # The volume key Compose now gives db's data directory (v2's long form or v1's short one).
    new_key=$(docker compose config | awk -v data="$data" '
        $1 == "source:" { source = $2 }
        $1 == "target:" && $2 == data { print source; exit }
        $1 == "-" && index($2, ":" data) { split($2, part, ":"); print part[1]; exit }')
    if [ -z "$new_key" ] || [ -z "$old_volume" ]; then say "cannot tell db's data volumes (old: '${old_volume}', new: '${new_key}'); nothing was changed"; exit 1; fi
    old_key=${old_volume#"${project}"_}
    new_volume="${project}_${new_key}"
    if [ "$new_volume" = "$old_volume" ]; then
        say "POSTGRES_DATA_VOLUME still names the running server's volume ($old_key): set it to a new one (e.g. postgres-data-17) and POSTGRES_IMAGE to the new image in .env first; nothing was changed"
        exit 2
    fi
    if docker volume inspect "$new_volume" >/dev/null 2>&1; then
        say "volume $new_volume already exists: db-upgrade restores only into a new volume (if it holds nothing you need: docker volume rm $new_volume); nothing was changed"
        exit 1
    fi
    q() { docker compose exec -T -u postgres db sh -c 'psql -X -q -At -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"'; }
    # Exact row counts of every table, one "schema.table|rows" line each, sorted.
    counts_sql="SELECT format('%s.%s|%s', n.nspname, c.relname, (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1;"
    # The database's own settings (ALTER DATABASE / ALTER ROLE ... IN DATABASE ... SET), as
    # statements: a dump without --create does not carry them (list settings as stored).
    settings_sql="SELECT format('ALTER %s SET %s TO %s;', CASE WHEN s.setrole = 0 THEN format('DATABASE %I', d.datname) ELSE format('ROLE %I IN DATABASE %I', r.rolname, d.datname) END, split_part(c, '=', 1), CASE WHEN split_part(c, '=', 1) IN ('search_path', 'temp_tablespaces', 'local_preload_libraries', 'session_preload_libraries', 'shared_preload_libraries', 'unix_socket_directories') THEN substr(c, strpos(c, '=') + 1) ELSE quote_literal(substr(c, strpos(c, '=') + 1)) END) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase AND d.datname = current_database() LEFT JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) AS c ORDER BY 1;"
    old_major=$(echo 'SHOW server_version_num;' | q) || { say "cannot query the old server; nothing was changed"; exit 1; }
    old_major=$((old_major / 10000))
    others=$(echo "SELECT string_agg(datname, ', ') FROM pg_database WHERE NOT datistemplate AND datname NOT IN ('postgres', current_database()) AND datname NOT LIKE 'velocity\_pg\_%';" | q)
    if [ -n "$others" ]; then say "warning: only the configured database is moved; these others on the server are not: $others"; fi
    say "moving the database from PostgreSQL $old_major on volume $old_key to the image POSTGRES_IMAGE names, on the new volume $new_key; $old_key stays untouched"
    if [ -z "$yes" ]; then
        remaining={{ restore_countdown }}
        say "stopping the app for the move in $remaining s; press Ctrl+C to cancel"
        while [ "$remaining" -gt 0 ]; do
            sleep 1
            if [ -n "$interrupted" ]; then say "interrupted; nothing was changed"; exit 130; fi
            remaining=$((remaining - 1))
        done
    fi

    # 0. Build the new image first, with everything running (the old container keeps
    #    its own image): minutes on a slow machine that would otherwise be downtime.
    say "building the new image; the app keeps running"
    docker compose build db {{ backup_service }} || { say "the new image did not build; nothing was changed"; exit 1; }
    if [ -n "$interrupted" ]; then say "interrupted; nothing was changed"; exit 130; fi

    # 1. Stop the app services (and the scheduled backups) that are running: every
    #    write must be in the backup the new server gets.
    running=$(docker compose ps --services --filter status=running) || { say "cannot tell which services run; nothing was changed"; exit 1; }
    stopped=()
    for service in {{ app_services }} {{ long_lived }} {{ backup_service }}; do
        case " ${stopped[*]} " in *" $service "*) continue ;; esac
        if printf '%s\n' "$running" | grep -qxF -- "$service"; then stopped+=("$service"); fi
    done
    back_to_old() {
        say "to go back: set POSTGRES_DATA_VOLUME=$old_key and POSTGRES_IMAGE back to the PostgreSQL $old_major image in .env, then: docker compose up -d --build --wait db && docker compose up -d ${stopped[*]}"
    }
    restart_old() {
        if [ "${#stopped[@]}" -gt 0 ]; then docker compose start "${stopped[@]}" || say "could not start ${stopped[*]}: start them with: docker compose start ${stopped[*]}"; fi
    }
    down_since=$(date +%s)
    if [ "${#stopped[@]}" -gt 0 ]; then
        say "stopping ${stopped[*]}"
        docker compose stop "${stopped[@]}" || { say "could not stop ${stopped[*]}; nothing was changed"; restart_old; exit 1; }
    fi
    if [ -n "$interrupted" ]; then say "interrupted; nothing was changed"; restart_old; exit 130; fi

    # 2. Back up on the old server (its own pg_dump), check the backup, count the rows.
    made=$(docker compose exec -T -u postgres db velocity-pg backup --json) || { say "the backup on PostgreSQL $old_major failed; nothing was changed"; restart_old; exit 1; }
    name=$(printf '%s\n' "$made" | sed -n 's/.*"name": *"\([^"]*\)".*/\1/p' | head -n 1)
    if [ -z "$name" ]; then say "cannot read the backup's name; nothing was changed"; restart_old; exit 1; fi
    say "backed up as $name"
    docker compose exec -T -u postgres db velocity-pg verify "$name" >&2 || { say "$name did not verify; nothing was changed"; restart_old; exit 1; }
    before=$(printf '%s\n' "$counts_sql" | q) || { say "cannot count the rows; nothing was changed"; restart_old; exit 1; }
    settings=$(printf '%s\n' "$settings_sql" | q) || { say "cannot read the database's settings; nothing was changed"; restart_old; exit 1; }
    if [ -n "$interrupted" ]; then say "interrupted; nothing was changed"; restart_old; exit 130; fi

    # 3. The new server on the new volume (the old container goes, its volume stays).
    say "starting the new server on $new_key"
    docker compose stop db || { say "could not stop the old server"; restart_old; exit 1; }
    if ! docker compose up -d --wait --no-deps db; then
        say "the new server did not start; the old volume $old_key is untouched"; back_to_old; exit 1
    fi
    now_volume=$(mount "$(docker compose ps -q db)")
    if [ "$now_volume" != "$new_volume" ]; then say "db runs on $now_volume, not $new_volume"; back_to_old; exit 1; fi
    new_major=$(echo 'SHOW server_version_num;' | q) && new_major=$((new_major / 10000)) || { say "cannot query the new server"; back_to_old; exit 1; }
    if [ "$new_major" -lt "$old_major" ]; then
        say "the new server is PostgreSQL $new_major, older than $old_major: a dump does not go back a major"; back_to_old; exit 1
    fi

    # 4. Restore with the new server's pg_restore (velocity-pg analyzes the copy), then
    #    the same counts and the database's settings.
    say "restoring $name on PostgreSQL $new_major"
    docker compose exec -T -u postgres db velocity-pg restore --yes --no-keep-previous "$name" >&2 || {
        say "the restore on PostgreSQL $new_major failed; the app services stay stopped"; back_to_old; exit 1; }
    after=$(printf '%s\n' "$counts_sql" | q) || { say "cannot count the restored rows"; back_to_old; exit 1; }
    if [ "$before" != "$after" ]; then
        say "the restored row counts differ from the old server's; the app services stay stopped:"
        diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") >&2
        back_to_old; exit 1
    fi
    say "row counts match: $(printf '%s\n' "$before" | grep -c . ) tables"
    if [ -n "$settings" ]; then
        if printf '%s\n' "$settings" | q && [ "$(printf '%s\n' "$settings_sql" | q)" = "$settings" ]; then
            say "the database's settings carried over: $(printf '%s\n' "$settings" | grep -c .)"
        else
            say "warning: not every setting of the database carried over; set them by hand: $settings"
        fi
    fi

    # 5. The app again (db-backup recreated, so that its pg_dump is the new image's),
    #    then the new server's first backup (no downtime: the app runs meanwhile).
    for service in "${stopped[@]}"; do
        if [ "$service" = {{ backup_service }} ]; then
            docker compose up -d --no-deps "$service" || say "could not start $service"
        else
            docker compose start "$service" || say "could not start $service: docker compose start $service"
        fi
    done
    if [ "${#stopped[@]}" -gt 0 ]; then say "the app services were down for $(( $(date +%s) - down_since )) s"; fi
    docker compose exec -T -u postgres db velocity-pg backup >&2 || say "warning: the first backup on PostgreSQL $new_major failed: run just db-backup"
    say "done: PostgreSQL $new_major on $new_key; $old_key (PostgreSQL $old_major) is untouched"
    back_to_old
    say "once sure, delete the old volume: docker volume rm $old_volume"

# Check backups: checksum and archive (--restore: a restore drill; --all: every backup)
[no-exit-message]
db-backup-verify *args:
    @docker compose exec -u postgres db velocity-pg verify "$@"

# Backup count, newest backup's age, last verification (--max-age 26h: exit 1 if stale)
[no-exit-message]
db-backup-status *args:
    @docker compose exec -u postgres db velocity-pg status "$@"

# Delete old backups by BACKUP_MAX_AGE_DAYS / BACKUP_MAX_COUNT (--dry-run to preview)
[no-exit-message]
db-backup-cleanup *args:
    @docker compose exec -u postgres db velocity-pg cleanup "$@"

# The db-backup service's log: one line per step of each scheduled run (e.g. -f, --tail 50)
[no-exit-message]
db-backup-logs *args:
    @docker compose logs "$@" db-backup

# Run the test suite (the README's test command; arguments go to pytest)
test *args:
    python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest "$@"
