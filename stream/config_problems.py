"""What a config file's check reports: one `PATH:LINE: dotted.field: what is wrong` per problem, all at
once. Shared by the gateway's config (`box/config.py`) and the county centre's (`county/config.py`), so a
field technician reads one format from both; here, in the room every other one imports, so neither
service's config module imports the other's."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigProblem:
    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
