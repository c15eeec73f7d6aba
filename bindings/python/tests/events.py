"""Event classes the tests share, importable by their child processes."""
from lahja import BaseEvent, BaseRequestResponseEvent, RawEvent


class Ping(BaseEvent):
    def __init__(self, n=0, data=b""):
        self.n = n
        self.data = data


class Pong(BaseEvent):
    def __init__(self, n=0):
        self.n = n


class SubPing(Ping):
    """A subclass: not delivered to Ping's subscribers (exact types)."""


class Answer(BaseEvent):
    def __init__(self, text):
        self.text = text


class Wrong(BaseEvent):
    pass


class Question(BaseRequestResponseEvent[Answer]):
    def __init__(self, text=""):
        self.text = text

    @staticmethod
    def expected_response_type():
        return Answer


class Tick(RawEvent):
    """Raw bytes under the C examples' type name."""

    lahja_type = "Tick"


class Status(RawEvent):
    lahja_type = "Status"


class StatusReply(RawEvent):
    lahja_type = "Status.reply"


class RawStatus(RawEvent):
    """A raw request the C tool answers (lahja respond Status ...)."""

    lahja_type = "Status"

    @staticmethod
    def expected_response_type():
        return StatusReply
