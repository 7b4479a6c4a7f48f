"""The pretraining corpus: its families, its curriculum, and seeds no data set can share."""

from __future__ import annotations

import numpy as np
import pytest

from lensing.simulate import corpus
from lensing.simulate.presets import PRESETS
from lensing.simulate.writer import CORPUS_SEED_BASE, image_seed, simulate_dataset


def test_the_curriculum_slides_from_strong_to_the_presets_strength_and_below():
    assert corpus.strength_window(0.0) == pytest.approx(corpus.STRONG)
    assert corpus.strength_window(corpus.CURRICULUM_SHARE) == pytest.approx(corpus.FINAL)
    assert corpus.strength_window(1.0) == pytest.approx(corpus.FINAL)
    lows = [corpus.strength_window(p)[0] for p in np.linspace(0, 1, 11)]
    assert all(a >= b for a, b in zip(lows, lows[1:], strict=False))
    low, high = corpus.FINAL
    assert low < 0 < high  # ends around the presets' own strength, some of it below
    assert corpus.STRONG[0] > 0  # starts stronger than every preset
    with pytest.raises(ValueError, match="expected a number in"):
        corpus.strength_window(1.5)


def test_families_cover_every_preset_and_a_held_out_one_is_never_drawn():
    assert set(corpus.families()) == set(PRESETS)
    assert sum(corpus.families(("test-i",)).values()) == pytest.approx(1.0)
    drawn = {corpus.corpus_image(0, 0, "sphere", i, 0.5, ("test-i",))[1] for i in range(12)}
    assert "test-i" not in drawn and drawn <= {"model-a", "legacy"}
    with pytest.raises(ValueError, match="cannot hold out"):
        corpus.families(("test-ii",))
    with pytest.raises(ValueError, match="every family is held out"):
        corpus.families(tuple(PRESETS))


def test_a_corpus_image_is_fixed_by_its_seed_chunk_class_and_index():
    a, family_a = corpus.corpus_image(3, 5, "vort", 7, 0.2)
    b, family_b = corpus.corpus_image(3, 5, "vort", 7, 0.2)
    assert family_a == family_b and np.array_equal(a, b)
    assert a.shape == (1, 150, 150) and a.min() == 0.0 and a.max() == 1.0
    other, _ = corpus.corpus_image(3, 6, "vort", 7, 0.2)
    assert not np.array_equal(a, other)


def test_wide_presets_are_wider_than_the_presets_and_carry_the_strength():
    rng = np.random.default_rng(0)
    for family, ranges in corpus.WIDE_RANGES.items():
        base = PRESETS[family]
        for name, (low, high) in ranges.items():
            own = getattr(base, name)
            assert low <= own[0] and high >= own[1], (family, name)
        preset = corpus.corpus_preset(family, rng, 0.5)
        assert preset.psf_fwhm in corpus.PSF_FWHM[family]
    strong = corpus.corpus_preset("test-i", rng, 1.0)
    assert strong.substructure_mass == pytest.approx(10 * PRESETS["test-i"].substructure_mass)
    model_a = corpus.corpus_preset("model-a", rng, -1.0)
    assert model_a.subhalo_mass == pytest.approx(
        tuple(m / 10 for m in PRESETS["model-a"].subhalo_mass)
    )


def test_no_data_set_can_share_a_seed_with_the_corpus(tmp_path):
    # Every data set the package writes goes through simulate_dataset, which refuses the
    # corpus's base seeds, and every corpus image's generator starts from one of them.
    with pytest.raises(ValueError, match="reserved for the pretraining corpus"):
        simulate_dataset(tmp_path / "set", {"train": 1, "val": 1}, seed=CORPUS_SEED_BASE)
    assert not (tmp_path / "set").exists()
    for seed, chunk in ((0, 0), (2, 31), (0, corpus.PROBE_CHUNK)):
        entropy = corpus.corpus_seed(seed, chunk, "no", 0).entropy
        assert entropy[0] == CORPUS_SEED_BASE + seed
    largest_set_seed = CORPUS_SEED_BASE - 1
    assert image_seed(largest_set_seed, "train", "no", 1).entropy[0] < CORPUS_SEED_BASE
