"""The paper's PTQ findings as data (:data:`CLAIMS`), checked against the records."""

from __future__ import annotations

from typing import Sequence

from tfquant.experiments.whitepaper_ptq.cells import (CELLS, COLLAPSE_PT, FLOAT, LARGE_SPREAD, MIN_RANK_CORRELATION,
                                                      NEAR_FLOAT_PT, SIM_TFLITE_PT, SPREAD, TIE_PT)
from tfquant.study import (Aggregate, Claim, ClaimResult, Compare, RecordSet, Verdict, evaluate_claims, image_pt,
                           test_images)



def _vs_float(cell: str, op: str, threshold: float, text: str = "{pt:+.2f} pt") -> Compare:
    return Compare(a=cell, b=FLOAT, op=op, threshold=threshold, text=text)


def _near_float(cell: str, what: str, paper: str) -> Claim:
    """'``what`` within NEAR_FLOAT_PT of float on every model'."""
    return Claim(claim=f"{what} within {NEAR_FLOAT_PT:g} pt of float on every model", paper=paper,
                 compares=(_vs_float(cell, ">=", -NEAR_FLOAT_PT),))


def _not_worse(a: str, b: str, what: str, paper: str) -> Claim:
    """'``a`` >= ``b``', a tie within TIE_PT counting as held."""
    return Claim(claim=f"{what} (tie within {TIE_PT:g} pt)", paper=paper,
                 compares=(Compare(a=a, b=b, op=">=", threshold=-TIE_PT, text="{a:.4f} vs {b:.4f}"),))


_PER_LAYER = "per-layer (per-tensor)"
CLAIMS: tuple[Claim, ...] = (
    # Table A
    _near_float("w8_asym_per_tensor", f"8-bit weight-only PTQ, asymmetric {_PER_LAYER},",
                "fails on MobileNet-v1 (0.001 vs float 0.709), holds on ResNet-v1-50 (0.75 vs 0.752)"),
    Claim(claim=f"8-bit {_PER_LAYER} weights collapse (> {COLLAPSE_PT:g} pt below float) on the "
                "depthwise-separable MobileNets", paper="MobileNet-v1: 0.709 -> 0.001",
          compares=(_vs_float("w8_asym_per_tensor", "<", -COLLAPSE_PT),),
          aggregate=Aggregate.GRADED, groups="mobilenet"),
    _near_float("w8_asym_per_channel", "8-bit weight-only PTQ, asymmetric per-channel,",
                "MobileNet-v1 0.704 vs float 0.709"),
    _not_worse("w8_asym_per_channel", "w8_asym_per_tensor",
               f"per-channel >= {_PER_LAYER} (8-bit asymmetric weights)", "MobileNet-v1 0.704 vs 0.001"),
    _not_worse("w8_asym_per_channel", "w8_sym_per_channel",
               "asymmetric per-channel >= symmetric per-channel (8-bit weights)", "MobileNet-v1 0.704 vs 0.591"),
    # Table B
    _near_float("w8a8_per_channel", "8-bit weights + activations (int8 per-channel, tflite)",
                "headline: 8-bit PTQ within 2% of float"),
    _not_worse("w8a8_per_channel", "w8a8_per_tensor", f"int8 per-channel >= int8 {_PER_LAYER} weights (tflite)",
               "per-channel weights are the recommended PTQ start"),
    Claim(claim=f"(sanity, not a paper claim) the simulation matches the interpreter within "
                f"{SIM_TFLITE_PT:g} pt on both int8 cells", paper="-",
          compares=tuple(Compare(a=f"{c}_sim", b=c, op="abs<=", threshold=SIM_TFLITE_PT,
                                 text=f"{c.removeprefix('w8a8_')} sim - tflite {{pt:+.2f}} pt")
                         for c in ("w8a8_per_channel", "w8a8_per_tensor"))),
    # Table C
    Claim(claim=f"4-bit weights (8-bit activations) PTQ: {_PER_LAYER} collapses (> {COLLAPSE_PT:g} "
                f"pt below float) while per-channel holds up (<= {COLLAPSE_PT:g} pt), asymmetric weights",
          paper="PTQ collapses at 4 bits on MobileNet-v1 (0.001-0.02); only QAT per-channel recovers "
                "(0.65) - the QAT row is in the QAT tables",
          compares=(_vs_float("w4a8_asym_per_tensor", "<", -COLLAPSE_PT, "per-layer {pt:+.2f} pt"),
                    _vs_float("w4a8_asym_per_channel", ">=", -COLLAPSE_PT, "per-channel {pt:+.2f} pt"))),
    _not_worse("w4a8_asym_per_channel", "w4a8_asym_per_tensor", f"per-channel >= {_PER_LAYER} at 4-bit weights",
               "per-channel is what makes 4-bit weights workable"),
    # Table D
    Claim(claim=f"low-bit activations hurt more than low-bit weights, tested in PTQ: W8A4 loses more "
                f"than W4A8 (asym per-channel), by > {TIE_PT:g} pt",
          paper="a QAT result (MobileNet-v1 QAT W8A4 0.64 vs W4A8 0.65; those rows belong to the QAT "
                "tables); the paper's PTQ numbers go the other way (W8A4 0.48, W4A8 <= 0.02)",
          compares=(Compare(a="w8a4_per_channel", b="w4a8_asym_per_channel", op="<", threshold=-TIE_PT,
                            text="W8A4 - W4A8 {pt:+.2f} pt"),)),
)
"""The paper's qualitative PTQ claims, as data (pt of top-1; thresholds above)."""


