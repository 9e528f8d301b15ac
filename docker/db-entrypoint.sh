#!/bin/sh
# The db image's entrypoint: give /backups to postgres, then start the server
# exactly as the official image does (its docker-entrypoint.sh, same arguments).
#
# velocity-pg runs as postgres and needs to write in /backups. A backup-data
# volume made by the Django Velocity template's stock image belongs to root
# (that image has no /backups folder, so the volume's root is root's), and the
# old scripts' dumps in it are root's too. Only the folder itself changes
# hands (postgres, mode 0700); the files in it are left as they are: postgres
# can read them, and may delete them because the folder is its own.
set -eu
if [ "$(id -u)" = 0 ] && [ -d /backups ] && [ ! -L /backups ]; then
	owner=$(id -u postgres)
	if [ "$(stat -c %u /backups)" != "$owner" ]; then
		chown postgres:postgres /backups
		chmod 0700 /backups
		echo "velocity-pg: /backups now belongs to postgres (mode 0700), so velocity-pg can write there" >&2
	fi
fi
exec docker-entrypoint.sh "$@"
