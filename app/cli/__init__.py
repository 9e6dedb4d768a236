"""The command line's vocabulary: the console (log lines, the one ``error:`` line, exit statuses),
option declarations shared by the entry points, and output path checks."""