def spread_claim(records: RecordSet, models: Sequence[str]) -> ClaimResult | None:
    """'Per-layer loss follows the spread': Spearman(max ratio, 4-bit per-tensor minus
    per-channel loss) over the models with both cells, held at >= :data:`MIN_RANK_CORRELATION`.

    None when no spread was measured.
    """
    import math

    from tfquant.evaluation.weight_spread import rank_correlation

    spread = {m: r for m in models if (r := records.ok((m, SPREAD))) is not None}
    if not spread:
        return None
    acc = records.values("accuracy")
    usable = [m for m in spread if all((m, c) in acc for c in (FLOAT, "w4a8_asym_per_tensor", "w4a8_asym_per_channel"))]
    worst = max(spread.values(), key=lambda r: r.max_ratio)
    large = [m for m, r in spread.items() if r.max_ratio >= LARGE_SPREAD]
    text = (f"largest max/min channel-range ratio: {worst.max_ratio:.1f} ({worst.model}, "
            f"{worst.max_ratio_layer}); models with a layer >= {LARGE_SPREAD:g}: {', '.join(large) or 'none'}")
    verdict = Verdict.NOT_TESTED
    if len(usable) >= 3:
        gaps = [100.0 * (acc[(m, "w4a8_asym_per_channel")] - acc[(m, "w4a8_asym_per_tensor")]) for m in usable]
        rho = rank_correlation([spread[m].max_ratio for m in usable], gaps)
        text += (f"; Spearman(max ratio, 4-bit per-layer minus per-channel loss) over "
                 f"{len(usable)} models = {rho:.2f}")
        if not math.isnan(rho):
            verdict = Verdict.HELD if rho >= MIN_RANK_CORRELATION else Verdict.NOT_HELD
    else:
        text += "; fewer than 3 models with 4-bit cells, no rank correlation"
    return ClaimResult(
        "per-layer loss follows the spread of per-channel weight ranges after BN folding "
        f"(held when Spearman >= {MIN_RANK_CORRELATION:g})",
        "BN folding's γ/σ spreads MobileNet channel ranges over orders of magnitude; one "
        "scale per layer wipes out the small channels", text, verdict)


def findings(records: RecordSet, models: Sequence[str]) -> list[ClaimResult]:
    """:data:`CLAIMS` and the spread claim, evaluated on ``records`` (groups = models)."""
    values = {k: v for k, v in records.values("accuracy").items() if k[1] in CELLS}
    out = evaluate_claims(CLAIMS, values, models)
    spread = spread_claim(records, models)
    if spread is not None:
        out.insert(-1, spread)
    return out


def claims_header(limit: int | None) -> str:
    """The paragraph above the claims: how they are computed and their thresholds."""
    return (f"Computed from the records above; pt = accuracy points against the model's float "
            f"cell. Thresholds: near float <= {NEAR_FLOAT_PT:g} pt, collapse > "
            f"{COLLAPSE_PT:g} pt, ties within {TIE_PT:g} pt, sim vs tflite <= "
            f"{SIM_TFLITE_PT:g} pt, large spread >= {LARGE_SPREAD:g}. On "
            f"{test_images(limit)}, one test image is {image_pt(limit)} pt.")
