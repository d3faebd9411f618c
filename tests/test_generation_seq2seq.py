"""GenerationSpec on Hugging Face encoder-decoders (T5, BART with its forced EOS, Whisper with suppressed
tokens): tokens equal ``generate`` in every variant (tests/generation_tests.py)."""
from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from generation_tests import GenerationTests, case_params, make_case  # noqa: E402


@pytest.fixture(scope="module", params=case_params(["t5", "bart", "whisper"]))
def case(request):
    return make_case(request)


class TestEncoderDecoder(GenerationTests):
    """The encoder and the first decoder call in encode; the self-attention cache grows, the cross one not."""


def test_a_dynamic_batch_capture_decodes_other_batches_exactly():
    from generation_tests import check_dynamic_batch

    check_dynamic_batch("bart")
