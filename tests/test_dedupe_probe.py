"""Multi-probe buckets on real Beam: a pair 10 bits apart whose bits touch every LSH band
meets through its neighbouring buckets (and passes or fails the colour check there), a
pair beyond the guarantee does not, and nothing is copied member by member."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from dedupe import DedupeConfig
from dedupe.fingerprint import THUMBNAILS_BYTES, band_slices, band_values
from dedupe.perceptual import PerceptualStage
from dedupe.profile import Profile

BANDS = DedupeConfig().phash_bands


def _spread(bits_per_band: list[int], seed: int) -> int:
    """A mask with `bits_per_band[i]` bits set inside band i."""
    rng = np.random.default_rng(seed)
    mask = 0
    for (shift, width), count in zip(band_slices(BANDS), bits_per_band, strict=True):
        for bit in rng.choice(width.bit_length(), size=count, replace=False).tolist():
            mask |= 1 << (shift + bit)
    return mask


def _thumbnail(level: int) -> bytes:
    return bytes([level]) * THUMBNAILS_BYTES


def _profiles() -> list[Profile]:
    rng = np.random.default_rng(7)
    base = [int(h) for h in rng.integers(0, 2**63, size=3)]
    ten = _spread([1, 2, 2, 2, 2, 1], 1)  # 10 bits, every band touched, one by a single bit
    twelve = _spread([2, 2, 2, 2, 2, 2], 2)  # 12 bits, two per band: beyond 2 * 6 - 1
    pairs = [
        ("a", base[0], base[0] ^ ten, 100, 100),  # same colours: duplicates
        ("b", base[1], base[1] ^ ten, 100, 160),  # other colours: not duplicates
        ("c", base[2], base[2] ^ twelve, 100, 100),  # too far for the threshold anyway
    ]
    profiles = []
    for name, first, second, colour_1, colour_2 in pairs:
        assert not set(band_values(first, BANDS)) & set(band_values(second, BANDS))
        profiles.append(Profile(key=f"{name}1", phash=first, thumbnail=_thumbnail(colour_1)))
        profiles.append(Profile(key=f"{name}2", phash=second, thumbnail=_thumbnail(colour_2)))
    return profiles


def _expect_drops(config: DedupeConfig, expected: list[tuple[str, str, float]]) -> None:
    """Run the perceptual stage and check its drops: (key, survivor, Hamming bits)."""
    options = PipelineOptions(["--direct_running_mode=in_memory"])
    with beam.Pipeline(runner=FnApiRunner(), options=options) as pipeline:
        _, decisions = pipeline | beam.Create(_profiles()) | PerceptualStage(config)
        drops = decisions | beam.MapTuple(lambda key, d: (key, d.survivor, d.value))
        assert_that(drops, equal_to(expected))


def test_a_pair_sharing_no_band_meets_through_neighbouring_buckets() -> None:
    assert DedupeConfig().phash_probe  # the default
    _expect_drops(DedupeConfig(), [("a2", "a1", 10.0)])


def test_without_probing_the_same_pair_is_missed() -> None:
    _expect_drops(DedupeConfig(phash_probe=False), [])


def test_probed_pairs_pass_the_colour_check_only_when_colours_agree() -> None:
    # without the colour check, the pair of other colours is dropped too
    _expect_drops(DedupeConfig(colour_threshold=None), [("a2", "a1", 10.0), ("b2", "b1", 10.0)])
