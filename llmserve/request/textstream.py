"""Token ids to streamed text: whole UTF-8 characters only, stop sequences cut exactly. No torch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDecoder:
    """Decodes a growing list of token ids into text deltas, holding back a split UTF-8 character.

    As in text-generation-inference: decoding from a few tokens back keeps tokenizers' spacing right.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT_CHAR):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """What is still held back; a truly invalid byte sequence comes out as U+FFFD."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]


class StopFilter:
    """Passes text through until a stop sequence appears; never emits any part of one."""

    def __init__(self, stop_sequences: Sequence[str]) -> None:
        self._stops = [s for s in stop_sequences if s]
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        if self.stopped:
            return ""
        buffer = self._held + text
        hits = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return buffer[: min(hits)]
        keep = self._partial_stop_len(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial_stop_len(self, buffer: str) -> int:
        """Length of the longest tail of `buffer` that a stop sequence starts with."""
        longest = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:n]):
                    longest = n
                    break
        return longest


class TrimFilter:
    """Drops the answer's leading whitespace and holds whitespace back until more text follows it."""

    def __init__(self) -> None:
        self._started = False
        self._held = ""

    def push(self, text: str) -> str:
        if not self._started:
            text = text.lstrip()
            if not text:
                return ""
            self._started = True
        body = text.rstrip()
        if not body:
            self._held += text
            return ""
        out = self._held + body
        self._held = text[len(body) :]
        return out


class AnswerText:
    """The whole pipeline: token ids in, clean answer text out."""

    def __init__(self, decode: Callable[[Sequence[int]], str], stop_sequences: Sequence[str]) -> None:
        self._decoder = IncrementalDecoder(decode)
        self._stops = StopFilter(stop_sequences)
        self._trim = TrimFilter()

    @property
    def stopped(self) -> bool:
        """True once a stop sequence has appeared: no more tokens are needed."""
        return self._stops.stopped

    def push(self, token_id: int) -> str:
        return self._trim.push(self._stops.push(self._decoder.push(token_id)))

    def finish(self) -> str:
        """The rest of the answer once generation has ended."""
        return self._trim.push(self._stops.push(self._decoder.flush()) + self._stops.flush())
