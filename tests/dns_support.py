"""A test-controlled resolver for the browser's URL guard: no DNS query ever leaves the machine."""

from __future__ import annotations

import socket


class FakeDns:
    """Fixed answers per name; any other host must be numeric (``AI_NUMERICHOST``: no DNS query).

    An answer that is a list of lists is a sequence: the n-th lookup of the name gets the
    n-th list (the last one repeats), which is how DNS rebinding looks to a client.
    """

    def __init__(self, answers: dict[str, list[str] | list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answer = self.answers.get(host)
        if answer is None:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
            return [str(i[4][0]) for i in infos]
        if answer and isinstance(answer[0], list):
            index = min(self.calls.count(host), len(answer)) - 1
            return list(answer[index])
        return list(answer)  # type: ignore[arg-type]
