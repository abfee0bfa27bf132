"""Turn a library's exception into the short reason a one-line FedSegError message can carry."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of `error`'s text, or its type name when it has none."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
