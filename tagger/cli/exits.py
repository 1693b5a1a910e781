"""Exit codes, declared once: every command returns one of these, and :func:`tagger.cli.main` maps errors
to theirs (each :class:`tagger.errors.TaggerError` carries its own ``exit_code``)."""

EXIT_OK, EXIT_FILES_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # what a shell shows for a program ended by SIGPIPE: the output's reader went away
