# velocity-pg through Docker Compose: backups of the db service's database.
# Run `just` to list the recipes. Each runs velocity-pg as the postgres user
# inside the db container, passes extra arguments through and exits with
# velocity-pg's status (0 ok, 1 failed, 2 bad usage/config, 130 interrupted).

set positional-arguments

# The app services that must not use the database while it is restored.
# Only those that are running are stopped, and exactly those are started
# again. Override for one run: just app_services="web worker" db-restore NAME
app_services := "web celery-worker celery-beat"

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

# Restore a backup (downtime): check it, stop the running app services, restore, start them again
[no-exit-message]
db-restore file *args:
    #!/usr/bin/env bash
    set -uo pipefail
    file=$1
    shift
    # Ctrl+C must not skip restarting the services: remember it, let the
    # running step end, and decide afterwards.
    interrupted=
    trap 'interrupted=1' INT TERM HUP
    say() { printf 'db-restore: %s\n' "$*" >&2; }

    # 1. Check the file and the server, and count down (Ctrl+C cancels).
    #    Nothing has been stopped yet: a bad file or Ctrl+C ends here.
    docker compose exec -u postgres db velocity-pg restore --check "$file" "$@"
    status=$?
    if [ "$status" -ne 0 ]; then exit "$status"; fi
    if [ -n "$interrupted" ]; then say "interrupted; nothing was changed"; exit 130; fi

    # 2. Stop the app services that are running (and only those).
    running=$(docker compose ps --services --filter status=running)
    status=$?
    if [ "$status" -ne 0 ]; then say "cannot tell which services run; nothing was changed"; exit "$status"; fi
    stopped=()
    for service in {{ app_services }}; do
        if printf '%s\n' "$running" | grep -qxF -- "$service"; then stopped+=("$service"); fi
    done
    restart() {
        if [ "${#stopped[@]}" -gt 0 ]; then
            say "starting ${stopped[*]}"
            docker compose start "${stopped[@]}" || { say "could not start ${stopped[*]}: start them with: docker compose start ${stopped[*]}"; return 1; }
        fi
    }
    if [ "${#stopped[@]}" -gt 0 ]; then
        say "stopping ${stopped[*]}"
        docker compose stop "${stopped[@]}"
        status=$?
        if [ "$status" -ne 0 ]; then say "could not stop ${stopped[*]}; the database was not restored"; restart; exit "$status"; fi
    fi
    if [ -n "$interrupted" ]; then say "interrupted; the database was not restored"; restart; exit 130; fi

    # 3. Restore (no second countdown), then start exactly what was stopped,
    #    also when the restore failed; exit with the restore's status.
    docker compose exec -u postgres db velocity-pg restore --yes "$file" "$@"
    status=$?
    if [ -n "$interrupted" ] && [ "$status" -eq 0 ]; then status=130; fi
    restart || { if [ "$status" -eq 0 ]; then status=1; fi; }
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
