"""Definition-time validation of `Security`'s header names."""

from __future__ import annotations

import pytest

from oqronkit import ConfigurationError, Security


@pytest.mark.parametrize("header", ["Host", "content-length", "Idempotency-Key", "X-Oqron-Event"])
def test_a_signature_cannot_go_in_a_header_oqronkit_sets(header: str) -> None:
    with pytest.raises(ConfigurationError, match="set by OqronKit"):
        Security(signing_secret="s", signing_header=header)
    with pytest.raises(ConfigurationError, match="set by OqronKit"):
        Security(signing_secret="s", timestamp_header=header)


def test_signature_and_timestamp_headers_differ_and_can_be_renamed() -> None:
    with pytest.raises(ConfigurationError, match="must differ"):
        Security(signing_secret="s", signing_header="X-Sig", timestamp_header="x-sig")
    renamed = Security(signing_secret="s", signing_header="X-Sig", timestamp_header="X-Ts")
    assert (renamed.signing_header, renamed.timestamp_header) == ("X-Sig", "X-Ts")
