"""User-facing input errors: one line, naming the file/field/line, exit code 2."""


class InputError(Exception):
    """Bad user input (config, workload, CLI value, profile). The message is one line."""

    exit_code = 2
