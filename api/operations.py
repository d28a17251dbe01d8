"""Which of the Pinpoint model's operations Herald serves, decided by its own routes.

``worker.wire.operations.OPERATIONS`` lists every operation of botocore's model (method and
request URI template). An operation is implemented when a Pinpoint route of the API answers
its method on its URI; nothing else is consulted, so the table, the 404 that names an
operation Herald lacks, and the README's list (tests/test_operations.py) cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi.routing import APIRoute

from api.routes import ROUTERS
from worker.wire.operations import OPERATIONS

_LABEL = re.compile(r"\{[^}]+\}")


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    uri: str
    implemented: bool

    @property
    def pattern(self) -> re.Pattern[str]:
        """The URI template over a raw path: each label is one segment."""
        parts = _LABEL.split(self.uri)
        return re.compile("[^/]+".join(re.escape(part) for part in parts) + "$")


def _served(method: str, uri: str) -> bool:
    sample = _LABEL.sub("x", uri)
    return any(
        isinstance(route, APIRoute) and method in (route.methods or set())
        and route.path_regex.match(sample) is not None
        for router in ROUTERS for route in router.routes
    )


TABLE: tuple[Operation, ...] = tuple(
    Operation(name, method, uri, _served(method, uri)) for name, method, uri in OPERATIONS
)


def unimplemented(method: str, raw_path: str) -> str | None:
    """The name of the model's operation a request that no route served was calling, if it
    is one Herald does not implement."""
    for operation in TABLE:
        if (not operation.implemented and operation.method == method
                and operation.pattern.match(raw_path)):
            return operation.name
    return None


README_BEGIN = "<!-- operations: written by `python -m api.operations`; do not edit by hand -->"
README_END = "<!-- /operations -->"


def readme_list() -> str:
    """The README's list of every operation of the model with its status."""
    rows = [f"| `{o.name}` | `{o.method} {o.uri}` | "
            f"{'implemented' if o.implemented else 'not implemented'} |" for o in TABLE]
    return "\n".join([README_BEGIN, "", "| operation | request | status |", "|---|---|---|",
                      *rows, "", README_END])


if __name__ == "__main__":
    from pathlib import Path

    readme = Path(__file__).resolve().parent.parent / "README.md"
    text = readme.read_text()
    begin, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    readme.write_text(text[:begin] + readme_list() + text[end:])
