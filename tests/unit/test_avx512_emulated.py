"""Our AVX-512 CPU kernels run on an emulated AVX-512 CPU (tests/reference/avx512_machine.py), so they are checked
on every machine, not only on those that have it (where test_cpu_kernel.cpp's Lanes16 cases, the flash attention's
Isa cases and every kernel's unit tests also run them natively):
  * cpu::Lanes16's exp within 2 ulp of float64's over [-87, 88], e^-87 below, e^0 = 1, NaN kept; its masks and
    reductions against hand-computed values (test_cpu_kernel.cpp's exp16_all and lane_ops16, its inputs);
  * the attention's softmax kernels on 16 lanes, and on AVX2's 8 beside them, against float64: one online-softmax
    step of the forward (softmax_step16/8: running max and sum, rescaled accumulator, probabilities) and the
    backward's P and dS (probs_and_grads16/8), on 128 x 128 blocks with no mask and causal ones;
  * the attention's bf16 rounding by AVX512-BF16 (`store`, and probs_and_grads16 in bf16, the AMX path's) against
    the instruction's definition: nearest even, denormal inputs read as zero, NaN kept quiet with its top bits. Only
    the first 16 values of each 32 that one vcvtne2ps2bf16 converts: the emulator writes its second source's 16 into
    both halves (bochscpu-python 0.4.0; Intel's SDM, and the native bf16 attention tests, have the first source's
    in the upper half);
  * the kernels built as target_clones (SwiGLU, the cross-entropy, RMSNorm, the attention's row dots and finished
    rows, the gradient norm's sums, AdamW; fp32, bf16 and fp64 where built): the AVX-512 clone's outputs bit-equal
    to the AVX2 clone's. The logf and memset that some call come from tests/reference/freestanding_libc.cpp, its
    logf checked against float64 here.
Usage: test_avx512_emulated.py SHIM OBJECT... (tests/CMakeLists.txt passes the objects of those files)
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../reference"))
from avx512_machine import Avx512Machine  # noqa: E402

NS = "titan::(anonymous namespace)::"
BLOCK, HD = 128, 16
TWO_ULP = 2.0 / (1 << 23)
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def values(machine, addr, n, dtype=np.float32):  # n values of dtype at a guest address
    return np.frombuffer(machine.read(addr, n * np.dtype(dtype).itemsize), dtype).copy()


def check_exp(machine):
    i = np.arange(175 * 1024 + 1)
    f = np.float32  # test_cpu_kernel.cpp's exponents(), in its fp32 arithmetic
    x = f(-87) + i.astype(f) / f(1024) + f(1e-4) * (i % 7).astype(f)
    x = np.concatenate([x, np.zeros(-len(x) % 16, np.float32)])
    y = machine.buffer(x.nbytes)
    machine.call(NS + "exp16_all", machine.buffer(x.tobytes()), len(x), y)
    exact = np.exp(x.astype(np.float64))
    worst = np.max(np.abs(values(machine, y, len(x)) - exact) / exact)
    check(worst < TWO_ULP, f"Lanes16 exp over [-87, 88]: worst {worst * 2**23:.2f} ulp (< 2)")
    edges = np.float32([-1000, -np.inf, -87, 88, 50, -50, 0, 1, -1, 10, -10, 20, -20, 30, -30, np.nan])
    out = machine.buffer(64)
    machine.call(NS + "exp16_all", machine.buffer(edges.tobytes()), 16, out)
    e = values(machine, out, 16)
    check(e[0] == e[2] and e[1] == e[2], f"Lanes16 exp below -87 is e^-87: {e[:3]}")
    inside = np.abs(e[2:15] - np.exp(edges[2:15].astype(np.float64))) / np.exp(edges[2:15].astype(np.float64))
    check(np.all(inside < TWO_ULP), f"Lanes16 exp at -87, 88 and in between: worst {inside.max() * 2**23:.2f} ulp")
    check(e[6] == 1 and np.isnan(e[15]), f"Lanes16 exp: e^0 = {e[6]}, e^NaN = {e[15]}")


def check_lane_ops(machine):
    counts = [-3, 0, 1, 7, 8, 9, 16, 17, 128]  # test_cpu_kernel.cpp's kCounts
    keep, select, reduced = machine.buffer(64 * len(counts)), machine.buffer(64 * len(counts)), machine.buffer(16)
    machine.call(NS + "lane_ops16", keep, select, reduced)
    below = np.array([[1.0 if lane < n else 0.0 for lane in range(16)] for n in counts], np.float32)
    check(np.array_equal(values(machine, keep, 16 * len(counts)).reshape(-1, 16), below), "Lanes16 keep(first(n))")
    check(np.array_equal(values(machine, select, 16 * len(counts)).reshape(-1, 16), 2 - below),
          "Lanes16 select(first(n))")
    check(list(values(machine, reduced, 4)) == [16, 136, 0, 7], "Lanes16 reduce_max, reduce_add")


def bf16(x):  # fp32 values rounded to bf16 bits (nearest even), as c10::BFloat16 (NaNs aside)
    bits = np.asarray(x, np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_instruction(x):
    """fp32 values rounded to bf16 bits as AVX512-BF16's vcvtne2ps2bf16 (Intel's SDM): nearest even after denormal
    inputs are read as zero (c10::BFloat16 keeps them); a NaN made quiet, keeping its sign and top payload bits."""
    x = np.asarray(x, np.float32)
    bits = x.view(np.uint32)
    flushed = np.where(np.abs(x) < np.finfo(np.float32).tiny, bits & 0x8000_0000, bits).view(np.float32)
    return np.where(np.isnan(x), (bits >> 16) | 0x40, bf16(flushed)).astype(np.uint16)


# (causal, q0, k0): no mask; the diagonal block (rows see 1 to 128 keys: every partial vector); a block wholly
# visible; causal blocks whose queries are 5, 9, 100 and 3 positions past the keys (rows see 6, 10, 101, 4 keys on)
CASES = [(False, 0, 0), (True, 0, 0), (True, 256, 128), (True, 133, 128), (True, 137, 128), (True, 100, 0),
         (True, 3, 0)]


def visible(causal, q0, k0):
    if not causal:
        return np.ones((BLOCK, BLOCK), bool)
    return k0 + np.arange(BLOCK)[None, :] <= q0 + np.arange(BLOCK)[:, None]


def check_softmax(machine, lanes, rng):
    worst = {"p": 0.0, "l": 0.0, "acc": 0.0, "P": 0.0, "dS": 0.0}
    zeros_ok, m_ok, rounded_ok = True, True, True
    scale = 0.25  # 1 / sqrt(16): s * scale is exact, so the running max is too
    for causal, q0, k0 in CASES:
        vis = visible(causal, q0, k0)
        s = (rng.standard_normal((BLOCK, BLOCK)) * 3).astype(np.float32)
        s64 = s.astype(np.float64) * scale
        row_max = np.where(vis, s64, -np.inf).max(1)
        # the first key block (m = -inf, l = 0, acc = 0), then a later one (running m, l, acc)
        for m0, l0, acc0 in ((np.full(BLOCK, -np.inf), np.zeros(BLOCK), np.zeros((BLOCK, HD))),
                             (row_max + rng.uniform(-1, 1, BLOCK), rng.uniform(1, 5, BLOCK),
                              rng.standard_normal((BLOCK, HD)))):
            m0, l0, acc0 = (a.astype(np.float32) for a in (m0, l0, acc0))
            m, l, acc, p = (machine.buffer(a.tobytes()) for a in (m0, l0, acc0, np.zeros((BLOCK, BLOCK), np.float32)))
            machine.call(NS + f"softmax_step{lanes}", machine.buffer(s.tobytes()), scale, causal, q0, k0, HD, m, l, acc,
                         p)
            m_new = np.maximum(m0.astype(np.float64), row_max)
            correction = np.exp(m0 - m_new)
            p_ref = np.where(vis, np.exp(s64 - m_new[:, None]), 0)
            got_p = values(machine, p, BLOCK * BLOCK).reshape(BLOCK, BLOCK)
            zeros_ok &= bool(np.all(got_p[~vis] == 0))
            m_ok &= bool(np.array_equal(values(machine, m, BLOCK), m_new.astype(np.float32)))
            worst["p"] = max(worst["p"], np.max(np.abs(got_p - p_ref)))
            l_ref = l0 * correction + p_ref.sum(1)
            worst["l"] = max(worst["l"], np.max(np.abs(values(machine, l, BLOCK) - l_ref) / l_ref))
            acc_ref = acc0 * correction[:, None]
            got_acc = values(machine, acc, BLOCK * HD).reshape(BLOCK, HD)
            worst["acc"] = max(worst["acc"], np.max(np.abs(got_acc - acc_ref)))
        # the backward's P = exp(S scale - lse) and dS = P (dP - D) scale
        lse = (np.log(np.where(vis, np.exp(s64), 0).sum(1)) + 0.1).astype(np.float32)
        dp, d = rng.standard_normal((BLOCK, BLOCK)).astype(np.float32), rng.standard_normal(BLOCK).astype(np.float32)
        p, ds = machine.buffer(BLOCK * BLOCK * 4), machine.buffer(BLOCK * BLOCK * 4)
        name = f"probs_and_grads{lanes}" + ("<float>" if lanes == 16 else "")
        inputs = [machine.buffer(a.tobytes()) for a in (s, dp, lse, d)]
        machine.call(NS + name, *inputs, scale, causal, q0, k0, p, ds)
        p_ref = np.where(vis, np.exp(s64 - lse[:, None]), 0)
        ds_ref = p_ref * (dp - d[:, None]) * scale
        got_p = values(machine, p, BLOCK * BLOCK).reshape(BLOCK, BLOCK)
        got_ds = values(machine, ds, BLOCK * BLOCK).reshape(BLOCK, BLOCK)
        zeros_ok &= bool(np.all(got_p[~vis] == 0) and np.all(got_ds[~vis] == 0))
        worst["P"] = max(worst["P"], np.max(np.abs(got_p - p_ref)))
        worst["dS"] = max(worst["dS"], np.max(np.abs(got_ds - ds_ref)))
        if lanes == 16:  # bf16 (AMX machines): the same fp32 P and dS, each rounded once by AVX512-BF16
            p16, ds16 = machine.buffer(BLOCK * BLOCK * 2), machine.buffer(BLOCK * BLOCK * 2)
            machine.call(NS + "probs_and_grads16<c10::BFloat16>", *inputs, scale, causal, q0, k0, p16, ds16)
            for got, fp32 in ((p16, got_p), (ds16, got_ds)):
                got = values(machine, got, BLOCK * BLOCK, np.uint16)
                rounded_ok &= np.array_equal(lower_halves(got), lower_halves(bf16_instruction(fp32).ravel()))
    # Bounds: the shifted score's fp32 rounding (|s scale| <= ~4: 5e-7 relative) and 2 ulp of the exp; a sum of 128.
    check(m_ok, f"softmax_step{lanes}: running max equal to float64's")
    check(zeros_ok, f"softmax_step{lanes}, probs_and_grads{lanes}: keys after the query exactly 0")
    for key, bound in (("p", 1e-6), ("l", 4e-6), ("acc", 2e-6), ("P", 1e-6), ("dS", 1e-6)):
        check(worst[key] < bound, f"{lanes} lanes: {key} within {bound:g} of float64's (worst {worst[key]:.3g})")
    if lanes == 16:
        check(rounded_ok, "probs_and_grads16 in bf16: the fp32 P and dS, each rounded by AVX512-BF16's definition")


def lower_halves(bits):
    """The first 16 of each 32 values: the emulated vcvtne2ps2bf16 converts those right. Bochs's handler reads its
    first source's lanes 16-31 for the upper half, past that vector's end in the 512-bit form (into the second's)."""
    return bits.reshape(-1, 2, 16)[:, 0]


def check_bf16_store(machine, rng):
    """The attention's `store` (AVX512-BF16's vcvtne2ps2bf16) on ties, edges and random bit patterns (NaNs and
    denormals among them), bit for bit against the instruction's definition."""
    # 16: the first 32 values' compared half
    edges = np.float32([1, 1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 0.1, -2.5, 0, -0.0, np.inf, -np.inf, np.nan,
                        np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1e-39, -1e-39, 3e38])
    assert len(edges) == 16
    x = np.concatenate([edges, rng.integers(0, 2**32, 4096 - len(edges), dtype=np.uint32).view(np.float32)])
    out = machine.buffer(2 * len(x))
    machine.call(NS + "store", machine.buffer(x.tobytes()), len(x), out, source="flash_attention_cpu.cpp")
    got = lower_halves(values(machine, out, len(x), np.uint16)).ravel()
    want = lower_halves(bf16_instruction(x)).ravel()
    check(np.array_equal(got, want), f"store: fp32 to bf16 by AVX512-BF16 as its definition ({np.sum(got != want)} "
          f"of {len(got)} differ; ties to even: {got[1]:#x} {got[2]:#x}, 1e-39 -> {got[13]:#x})")


def check_logf(machine):
    """freestanding_libc.cpp's logf, which the cross-entropy's and the attention's clones call here, against float64."""
    x = [1e-38, 1e-30, 0.1, 0.5, 1.0, 2.0, np.e, 10.0, 1007.0, 3e38]
    got = np.array([machine.call("logf", v)[1] & 0xFFFF_FFFF for v in x], np.uint32).view(np.float32)
    exact = np.log(np.float32(x).astype(np.float64))
    ulps = np.abs(got - exact) / np.spacing(np.abs(exact).astype(np.float32))
    check(got[4] == 0 and np.all(ulps <= 1),
          f"logf within an ulp of float64's, logf(1) = 0 (worst {ulps.max():.2f} ulp)")


def widened(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def adam_constants(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, step=3):
    # trainer/adam_cpu.cpp's Constants: 9 floats and lerp_small, padded to 40 bytes
    bc1, bc2 = 1 - beta1**step, 1 - beta2**step
    fields = (1.0, 1 - lr * weight_decay, 0.0, 1 - beta1, beta2, 1 - beta2, 1 / bc2**0.5, eps, -lr / bc1)
    return np.array(fields, np.float32).tobytes() + bytes([1, 0, 0, 0])


class Out:
    """An output the function must write whole: its buffer starts as 0xFF bytes (NaN in every float type)."""

    def __init__(self, shape, dtype):
        self.array = np.frombuffer(b"\xff" * (int(np.prod(shape)) * np.dtype(dtype).itemsize), dtype).reshape(shape)


class InPlace:
    """An array the function updates: it must change (not every element: a bf16 one may round back to itself)."""

    def __init__(self, array):
        self.array = array


def clone_cases(rng):
    """The kernels compiled as target_clones, fp32, bf16 and fp64 where built: (source, function, arguments), each
    argument an int, a float, an array (an input: its buffer's address is passed), an Out or an InPlace. n, D, V and
    hd are no multiples of 8, so every vector loop's tail runs; a row is ignored by the cross-entropy, and row_dots
    reads a head's rows inside wider ones, as the model's (B, T, H, hd) views."""
    n, rows, D, V, hd, stride = 1007, 6, 1007, 1007, 72, 96
    a, b, g = (rng.standard_normal(n) * 3 for _ in range(3))
    x = rng.standard_normal((rows, D))
    w = 1 + 0.1 * rng.standard_normal(D)
    r = 1 / np.sqrt((x**2).mean(1) + 1e-5)
    logits = rng.standard_normal((rows, V)) * 4
    labels = rng.integers(0, V, rows).astype(np.int64)
    labels[2] = -100
    lse = np.log(np.exp(logits).sum(1)).astype(np.float32)
    dout, out = rng.standard_normal((130, stride)), rng.standard_normal((130, stride))
    exp_avg, exp_avg_sq = rng.standard_normal(n) * 0.01, rng.uniform(0, 1e-4, n)
    constants = np.frombuffer(adam_constants(), np.uint8)
    f32 = lambda v: np.ascontiguousarray(v, np.float32)  # noqa: E731
    f64 = lambda v: np.ascontiguousarray(v, np.float64)  # noqa: E731
    cases = []
    for ident, cast, t in (("f32", f32, np.float32), ("bf16", bf16, np.uint16), ("f64", f64, np.float64)):
        acc = np.float64 if ident == "f64" else np.float32  # RMSNorm's r and eps
        cases += [
            ("rms_norm.cpp", f"forward_{ident}", (cast(x), cast(w), Out((rows, D), t), Out(rows, acc), rows, D,
                                                   acc(1e-5))),
            ("rms_norm.cpp", f"backward_{ident}", (cast(x[::-1]), cast(x), cast(w), r.astype(acc), Out((rows, D), t),
                                                    InPlace(np.zeros(D)), rows, D)),
            ("grad_norm.cpp", f"sum_of_squares_{ident}", (cast(a), n)),
        ]
        if ident == "f64":
            continue
        heads = "float" if ident == "f32" else "c10::BFloat16"
        cases += [
            ("swiglu.cpp", f"forward_{ident}", (cast(a), cast(b), Out(n, t), n)),
            ("swiglu.cpp", f"backward_{ident}", (cast(g), cast(a), cast(b), Out(n, t), Out(n, t), n)),
            ("cross_entropy.cpp", f"forward_{ident}", (cast(logits), labels, Out(rows, np.float32),
                                                        Out(rows, np.float32), rows, V, -100, Out(V, np.float32))),
            ("cross_entropy.cpp", f"loss_and_grad_{ident}", (InPlace(cast(logits)), labels, Out(rows, np.float32), rows,
                                                              V, -100, Out(V, np.float32))),
            ("cross_entropy.cpp", f"backward_{ident}", (cast(logits), labels, lse, 1.0 / rows, Out((rows, V), t), rows,
                                                         V, -100)),
            ("flash_attention_cpu.cpp", f"row_dots(titan::(anonymous namespace)::HeadRows<{heads}>",
             (cast(dout), stride, cast(out), stride, 130, hd, Out(130, np.float32))),
            ("adam_cpu.cpp", f"adam_{ident}", (InPlace(cast(a * 0.1)), cast(g), InPlace(cast(exp_avg)),
                                              InPlace(cast(exp_avg_sq)), n, constants)),
        ]
    sums, maxima, totals = rng.standard_normal((BLOCK, hd)), rng.standard_normal(BLOCK), rng.uniform(1, 100, BLOCK)
    cases.append(("flash_attention_cpu.cpp", "finish_rows", (f32(sums), f32(maxima), f32(totals), hd,
                                                            Out((BLOCK, hd), np.float32), Out(BLOCK, np.float32))))
    return cases


def check_clones(machine, rng):
    """Each kernel's AVX-512 clone (x86-64-v4) against its AVX2 one (x86-64-v3, the one this machine's unit tests
    check against float64 where it lacks AVX-512) on the same inputs: bit-equal outputs (the same operations in the
    same order: sums run in 16 running sums at every width, cpu::sum16), and sum_of_squares' double equal to
    float64's too. Each Out written whole, each InPlace changed, each input left as it was."""
    for source, name, args in clone_cases(rng):
        # (argument, the array behind it) for each buffer argument
        buffers = [(a, a.array if isinstance(a, (Out, InPlace)) else a) for a in args
                   if isinstance(a, (np.ndarray, Out, InPlace))]
        if name.startswith("sum_of_squares"):
            x = widened(args[0]) if args[0].dtype == np.uint16 else args[0]
            exact = np.sum(x.astype(np.float64) ** 2)
        results, ok = [], True
        for clone in ("arch_x86_64_v4", "arch_x86_64_v3"):
            addresses = [machine.buffer(array.tobytes()) for _, array in buffers]
            next_address = iter(addresses)
            call_args = [next(next_address) if isinstance(a, (np.ndarray, Out, InPlace)) else a for a in args]
            _, xmm0 = machine.call(NS + name, *call_args, source=source, clone=clone)
            after = [machine.read(addr, array.nbytes) for addr, (_, array) in zip(addresses, buffers)]
            for (arg, before), got in zip(buffers, after):
                if isinstance(arg, Out):  # no element left all 0xFF bytes
                    ok &= not np.any(np.all(np.frombuffer(got, np.uint8).reshape(-1, before.itemsize) == 0xFF, axis=1))
                elif isinstance(arg, InPlace):
                    ok &= got != before.tobytes()
                else:
                    ok &= got == before.tobytes()
            if name.startswith("sum_of_squares"):
                total = np.array([xmm0], np.uint64).view(np.float64)[0]
                ok &= abs(total - exact) <= 1e-12 * exact
                after.append(total.tobytes())
            results.append(after)
        check(ok and results[0] == results[1], f"{source} {name}: the AVX-512 clone's outputs bit-equal the AVX2 one's")


def main():
    shim, objects = sys.argv[1], [o for arg in sys.argv[2:] for o in arg.split(";")]  # CMake's lists, unexpanded
    machine = Avx512Machine(objects, shim)
    check_exp(machine)
    check_lane_ops(machine)
    for lanes in (16, 8):
        check_softmax(machine, lanes, np.random.default_rng(0))
    check_bf16_store(machine, np.random.default_rng(2))
    check_logf(machine)
    check_clones(machine, np.random.default_rng(1))
    print(f"{len(failures)} failed: " + "; ".join(failures) if failures else "all passed on the emulated AVX-512 CPU")
    sys.stdout.flush()
    os._exit(1 if failures else 0)  # skips the extension's leak report at interpreter exit


main()
