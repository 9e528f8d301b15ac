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
