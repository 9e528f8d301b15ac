"""velocity-pg schedule: the timetable, the run, pings and metrics."""
