"""GPS driver of the edge agent: NMEA 0183 over a serial port.

framing (bytes -> lines) -> sentences (line -> typed record) -> fix (records -> a Fix where
gpsd reports one: docs/gps.md); reader wraps them around a pyserial port that may vanish and
come back.
"""
from .fix import Fix, FixBuilder
from .framing import NmeaFramer
from .sentences import Decoder

__all__ = ["Fix", "FixBuilder", "NmeaFramer", "Decoder", "NmeaPipeline"]


class NmeaPipeline:
    """framer -> decoder -> builder, for callers that have bytes and want fixes."""

    __slots__ = ("framer", "decoder", "builder")

    def __init__(self) -> None:
        self.framer = NmeaFramer()
        self.decoder = Decoder()
        self.builder = FixBuilder()

    def feed(self, data: bytes) -> list[Fix]:
        out: list[Fix] = []
        decode, bfeed = self.decoder.decode, self.builder.feed
        for line in self.framer.feed(data):
            s = decode(line)
            if s is not None:
                out += bfeed(s)
        return out

    def flush(self) -> list[Fix]:
        out: list[Fix] = []
        for line in self.framer.flush():
            s = self.decoder.decode(line)
            if s is not None:
                out += self.builder.feed(s)
        out += self.builder.flush()
        return out
