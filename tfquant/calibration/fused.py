"""Compiled kernels for :meth:`TensorStatistics.update`: two passes over a batch.

The numpy update (``statistics.update_numpy``, the reference) makes ~8 passes over each
batch with float64 temporaries (~4.75 ns a value). Here a batch is read twice by loops that
numba compiles to machine code (:func:`kernels`; ``cache=True``: compiled once per machine,
then loaded from numba's cache):

1. ``moments`` (:func:`_moments`): per channel of the last axis, Σx (float64), and the batch's
   min, max and Σx. The values are read flat into L = C·max(1, ⌊512 / C⌋) accumulators
   (value i into accumulator i mod L, a multiple of the C channels; folded to C at the end),
   so a short last axis (10-64 channels on the zoo) does not make each accumulator wait on
   its previous addition, row after row.
2. ``deviations_and_histogram`` (:func:`_deviations_and_histogram`): with the batch mean m (float32, as numpy's
   ``v - np.float32(mean)``) and the histogram's bin width w = upper / n fixed after pass 1,
   Σ(x - m)², Σ|x - m| (float64) and the counts of |x| binned as
   index = min(⌊|x| / w⌋, n - 1), the same integer as the numpy path's float64 division for
   every value. When w is a float32 value (below; the usual case) every full block of 16
   values goes through one software-pipelined loop written in LLVM IR (``blocks16``): the
   block's |x - m| in 16 float32 lanes, widened once to float64 and added to 4 vector
   accumulators (d·d by fma); its 16 bin indices in float32; the indices stored into a ring
   of 8 blocks; then the indices of the block made 4 blocks earlier counted into one int32
   histogram, so that the vector work of one block runs while an older block is counted
   (counting the block just stored stalls on its 64-byte store: 0.91 ns a value with a lag of
   0, 0.58 with 1, 0.48 with 2, 0.41 with 4 or 8). The rest (the last < 16 values; every value
   when w is not a float32) goes in chunks of 1024: a vectorised loop for the sums, one for the
   indices (the float64 division: the same integers), a scalar loop counting them. Bin 0 is counted
   in 8 extra slots chosen by position and added back at the end: increments of one bin at
   irregular distances (the zeros after a ReLU) make the core mispredict which loads depend on
   which stores. Counting 1024 L1-resident indices, 41% of them random zeros: 0.74 ns a count;
   with the zeros spread: 0.33; uniform bins: 0.30; one bin only: 0.30. |x| = upper (index n)
   has its own slot, added to bin n - 1 at the end, so no clamp to n - 1 per value (indices
   are clamped to n, so that nothing is ever written out of bounds).

   **The index in float32, exactly.** On this CPU (AMD Zen 4, AVX-512 on 256-bit units) the
   old loop was bound by conversions (float32 -> float64 and float64 -> uint32, ~2 cycles per
   512-bit conversion, three per 8 values) and the float64 division, not by the arithmetic.
   When w is a float32 value >= 2⁻¹⁰⁰ (always, for n a power of 2: upper is a float32 batch
   maximum times powers of 2; else the float64 division is kept) the index is computed in
   16 float32 lanes with no conversion: with r = fl32(1/w), y = fma(|x|, r, 2²³) holds
   j' = round(|x|·r) in its low mantissa bits, t = fma(j', w, -|x|), and j = j' - [t > 0].
   Proof that j = ⌊|x| / w⌋ = ⌊fl64(|x| / w)⌋ (x, w float32, n <= 2²⁰ bins, |x| <= n·w):
   (i) x and j·w are multiples of the float32 quantum 2^(e-23) of the smaller of |x| and w
   (e its exponent, subnormals included), so |x| / w is an integer or at least 2⁻²⁵ below the
   next integer; hence the float64 quotient (error <= n·2⁻⁵³) never rounds up to an integer and
   ⌊fl64(|x|/w)⌋ = ⌊|x|/w⌋ (the numpy path is exact too). (ii) r = (1/w)(1 + e), |e| <= 2⁻²⁴ +
   2⁻⁵³ (1/w is rounded to float64, then float32), so |x|·r is within n·2⁻²³·⁹ < 1/2 of |x|/w
   and j' ∈ {j, j + 1} (the fma rounds |x|·r + 2²³ once, to an integer: float32 spacing 1
   in [2²³, 2²⁴)). (iii) t is j'·w - |x| rounded once: its sign is the exact sign (the
   exact value is a multiple of 2⁻¹⁴⁹, never rounded to 0; w >= 2⁻¹⁰⁰ keeps it out of the
   subnormals, should flush-to-zero be on), so j' - [t > 0] = j. Tested value by value against
   the float64 division on every edge k·w and its two float32 neighbours, and by hypothesis
   (tests/calibration/test_fused.py). The index loops are compiled without fast-math (set
   explicitly: numba otherwise gives a callee its caller's flags) and the arithmetic written
   in LLVM IR (intrinsics), so nothing folds (y - 2²³) back to |x|·r.
   (Multiplying by a float64 1/w with ⌊fl64(|x|·(1/w)) + 2⁻³⁰⌋, also exact by (i), saved
   ~0.08 ns a value; the float32 index ~0.13.)

The float64 sums are accumulated in another order, so they may differ from the reference in
the last bits; min, max and the histogram counts are the same. (Both square the float32
deviations in float64: a float32 ``dot``, which the numpy path used before, rounds m2 by up
to ~2e-5 relative on the zoo, enough to move ACIQ's Gaussian ranges by ~1e-5.) Without numba (``TFQUANT_NUMBA=0`` or not installed)
:data:`AVAILABLE` is False and the statistics use the numpy path.

Cost, kernels only (CPU ns a value, the previous kernels (git 0ff6f0f) and these side by
side in one process, medians of 9 alternating runs, three rounds, on one saved batch of 100
images of every gathered tensor, each copied into a buffer just before the call, as the
interpreter writes it; helper kern2's /tmp/kern2/ab.py, load ~2 on the 2 cores):

| activations | moments | deviations_and_histogram | total |
|---|---|---|---|
| ViT (187 tensors, 16.9M values) | 0.191-0.196 -> 0.145-0.148 | 0.667-0.728 -> 0.386-0.398 | 0.864-0.919 -> 0.531-0.545 |
| mobilenet_v2 (29 tensors, 9.1M values) | 0.163-0.170 -> 0.125-0.128 | 0.647-0.658 -> 0.383-0.392 | 0.814-0.821 -> 0.508-0.519 |

Step by step on the ViT (deviations kernel): 0.67 -> 0.55 (float32 index, sums in their own
loop, no clamp) -> 0.41 (pipelined blocks); moments 0.19 -> 0.15 (min/max in registers). In
the statistics pass (1000 images, CPU s inside ``TensorStatistics.update``, 5 runs, two
rounds): ViT 0.171-0.173 -> 0.113, mobilenet_v2 0.079-0.080 -> 0.048-0.049, mobilenet_v1
0.028 -> 0.017, cnn 0.026-0.027 -> 0.016, resnet 0.034 -> 0.022-0.026.

Where the ViT's ~0.53-0.55 ns go now: the counting ~0.30 (one load-increment-store a value, about
one a cycle), now overlapping most of the deviations' vector work; reading a batch that does
not fit the 2 MB L2 from L3, ~0.06 ns per pass (a float32 sum alone); in the moments the
float64 channel sums (one conversion a value, accumulators in L1) ~0.05 and min/max ~0.04.
Measured and dropped (same results, slower or not faster): one read of the batch instead of
two (speculative binning with the moments; the work was not memory-bound); chunks of 64-4096
values (1024 is as good as any, 64 costs +0.19); the sums and the indices in one loop before
the pipelining (-0.01); the float64 index ⌊fl64(|x|·(1/w)) + 2⁻³⁰⌋ (exact by (i), but still two
conversions a value: -0.08 where the float32 index gave -0.13); 2 or 4 sub-histograms by
position, interleaved or apart (+0.03-0.08); uint16 indices (same); counting the ReLU zeros
by compaction (AVX-512 ``vpcompressd`` to a register, then a store): mobilenet_v2 -0.08 but
the ViT +0.20, and to memory +1.7; counting straight from the index vector's lanes
(``extractelement``) instead of the ring: 8.9 ns; int32 sortable keys for min/max (+0.03);
spreading the last bin too (+0.15); numba's ``min`` or select-based reductions (not
vectorised: ~0.55).

Compile cost: ~2.7 s on the first call on a machine (importing numba, compiling both kernels
and the loops they call; the previous kernels ~4 s, measured on this 2-core box under load
~2), then loaded from the cache in each new process (importing numba and this package and
loading both kernels: 0.9 s, the previous kernels 1.0 s, same box). numba keeps
the cache in ``__pycache__`` beside this file, or, where that is not writable (an installed
package), in a per-user cache directory; ``NUMBA_CACHE_DIR`` overrides both.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Callable

import numpy as np

AVAILABLE = os.environ.get("TFQUANT_NUMBA", "1") != "0" and importlib.util.find_spec("numba") is not None
"""True when the compiled kernels are used (numba installed and ``TFQUANT_NUMBA`` is not 0).

