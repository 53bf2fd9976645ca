"""Claims as data: verdicts at the threshold boundary, aggregation, not tested, markdown."""

from __future__ import annotations

import pytest

from tfquant.errors import TfquantError
from tfquant.study import Aggregate, Claim, Compare, Verdict, claims_markdown, evaluate_claim, verdict_of

NEAR = Claim(claim="int8 within 2 pt of float", paper="p",
             compares=(Compare(a="int8", b="float", op=">=", threshold=-2.0),))


def _values(**int8: float) -> dict[tuple[str, str], float]:
    v = {}
    for model, acc in int8.items():
        v[(model, "float")] = 0.90
        v[(model, "int8")] = acc
    return v


def test_inclusive_threshold_holds_exactly_at_the_boundary_and_fails_one_image_past_it():
    # 0.90 - 0.88 is 2.0000000000000018 pt in floating point: exactly 2 pt must hold.
    assert evaluate_claim(NEAR, _values(cnn=0.88), ["cnn"]).verdict is Verdict.HELD
    assert evaluate_claim(NEAR, _values(cnn=0.8799), ["cnn"]).verdict is Verdict.NOT_HELD


def test_strict_comparison_does_not_hold_at_the_boundary():
    collapse = Claim(claim="c", paper="p", compares=(Compare(a="int8", b="float", op="<", threshold=-2.0),))
    assert evaluate_claim(collapse, _values(cnn=0.88), ["cnn"]).verdict is Verdict.NOT_HELD
    assert evaluate_claim(collapse, _values(cnn=0.8799), ["cnn"]).verdict is Verdict.HELD


def test_all_vs_graded_aggregation_and_fails_on_text():
    values = _values(a=0.90, b=0.50)
    strict = evaluate_claim(NEAR, values, ["a", "b"])
    assert strict.verdict is Verdict.NOT_HELD and "fails on b" in strict.ours
    graded = Claim(claim="c", paper="p", compares=NEAR.compares, aggregate=Aggregate.GRADED)
    assert evaluate_claim(graded, values, ["a", "b"]).verdict is Verdict.PARTLY
    assert evaluate_claim(graded, _values(a=0.5, b=0.5), ["a", "b"]).verdict is Verdict.NOT_HELD


def test_unmeasured_groups_are_skipped_and_nothing_measured_is_not_tested():
    result = evaluate_claim(NEAR, {("cnn", "float"): 0.9}, ["cnn"])
    assert result.verdict is Verdict.NOT_TESTED and result.ours == "no records"
    prefixed = Claim(claim="c", paper="p", compares=NEAR.compares, groups="mobilenet")
    assert evaluate_claim(prefixed, _values(cnn=0.1, mobilenet_v1=0.9), ["cnn", "mobilenet_v1"]).verdict is Verdict.HELD


def test_abs_comparison_and_description_format():
    sim = Claim(claim="c", paper="p", compares=(
        Compare(a="int8", b="float", op="abs<=", threshold=1.0, text="{a:.2f} vs {b:.2f} ({pt:+.1f} pt)"),))
    up = evaluate_claim(sim, _values(cnn=0.91), ["cnn"])
    assert up.verdict is Verdict.HELD and up.ours == "cnn 0.91 vs 0.90 (+1.0 pt)"
    assert evaluate_claim(sim, _values(cnn=0.8899), ["cnn"]).verdict is Verdict.NOT_HELD


def test_verdict_of_and_markdown():
    assert verdict_of([]) is Verdict.NOT_TESTED
    assert verdict_of([True, False], Aggregate.GRADED) is Verdict.PARTLY
    line = claims_markdown([evaluate_claim(NEAR, _values(cnn=0.89), ["cnn"])])[0]
    assert line == "- **held**: int8 within 2 pt of float. Paper: p. Ours: cnn -1.00 pt."


def test_bad_claims_are_rejected():
    with pytest.raises(TfquantError, match="=>"):
        Compare(a="a", b="b", op="=>", threshold=0.0)
    with pytest.raises(TfquantError, match="no comparison"):
        Claim(claim="c", paper="p", compares=())


def test_listed_claims_and_the_claims_section():
    from tfquant.study import TIE_PT, claims_section, listed_claim

    r = listed_claim("c", "p", [("cnn", True, "ok"), ("vit", None, "not counted"), ("mnv1", False, "bad")])
    assert r.verdict is Verdict.PARTLY
    assert r.ours == "cnn ok; vit not counted; mnv1 bad (fails on mnv1)"
    only_fail = listed_claim("c", "p", [("cnn", None, "n/a"), ("mnv1", False, "bad")])
    assert only_fail.verdict is Verdict.NOT_HELD and only_fail.ours == "cnn n/a; mnv1 bad"
    assert listed_claim("c", "p", []).ours == "no records" and listed_claim("c", "p", []).verdict is Verdict.NOT_TESTED
    assert claims_section("Did it hold?", "How.", [r]) == [
        "", "## Did it hold?", "", "How.", "", "- **partly**: c. Paper: p. Ours: " + r.ours + "."]
    assert TIE_PT == 0.2
