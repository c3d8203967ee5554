"""The one-line error convention's helper."""

def test_first_line_quotes_one_line_of_an_underlying_failure():
    from gradlab.errors import first_line

    assert first_line(RuntimeError("\n  shape mismatch: 3 vs 4\nstack detail\n")) == "shape mismatch: 3 vs 4"
    assert first_line(KeyError()) == "KeyError"
