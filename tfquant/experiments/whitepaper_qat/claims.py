"""The paper's QAT findings as data (:data:`CLAIMS`) and the two that are not "A vs B"."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from tfquant.experiments.whitepaper_qat import cells as wq
from tfquant.study import (
    Aggregate,
    Claim,
    ClaimResult,
    Compare,
    evaluate_claims,
    listed_claim,
)


def _tie(a: str, b: str, text: str) -> Compare:
    """``a`` at least as good as ``b``, a tie within :data:`TIE_PT` allowed."""
    return Compare(a=a, b=b, op=">=", threshold=-wq.TIE_PT, text=text + " {pt:+.2f} pt")


_GRADED = Aggregate.GRADED
CLAIMS: tuple[Claim, ...] = (
    Claim(claim=f"8-bit QAT (int8 per-channel, tflite) within {wq.QAT_NEAR_FLOAT_PT:g} pt of float "
                "on every model",
          paper="QAT brings 8-bit models to within 1% of float", aggregate=_GRADED,
          compares=(Compare(a="qat_w8a8_per_channel", b=wq.FLOAT, op=">=", threshold=-wq.QAT_NEAR_FLOAT_PT),)),
    Claim(claim=f"8-bit QAT >= 8-bit PTQ (both int8 per-channel, tflite; tie within {wq.TIE_PT:g} pt)",
          paper="QAT recovers what PTQ loses", aggregate=_GRADED,
          compares=(_tie("qat_w8a8_per_channel", "ptq_w8a8_per_channel", "QAT - PTQ"),)),
    Claim(claim=f"4-bit QAT: per-channel (tflite) >= per-layer (sim; BN-folded layers) weights "
                f"(tie within {wq.TIE_PT:g} pt)",
          paper="per-channel weights are what make 4-bit weights workable", aggregate=_GRADED,
          compares=(_tie("qat_w4a8_per_channel", "qat_w4a8_per_layer", "per-channel - per-layer"),)),
    Claim(claim=f"low-bit activations hurt more than low-bit weights: QAT W8A4 loses more than QAT "
                f"W4A8 (both sim), by > {wq.TIE_PT:g} pt",
          paper="MobileNet-v1 QAT W8A4 0.64 vs W4A8 0.65 (float 0.709)", aggregate=_GRADED,
          compares=(Compare(a="qat_w8a4_per_channel", b="qat_w4a8_per_channel_sim", op="<",
                            threshold=-wq.TIE_PT, text="W8A4 - W4A8 {pt:+.2f} pt"),)),
    Claim(claim=f"W8A4: QAT >= PTQ (both sim; tie within {wq.TIE_PT:g} pt)",
          paper="MobileNet-v1 PTQ 0.48 -> QAT 0.64", aggregate=_GRADED,
          compares=(_tie("qat_w8a4_per_channel", "ptq_w8a4_per_channel", "QAT - PTQ"),)),
)
"""The paper's QAT findings that are "cell A vs cell B in points", per model."""

BN_CLAIM = Claim(
    claim=f"BN correction + freeze >= naive folding (QAT, sim; tie within {wq.TIE_PT:g} pt)",
    paper="correction and freezing beat the naive fold (Sec. 3.2.2)", aggregate=_GRADED,
    compares=(_tie("corrected", "naive", "correction - naive"),))
"""Tested per model x weight bits (groups ``<model> W8`` / ``<model> W4``)."""


def _recovered(acc: Mapping[tuple[str, str], float], models: Sequence[str]) -> ClaimResult:
    """4-bit QAT per-channel wins back >= RECOVERED_FRACTION of the PTQ per-channel loss."""
    items: list[tuple[str, bool | None, str]] = []
    for m in models:
        if not all((m, c) in acc for c in (wq.FLOAT, "ptq_w4a8_per_channel", "qat_w4a8_per_channel")):
            continue
        ptq = 100.0 * (acc[(m, "ptq_w4a8_per_channel")] - acc[(m, wq.FLOAT)]) + 0.0
        q = 100.0 * (acc[(m, "qat_w4a8_per_channel")] - acc[(m, wq.FLOAT)]) + 0.0
        if -ptq < wq.MIN_PTQ_LOSS_PT - wq._EPS:
            items.append((m, None, f"PTQ {ptq:+.2f} pt, QAT {q:+.2f} pt (PTQ loses < "
                                   f"{wq.MIN_PTQ_LOSS_PT:g} pt: nothing to recover, not counted)"))
            continue
        recovered = (q - ptq) / -ptq
        items.append((m, recovered >= wq.RECOVERED_FRACTION - wq._EPS,
                      f"PTQ {ptq:+.2f} pt, QAT {q:+.2f} pt, recovered {100 * recovered:.0f}%"))
    return listed_claim(
        f"4-bit weights: QAT per-channel (tflite) recovers at least {100 * wq.RECOVERED_FRACTION:g}% "
        f"of the PTQ per-channel (sim) loss, where PTQ loses >= {wq.MIN_PTQ_LOSS_PT:g} pt",
        "MobileNet-v1: PTQ collapses (0.001-0.02), QAT per-channel 0.65 (float 0.709); "
        "ResNet-v1-50 QAT 0.732 (float 0.752)", items)


def findings(records: Sequence[Mapping[str, Any]], models: Sequence[str]) -> list[ClaimResult]:
    """:data:`CLAIMS`, the 4-bit recovery, :data:`BN_CLAIM` and the export sanity check,
    tested on ``records`` (JSON form); points against the fp32 .tflite of the same model."""
    ok = [r for r in records if "error" not in r and r.get("cell") in wq.CELLS]
    acc = {(r["model"], r["cell"]): float(r["accuracy"]) for r in ok if "accuracy" in r}
    out = evaluate_claims(CLAIMS[:2], acc, models) + [_recovered(acc, models)]
    out += evaluate_claims(CLAIMS[2:], acc, models)
    folds = {(f"{m} W{b}", fold): acc[(m, f"qat_w{b}a8_{cell}")]
             for m in models for b in (8, 4) for fold, cell in (("corrected", "bn_corrected"),
                                                                 ("naive", "naive_fold"))
             if (m, f"qat_w{b}a8_{cell}") in acc}
    out += evaluate_claims((BN_CLAIM,), folds, [f"{m} W{b}" for m in models for b in (8, 4)])
    agree = {(r["model"], r["cell"]): r["agreement"] for r in ok if "agreement" in r}
    out.append(listed_claim(
        f"(sanity, not a paper claim) every QAT export agrees with its QAT Keras model on "
        f">= {100 * wq.MIN_AGREEMENT:g}% of top-1 predictions", "-",
        [(f"{m} {c.removeprefix('qat_')}", agree[(m, c)] >= wq.MIN_AGREEMENT, f"{agree[(m, c)]:.4f}")
         for m in models for c in ("qat_w8a8_per_channel", "qat_w4a8_per_channel") if (m, c) in agree]))
    return out
