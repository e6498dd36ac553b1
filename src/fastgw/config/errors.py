from __future__ import annotations


class ConfigError(Exception):
    """Every problem found in a configuration, each as (file, line, message).

    Line 0 means the problem has no line (a dict from Python code, or a file
    that cannot be read).
    """

    def __init__(self, errors: list[tuple[str, int, str]]) -> None:
        super().__init__(errors)
        self.errors = list(errors)

    def __str__(self) -> str:
        return "\n".join(f"{file}:{line}: {message}" for file, line, message in self.errors)
