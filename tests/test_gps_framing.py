"""NmeaFramer: raw serial bytes -> candidate sentence lines."""
from smartcity.edge.gps.framing import MAX_SENTENCE_LEN, NmeaFramer

GGA = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
RMC = b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"


def test_sentence_split_across_reads_comes_out_whole_once_terminated():
    f = NmeaFramer()
    assert f.feed(GGA[:10]) == []
    assert f.feed(GGA[10:40]) == []
    assert f.feed(GGA[40:] + b"\r") == [GGA.decode()]
    assert f.feed(b"\n") == []


def test_every_terminator_variant_separates_sentences():
    for term in (b"\r\n", b"\n", b"\r", b"\n\r"):
        f = NmeaFramer()
        assert f.feed(GGA + term + RMC + term) == [GGA.decode(), RMC.decode()], term


def test_byte_by_byte_feeding_gives_the_same_lines():
    f = NmeaFramer()
    out = []
    for b in GGA + b"\r\n" + RMC + b"\r\n":
        out += f.feed(bytes([b]))
    assert out == [GGA.decode(), RMC.decode()]


def test_nul_padding_is_removed():
    f = NmeaFramer()
    assert f.feed(b"\x00\x00" + GGA[:20] + b"\x00" + GGA[20:] + b"\r\n\x00") == [GGA.decode()]


def test_binary_garbage_line_is_rejected_and_counted():
    f = NmeaFramer()
    out = f.feed(b"\xb5\x62\x01\x07\xff\xfe\r\n" + GGA + b"\r\n")
    assert out == [GGA.decode()]
    assert f.rejected["garbage"] == 1


def test_non_printable_byte_inside_a_sentence_rejects_it():
    f = NmeaFramer()
    bad = GGA[:30] + b"\x07" + GGA[31:]
    assert f.feed(bad + b"\r\n") == []
    assert f.rejected["garbage"] == 1


def test_noise_before_dollar_is_dropped_and_the_sentence_kept():
    f = NmeaFramer()
    assert f.feed(b"xx%" + GGA + b"\r\n") == [GGA.decode()]
    assert f.rejected["prefix_noise"] == 1


def test_truncated_sentence_followed_by_whole_one_resyncs_on_last_dollar():
    f = NmeaFramer()
    assert f.feed(b"$GPGGA,030130" + RMC + b"\r\n") == [RMC.decode()]


def test_over_long_line_is_rejected():
    f = NmeaFramer()
    long_line = b"$GPTXT," + b"A" * MAX_SENTENCE_LEN + b"*00"
    assert f.feed(long_line + b"\r\n" + GGA + b"\r\n") == [GGA.decode()]
    assert f.rejected["too_long"] == 1


def test_line_of_exactly_the_limit_is_accepted():
    f = NmeaFramer()
    body = b"$GPTXT," + b"A" * (MAX_SENTENCE_LEN - 10) + b"*00"
    assert len(body) == MAX_SENTENCE_LEN
    assert f.feed(body + b"\n") == [body.decode()]


def test_endless_stream_without_terminator_is_bounded_and_counted():
    f = NmeaFramer()
    for _ in range(100):
        assert f.feed(b"\xff" * 100) == []
    assert f.rejected["overflow"] >= 1
    assert len(f._buf) <= 1024
    assert f.feed(b"\r\n" + GGA + b"\r\n") == [GGA.decode()]


def test_comment_lines_of_captures_are_skipped():
    f = NmeaFramer()
    assert f.feed(b"# Name: test\n" + GGA + b"\n# between\n" + RMC + b"\n") == [GGA.decode(),
                                                                              RMC.decode()]
    assert f.comments == 2
    assert sum(f.rejected.values()) == 0


def test_flush_returns_an_unterminated_last_line():
    f = NmeaFramer()
    assert f.feed(GGA) == []
    assert f.flush() == [GGA.decode()]
    assert f.flush() == []


def test_reset_forgets_a_partial_line():
    f = NmeaFramer()
    f.feed(GGA[:30])
    f.reset()
    assert f.feed(GGA[30:] + b"\r\n") == []
