"""The encoder's arithmetic on a CPU: which path the flags and the setting choose, and the bf16 agreement check."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from streamrec.encoding import encoder as encoder_module
from streamrec.encoding.encoder import (
    BF16_MIN_COSINE,
    PRECISION_CHECK_TEXTS,
    EncoderError,
    TextEncoder,
    choose_precision,
    cpu_flags,
    item_text,
    native_bf16,
)
from streamrec.lab.synthetic import make_shop
from streamrec.settings import Settings, SettingsError

SAME_RESULT_COSINE = 0.9999
"""bf16 results of one text in differently composed batches (padding changes the rounding, not the vector)."""
SHOP_TEXTS = 64
FILM_TITLES = (
    "Toy Story (1995). Category: Animation. Genres: Animation, Children's, Comedy. Released 1995.",
    "Usual Suspects, The (1995). Category: Crime. Genres: Crime, Thriller. Released 1995.",
    "Shawshank Redemption, The (1994). Category: Drama. Genres: Drama. Released 1994.",
    "Wallace & Gromit: The Best of Aardman Animation (1996). Category: Animation. Genres: Animation. Released 1996.",
    "Cité des enfants perdus, La (1995). Category: Adventure. Genres: Adventure, Sci-Fi. Released 1995.",
)
NO_BF16 = native_bf16(cpu_flags()) is None


@pytest.mark.parametrize(
    ("setting", "device", "flags", "half", "expected"),
    [
        ("auto", "cpu", {"avx2", "avx512f"}, None, "fp32"),
        ("auto", "cpu", {"avx2", "avx512f", "avx512_bf16"}, None, "bf16"),
        ("auto", "cpu", {"amx_tile", "amx_bf16"}, None, "bf16"),
        ("auto", "cpu", set(), None, "fp32"),
        ("fp32", "cpu", {"amx_bf16", "avx512_bf16"}, None, "fp32"),
        ("bf16", "cpu", {"avx2"}, None, "bf16"),
        ("auto", "cuda", {"avx512_bf16"}, None, "fp16"),
        ("fp32", "cuda", set(), None, "fp32"),
        ("auto", "cuda", set(), False, "fp32"),
        ("fp32", "cuda", set(), True, "fp16"),
    ],
)
def test_choose_precision(setting: str, device: str, flags: set[str], half: bool | None, expected: str) -> None:
    assert choose_precision(setting, device, flags, half)[0] == expected


def test_choose_precision_says_why_and_refuses_what_cannot_run() -> None:
    assert choose_precision("auto", "cpu", {"avx2"}) == ("fp32", "no amx_bf16 or avx512_bf16 on this CPU")
    assert choose_precision("auto", "cpu", {"avx512_bf16", "amx_bf16"}) == ("bf16", "amx_bf16 on this CPU")
    assert "emulated" in choose_precision("bf16", "cpu", {"avx2"})[1]
    with pytest.raises(EncoderError, match="CPU path"):
        choose_precision("bf16", "cuda", set())
    with pytest.raises(EncoderError, match="fp16"):
        choose_precision("auto", "cpu", {"avx512_bf16"}, half=True)
    with pytest.raises(EncoderError, match="unknown encoder precision"):
        choose_precision("int8", "cpu", set())
    with pytest.raises(SettingsError, match="encoder_precision"):
        Settings.of(encoder_precision="fp16")


def test_cpu_flags_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nflags : other\n"
    )
    assert cpu_flags(info) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def _fake_cpu(monkeypatch: pytest.MonkeyPatch, agreement: float) -> None:
    """A CPU with native bf16 on which bf16 reaches ``agreement`` cosine to fp32 on one check text."""
    monkeypatch.setattr(encoder_module, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    cosines = np.ones(len(PRECISION_CHECK_TEXTS))
    cosines[3] = agreement
    monkeypatch.setattr(TextEncoder, "_bf16_agreement", lambda self: cosines)


def test_auto_falls_back_to_fp32_when_bf16_disagrees(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_cpu(monkeypatch, BF16_MIN_COSINE - 0.01)
    with caplog.at_level(logging.WARNING, logger=encoder_module.__name__):
        enc = TextEncoder.from_settings(Settings.of(device="cpu"))
    assert (enc.path, enc.precision, enc.bf16_min_cosine) == ("cpu-fp32", "fp32", pytest.approx(0.98))
    assert "0.9800" in enc.precision_reason and "runs in fp32" in caplog.text
    texts = list(PRECISION_CHECK_TEXTS[:4])
    reference = TextEncoder.from_settings(Settings.of(device="cpu", encoder_precision="fp32"))
    np.testing.assert_array_equal(enc.encode(texts), reference.encode(texts))


def test_auto_keeps_bf16_when_it_agrees_and_forced_bf16_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cpu(monkeypatch, BF16_MIN_COSINE)
    kept = TextEncoder.from_settings(Settings.of(device="cpu"))
    assert (kept.path, kept.bf16_min_cosine) == ("cpu-bf16", pytest.approx(BF16_MIN_COSINE))
    _fake_cpu(monkeypatch, 0.5)
    forced = TextEncoder.from_settings(Settings.of(device="cpu", encoder_precision="bf16"))
    assert forced.path == "cpu-bf16" and "0.5000" in forced.precision_reason


@pytest.mark.skipif(NO_BF16, reason="this CPU has no native bf16 (AVX-512 BF16 or AMX)")
def test_bf16_vectors_agree_with_fp32_on_real_texts() -> None:
    texts = [item_text(item) for item in make_shop(SHOP_TEXTS, 1).items] + list(FILM_TITLES)
    bf16 = TextEncoder.from_settings(Settings.of(device="cpu"))
    fp32 = TextEncoder.from_settings(Settings.of(device="cpu", encoder_precision="fp32"))
    assert bf16.path == "cpu-bf16" and bf16.bf16_min_cosine is not None
    assert bf16.bf16_min_cosine >= BF16_MIN_COSINE
    vectors = bf16.encode(texts)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(vectors * fp32.encode(texts), axis=1))) >= BF16_MIN_COSINE
    assert not np.array_equal(vectors, fp32.encode(texts))  # bf16 really ran
    perm = np.random.default_rng(0).permutation(len(texts))
    for again in (bf16.encode([texts[i] for i in perm]), bf16.encode(texts, batch_size=7)[perm]):
        assert float(np.min(np.sum(again * vectors[perm], axis=1))) >= SAME_RESULT_COSINE