numba itself (~0.7 s) is imported at the first :func:`kernels` call, so a process that
gathers no statistics does not pay for it."""

_CHUNK = 1024  # values whose bin indices are computed (vectorised) before they are counted
_SPREAD = 8  # extra slots over which bin 0 is counted (runs of zeros), a power of 2
_PERIOD = 512  # the moments kernel keeps accumulators for ~this many consecutive values
_MAX_EXACT_BINS = 1 << 20  # float32 binning is exact up to ~2²² bins (module docstring)
_LAG = 4  # the pipelined loop counts the indices of the block of 16 values it made _LAG blocks ago
_RING_BLOCKS = 8  # blocks of 16 indices it keeps (a power of 2, > _LAG)
_SUPER = 1 << 16  # values per call of the pipelined loop (its float64 sums are added per call)
# Set by kernels(): the intrinsics and the compiled loops that the kernels call.
_min32 = _max32 = _blocks16 = _sums_compiled = _indices_divide_compiled = _pipelined_compiled = None
MAX_VALUES = 1 << 30
"""Most values one ``deviations_and_histogram`` call takes (its int32 counts cannot overflow)."""


def _moments(columns: np.ndarray, channel_sum: np.ndarray) -> tuple[float, float, float]:
    """Σ per column into ``channel_sum`` (float64, overwritten); returns (min, max) as float32 and
    Σx (float64; saves the caller a ~2 µs numpy sum per batch).

    ``columns``: C-contiguous float32 (rows >= 1, C). NaN and ±inf are not caught here: the
    caller checks that Σx is finite (any of them makes it NaN or infinite). The values are
    read flat, with accumulators for L = C·max(1, ⌊:data:`_PERIOD` / C⌋) consecutive values
    (value i goes to accumulator i mod L, a multiple of C), folded to C channels at the end: a
    short row no longer makes each accumulator wait on its own previous addition. min and max
    are two register reductions (LLVM's minnum / maxnum, which its vectoriser reduces in 16
    lanes; numba's ``min`` is not vectorised, and arrays of L running minima cost two stores
    per vector).
    """
    c = columns.shape[1]
    values = columns.ravel()
    n = values.size
    period = c * max(1, _PERIOD // c)
    acc = np.zeros(period, dtype=np.float64)
    lo = np.float32(np.inf)
    hi = np.float32(-np.inf)
    full = n - n % period
    for start in range(0, full, period):
        row = values[start : start + period]
        for j in range(period):
            v = row[j]
            acc[j] += np.float64(v)
            lo = _min32(lo, v)
            hi = _max32(hi, v)
    tail = values[full:]
    for j in range(tail.size):
        v = tail[j]
        acc[j] += np.float64(v)
        lo = _min32(lo, v)
        hi = _max32(hi, v)
    for j in range(c):
        channel_sum[j] = acc[j]
    for j in range(c, period):
        channel_sum[j % c] += acc[j]
    return lo, hi, acc.sum()


def _sums(chunk: np.ndarray, mean: np.float32) -> tuple[float, float]:
    """(Σ(x - mean)², Σ|x - mean|) over a chunk: |x - mean| taken once in float32 (as numpy's
    ``v - np.float32(mean)``), converted to float64 once, then squared and summed in float64."""
    sq = 0.0
    ab = 0.0
    for k in range(chunk.size):
        d = np.float64(abs(chunk[k] - mean))
        sq += d * d
        ab += d
    return sq, ab


def _min_max_intrinsics():
    """(min32, max32): float32 ``llvm.minnum`` / ``llvm.maxnum`` as numba intrinsics."""
    from llvmlite import ir
    from numba import types
    from numba.core.extending import intrinsic

    def make(name: str):
        @intrinsic
        def extreme(typingctx, a, b):  # noqa: ARG001 (numba's signature)
            def codegen(context, builder, signature, args):  # noqa: ARG001
                f32 = ir.FloatType()
                fn = builder.module.declare_intrinsic(name, [f32], ir.FunctionType(f32, [f32, f32]))
                return builder.call(fn, args)

            return types.float32(types.float32, types.float32), codegen

        return extreme

    return make("llvm.minnum"), make("llvm.maxnum")


def _blocks_intrinsic():
    """``blocks16(values, start, stop, mean, w, r, zero_slot, ring, hist)`` -> (Σd², Σ|d|): a numba
    intrinsic, one loop written in LLVM IR, software-pipelined.

    For each block of 16 values from ``start`` to ``stop`` (multiples of 16): |x - mean| in 16
    float32 lanes, widened to two 8-lane float64 vectors added to four vector accumulators (d·d
    by fma); the 16 bin indices in float32 (module docstring: y = fma(|x|, r, 2²³) holds
    j' = round(|x|·r) in its low mantissa bits, t = fma(y - 2²³, w, -|x|) = j'·w - |x| rounded
    once, y - 1 when t > 0; then clamped to slot n, and bin 0 spread over :data:`_SPREAD` slots
    by lane); in IR, no fast-math flag can fold (y - 2²³) back to |x|·r or split an fma. They
    are stored into block b mod :data:`_RING_BLOCKS` of ``ring``; then the 16 indices of block
    b - :data:`_LAG` are read back from ``ring`` and counted into ``hist``. Counting a block just
    stored stalls (16 scalar loads from one 64-byte store in flight: 0.91 ns a value on the
    ViT's activations, against 0.41 with a lag of 4); a few blocks later the store has retired, and the
    vector work of a block overlaps the counting of an older one. ``ring`` starts filled with a
    scratch slot, so the first _LAG blocks count there; the caller counts the last _LAG blocks.
    """
    from llvmlite import ir
    from numba import types
    from numba.core.extending import intrinsic

    @intrinsic
    def blocks16(typingctx, values, start, stop, mean, w, r, zero_slot, ring, hist):  # noqa: ARG001
        arrays = ((values, types.float32), (ring, types.uint32), (hist, types.int32))
        if not all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype == t for a, t in arrays):
            return None  # the IR below indexes raw pointers: contiguous 1-d arrays of these types only
        sig = types.UniTuple(types.float64, 2)(values, types.int64, types.int64, types.float32, types.float32,
                                               types.float32, types.uint32, ring, hist)

        def codegen(context, builder, signature, args):  # noqa: ARG001
            values, start, stop, mean, w, r, zero_slot, ring, hist = args
            f32, f64, i32, i64 = ir.FloatType(), ir.DoubleType(), ir.IntType(32), ir.IntType(64)
            v16f, v16i = ir.VectorType(f32, 16), ir.VectorType(i32, 16)
            v8d, v8i = ir.VectorType(f64, 8), ir.VectorType(i32, 8)
            module = builder.module

            def declare(name, fnty):
                fn = module.globals.get(name)
                return fn if fn is not None else ir.Function(module, fnty, name=name)

            fabs = declare("llvm.fabs.v16f32", ir.FunctionType(v16f, [v16f]))
            fma16 = declare("llvm.fma.v16f32", ir.FunctionType(v16f, [v16f, v16f, v16f]))
            fma8 = declare("llvm.fma.v8f64", ir.FunctionType(v8d, [v8d, v8d, v8d]))

            def splat(value, vtype):
                u = builder.insert_element(ir.Constant(vtype, ir.Undefined), value, ir.Constant(i32, 0))
                return builder.shuffle_vector(u, u, ir.Constant(v16i, [0] * 16))

            data = context.make_array(signature.args[0])(context, builder, values).data
            ring_data = context.make_array(signature.args[7])(context, builder, ring).data
            hist_data = context.make_array(signature.args[8])(context, builder, hist).data
            vmean, vw, vr, vslot = splat(mean, v16f), splat(w, v16f), splat(r, v16f), splat(zero_slot, v16i)
            magic = ir.Constant(v16f, [8388608.0] * 16)
            top = builder.sub(vslot, ir.Constant(v16i, [1] * 16))
            lanes = builder.add(vslot, ir.Constant(v16i, [k % _SPREAD for k in range(16)]))
            zero8 = ir.Constant(v8d, [0.0] * 8)
            entry = builder.basic_block
            loop = builder.append_basic_block("blocks16.loop")
            done = builder.append_basic_block("blocks16.done")
            builder.cbranch(builder.icmp_signed("<", start, stop), loop, done)

            builder.position_at_end(loop)
            i = builder.phi(i64)
            acc = [builder.phi(v8d) for _ in range(4)]
            x = builder.load(builder.bitcast(builder.gep(data, [i]), v16f.as_pointer()), align=4)
            d = builder.call(fabs, [builder.fsub(x, vmean)])
            d_lo = builder.fpext(builder.shuffle_vector(d, d, ir.Constant(v8i, list(range(8)))), v8d)
            d_hi = builder.fpext(builder.shuffle_vector(d, d, ir.Constant(v8i, list(range(8, 16)))), v8d)
            new = [builder.call(fma8, [d_lo, d_lo, acc[0]]), builder.call(fma8, [d_hi, d_hi, acc[1]]),
                   builder.fadd(acc[2], d_lo), builder.fadd(acc[3], d_hi)]
            ax = builder.call(fabs, [x])
            y = builder.call(fma16, [ax, vr, magic])
            t = builder.call(fma16, [builder.fsub(y, magic), vw, builder.fneg(ax)])
            high = builder.fcmp_ordered(">", t, ir.Constant(v16f, [0.0] * 16))
            y = builder.select(high, builder.fsub(y, ir.Constant(v16f, [1.0] * 16)), y)
            j = builder.sub(builder.bitcast(y, v16i), ir.Constant(v16i, [0x4B000000] * 16))
            j = builder.select(builder.icmp_unsigned(">", j, top), top, j)
            j = builder.select(builder.icmp_unsigned("==", j, ir.Constant(v16i, [0] * 16)), lanes, j)
            block = builder.lshr(i, ir.Constant(i64, 4))
            mask = ir.Constant(i64, _RING_BLOCKS - 1)
            here = builder.shl(builder.and_(block, mask), ir.Constant(i64, 4))
            builder.store(j, builder.bitcast(builder.gep(ring_data, [here]), v16i.as_pointer()), align=4)
            old = builder.shl(builder.and_(builder.sub(block, ir.Constant(i64, _LAG)), mask), ir.Constant(i64, 4))
            for lane in range(16):
                slot = builder.load(builder.gep(ring_data, [builder.add(old, ir.Constant(i64, lane))]))
                cell = builder.gep(hist_data, [builder.zext(slot, i64)])
                builder.store(builder.add(builder.load(cell), ir.Constant(i32, 1)), cell)
            i_next = builder.add(i, ir.Constant(i64, 16))
            i.add_incoming(start, entry)
            i.add_incoming(i_next, loop)
            for a, b in zip(acc, new):
                a.add_incoming(zero8, entry)
                a.add_incoming(b, loop)
            builder.cbranch(builder.icmp_signed("<", i_next, stop), loop, done)

            builder.position_at_end(done)
            final = []
            for b in new:
                phi = builder.phi(v8d)
                phi.add_incoming(zero8, entry)
                phi.add_incoming(b, loop)
                final.append(phi)

            def total(v):
                out = builder.extract_element(v, ir.Constant(i32, 0))
                for q in range(1, 8):
                    out = builder.fadd(out, builder.extract_element(v, ir.Constant(i32, q)))
                return out

            sq = total(builder.fadd(final[0], final[1]))
            ab = total(builder.fadd(final[2], final[3]))
            return context.make_tuple(builder, signature.return_type, [sq, ab])

        return sig, codegen

    return blocks16


def _pipelined(
    values: np.ndarray, start: int, stop: int, mean: np.float32, width32: np.float32, recip32: np.float32,
    zero_slot: np.uint32, ring: np.ndarray, hist: np.ndarray,
) -> tuple[float, float]:
    """``blocks16`` over values[start:stop] (a multiple of 16 values; any layout, read contiguous)."""
    return _blocks16(np.ascontiguousarray(values), start, stop, mean, width32, recip32, zero_slot, ring, hist)


def _indices_divide(chunk: np.ndarray, width: float, zero_slot: np.uint32, index: np.ndarray) -> None:
    """⌊|x| / width⌋ by the float64 division (the numpy path's; for a float32 width the same
    integer as ``blocks16``'s), at most n (slot n), bin 0 spread over the slots after it."""
    top = zero_slot - np.uint32(1)
    topf = np.float64(top)
    for k in range(chunk.size):
        j = min(np.uint32(min(np.float64(abs(chunk[k])) / width, topf)), top)
        index[k] = zero_slot + np.uint32(k & (_SPREAD - 1)) if j == 0 else j


def _deviations_and_histogram(
    values: np.ndarray, mean: np.float32, width: float, counts: np.ndarray
) -> tuple[float, float]:
    """Returns (Σ(x - mean)², Σ|x - mean|) in float64 and adds the counts of |x| to ``counts``.

    ``values``: flat float32, at most :data:`MAX_VALUES`, |x| <= n·width (a larger |x| is
    counted in bin n - 1, as the clamp puts it; a NaN in some bin: never out of bounds);
    x - mean is taken in float32 (as numpy's ``v - np.float32(mean)``), then squared and summed
    in float64. Bin index = min(⌊|x| / width⌋, n - 1), the same integer as
    ``AbsHistogram.update``'s float64 division. When ``width`` is a float32 value >= 2⁻¹⁰⁰ (it
    always is for n a power of 2: upper is a float32 max times a power of 2), the full blocks
    of 16 values go through the pipelined loop (``blocks16``, float32 indices; its last
    :data:`_LAG` blocks are counted here); the rest in chunks of :data:`_CHUNK` values, three
    loops each: the sums, the indices by the float64 division (both vectorised), the counting.
    One int32 histogram, with a slot n for |x| = upper (added to bin n - 1 at the end) and
    :data:`_SPREAD` slots for bin 0 (by position, added to it at the end), so that the zeros
    after a ReLU, irregularly spaced, do not stall the counting (see the module docstring).
    """
    n = values.size
    bins = counts.size
    zero_slot = np.uint32(bins + 1)
    width32 = np.float32(width)
    exact = np.float64(width32) == width and width32 >= np.float32(2.0**-100) and bins <= _MAX_EXACT_BINS
    recip32 = np.float32(1.0 / np.float64(width32)) if exact else np.float32(0.0)
    sq = 0.0
    ab = 0.0
    index = np.empty(_CHUNK, dtype=np.uint32)
    hist = np.zeros(bins + 1 + _SPREAD + 1, dtype=np.int32)  # + slot n, bin 0's slots, a scratch slot
    begin = 0
    if exact:  # all full blocks of 16 in the pipelined loop, then the rest as below
        begin = n - n % 16
        ring = np.full(_RING_BLOCKS * 16, bins + 1 + _SPREAD, dtype=np.uint32)
        for start in range(0, begin, _SUPER):
            s, a = _pipelined_compiled(values, start, min(start + _SUPER, begin), mean, width32, recip32,
                                       zero_slot, ring, hist)
            sq += s
            ab += a
        blocks = begin // 16
        for b in range(max(0, blocks - _LAG), blocks):  # the last _LAG blocks, not counted yet
            for q in range(16):
                hist[ring[(b % _RING_BLOCKS) * 16 + q]] += 1
    for start in range(begin, n, _CHUNK):
        chunk = values[start : min(start + _CHUNK, n)]
        s, a = _sums_compiled(chunk, mean)
        sq += s
        ab += a
        _indices_divide_compiled(chunk, width, zero_slot, index)
        for k in range(chunk.size):
            hist[index[k]] += 1
    for j in range(bins):
        counts[j] += hist[j]
    counts[bins - 1] += hist[bins]
    for s in range(_SPREAD):
        counts[0] += hist[bins + 1 + s]
    return sq, ab


@functools.cache
def kernels() -> tuple[Callable[..., tuple[float, float, float]], Callable[..., tuple[float, float]]]:
    """(moments, deviations_and_histogram), compiled (or loaded from numba's cache) once.

    Raises:
      ImportError: numba cannot be imported (the caller falls back to numpy).
    """
    import numba

    global _min32, _max32, _blocks16, _sums_compiled, _indices_divide_compiled, _pipelined_compiled
    _min32, _max32 = _min_max_intrinsics()
    _blocks16 = _blocks_intrinsic()
    moments = numba.njit(cache=True, nogil=True, fastmath={"nnan", "ninf", "nsz"})(_moments)
    # The deviations kernel calls three loops, globals that numba compiles into it. reassoc
    # lets the float64 sums be vectorised (another order of addition), contract fuses d·d + sq.
    # The index loops set fastmath=False explicitly (numba otherwise gives a callee its
    # caller's flags): the division stays a true division (no arcp), the float32 index exact
    # (the IR in blocks16 carries no flags, and numba adds its flags only to scalar calls).
    sums_math = {"reassoc", "nsz", "contract"}
    _sums_compiled = numba.njit(cache=True, nogil=True, fastmath=sums_math)(_sums)
    _indices_divide_compiled = numba.njit(cache=True, nogil=True, fastmath=False)(_indices_divide)
    _pipelined_compiled = numba.njit(cache=True, nogil=True, fastmath=False)(_pipelined)
    deviations = numba.njit(cache=True, nogil=True, fastmath=sums_math)(_deviations_and_histogram)
    return moments, deviations
