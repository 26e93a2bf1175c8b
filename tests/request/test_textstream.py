"""UTF-8 hold-back, stop sequences and trimming, with a byte-level 'tokenizer': one token = one byte."""

from __future__ import annotations

import pytest

from llmserve.request.textstream import AnswerText, IncrementalDecoder, StopFilter, TrimFilter


def byte_decode(ids):
    return bytes(ids).decode("utf-8", errors="replace")


def tokens(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def stream(pipe, ids):
    chunks = [pipe.push(i) for i in ids]
    return [c for c in chunks if c]


@pytest.mark.parametrize("text", ["año", "😀 ok", "€€", "ñ", "plain ascii", "日本語のテキスト"])
def test_decoder_never_emits_half_a_character(text):
    decoder = IncrementalDecoder(byte_decode)
    chunks = stream(decoder, tokens(text))
    assert all("\ufffd" not in c for c in chunks)
    assert "".join(chunks) + decoder.flush() == text


def test_decoder_holds_a_multibyte_character_until_complete():
    decoder = IncrementalDecoder(byte_decode)
    emoji = tokens("😀")  # 4 bytes
    assert [decoder.push(b) for b in emoji[:3]] == ["", "", ""]
    assert decoder.push(emoji[3]) == "😀"


def test_decoder_flush_releases_a_truly_invalid_sequence():
    decoder = IncrementalDecoder(byte_decode)
    assert decoder.push(0xE2) == ""
    assert decoder.flush() == "\ufffd"


def test_stop_filter_cuts_exactly_and_never_emits_the_stop():
    stop = StopFilter(["\nQuestion:"])
    out = [stop.push(c) for c in ["Paris", ".\n", "Ques", "tion: next"]]
    assert "".join(out) == "Paris."
    assert stop.stopped
    assert stop.push("more") == "" and stop.flush() == ""


def test_stop_filter_releases_a_false_alarm():
    stop = StopFilter(["STOP"])
    assert stop.push("ST") == ""
    assert stop.push("ay") == "STay"
    assert not stop.stopped


def test_stop_filter_flushes_a_held_prefix_at_the_end():
    stop = StopFilter(["STOP"])
    assert stop.push("end ST") == "end "
    assert stop.flush() == "ST"


def test_stop_filter_picks_the_earliest_of_several_stops():
    stop = StopFilter(["b", "a"])
    assert stop.push("xyab") == "xy"


def test_trim_drops_leading_and_trailing_whitespace_but_keeps_inner():
    trim = TrimFilter()
    out = [trim.push(c) for c in [" ", "\n Hola", " ", " mundo", "\n\n"]]
    assert "".join(out) == "Hola  mundo"


@pytest.mark.parametrize("split", [1, 2, 3, 5])
def test_answer_text_with_a_stop_spanning_tokens(split):
    answer = "Madrid es la capital de España."
    full = " " + answer + "\nQuestion: ¿y Francia?"
    ids = tokens(full)
    pipe = AnswerText(byte_decode, ["\nQuestion:"])
    out = []
    for i in range(0, len(ids), split):
        for t in ids[i : i + split]:
            out.append(pipe.push(t))
        if pipe.stopped:
            break
    out.append(pipe.finish())
    assert "".join(out) == answer
    assert all("\ufffd" not in c for c in out)


def test_answer_text_without_stop_returns_everything_on_finish():
    pipe = AnswerText(byte_decode, ["zzz"])
    out = stream(pipe, tokens("Hola, ¿qué tal? zz"))
    assert "".join(out) + pipe.finish() == "Hola, ¿qué tal? zz"
