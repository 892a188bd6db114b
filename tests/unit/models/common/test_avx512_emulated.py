"""Our AVX-512 CPU kernels run on an emulated AVX-512 CPU (tests/reference/avx512_machine.py), so they are checked
on every machine, not only on those that have it (where test_cpu_kernel.cpp's Lanes16 cases and the flash attention's
Isa cases also run them natively). Against float64 (numpy) and hand-computed values:
  * cpu::Lanes16's exp within 2 ulp over [-87, 88], e^-87 below, e^0 = 1, NaN kept; its masks and reductions
    (test_cpu_kernel.cpp's exp16_all and lane_ops16, the same inputs as its native cases);
  * the attention's softmax kernels on 16 lanes, and on AVX2's 8 beside them: one online-softmax step of the forward
    (softmax_step16/8: running max and sum, rescaled accumulator, probabilities) and the backward's P and dS
    (probs_and_grads16/8), on 128 x 128 blocks with no mask, and causal ones whose last visible key falls on every
    kind of lane (block starts, mid-vector, past the block).
Usage: test_avx512_emulated.py SHIM OBJECT... (the objects of titan_models and titan_unit_tests; tests/CMakeLists.txt)
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../reference"))
from avx512_machine import Avx512Machine  # noqa: E402

NS = "titan::(anonymous namespace)::"
BLOCK, HD = 128, 16
TWO_ULP = 2.0 / (1 << 23)
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def floats(machine, addr, n):
    return np.frombuffer(machine.read(addr, 4 * n), np.float32).copy()


def check_exp(machine):
    i = np.arange(175 * 1024 + 1)
    f = np.float32  # test_cpu_kernel.cpp's exponents(), in its fp32 arithmetic
    x = f(-87) + i.astype(f) / f(1024) + f(1e-4) * (i % 7).astype(f)
    x = np.concatenate([x, np.zeros(-len(x) % 16, np.float32)])
    y = machine.buffer(x.nbytes)
    machine.call(NS + "exp16_all", machine.buffer(x.tobytes()), len(x), y)
    exact = np.exp(x.astype(np.float64))
    worst = np.max(np.abs(floats(machine, y, len(x)) - exact) / exact)
    check(worst < TWO_ULP, f"Lanes16 exp over [-87, 88]: worst {worst * 2**23:.2f} ulp (< 2)")
    edges = np.float32([-1000, -np.inf, -87, 88, 50, -50, 0, 1, -1, 10, -10, 20, -20, 30, -30, np.nan])
    out = machine.buffer(64)
    machine.call(NS + "exp16_all", machine.buffer(edges.tobytes()), 16, out)
    e = floats(machine, out, 16)
    check(e[0] == e[2] and e[1] == e[2], f"Lanes16 exp below -87 is e^-87: {e[:3]}")
    inside = np.abs(e[2:15] - np.exp(edges[2:15].astype(np.float64))) / np.exp(edges[2:15].astype(np.float64))
    check(np.all(inside < TWO_ULP), f"Lanes16 exp at -87, 88 and in between: worst {inside.max() * 2**23:.2f} ulp")
    check(e[6] == 1 and np.isnan(e[15]), f"Lanes16 exp: e^0 = {e[6]}, e^NaN = {e[15]}")


def check_lane_ops(machine):
    counts = [-3, 0, 1, 7, 8, 9, 16, 17, 128]  # test_cpu_kernel.cpp's kCounts
    keep, select, reduced = machine.buffer(64 * len(counts)), machine.buffer(64 * len(counts)), machine.buffer(16)
    machine.call(NS + "lane_ops16", keep, select, reduced)
    below = np.array([[1.0 if lane < n else 0.0 for lane in range(16)] for n in counts], np.float32)
    check(np.array_equal(floats(machine, keep, 16 * len(counts)).reshape(-1, 16), below), "Lanes16 keep(first(n))")
    check(np.array_equal(floats(machine, select, 16 * len(counts)).reshape(-1, 16), 2 - below),
          "Lanes16 select(first(n))")
    check(list(floats(machine, reduced, 4)) == [16, 136, 0, 7], "Lanes16 reduce_max, reduce_add")


# (causal, q0, k0): no mask; the diagonal block (rows see 1 to 128 keys: every partial vector); a block wholly
# visible; causal blocks whose queries are 5, 9, 100 and 3 positions past the keys (rows see 6, 10, 101, 4 keys on)
CASES = [(False, 0, 0), (True, 0, 0), (True, 256, 128), (True, 133, 128), (True, 137, 128), (True, 100, 0),
         (True, 3, 0)]


def visible(causal, q0, k0):
    return (k0 + np.arange(BLOCK)[None, :] <= q0 + np.arange(BLOCK)[:, None]) if causal else np.ones((BLOCK, BLOCK), bool)


def check_softmax(machine, lanes, rng):
    worst = {"p": 0.0, "l": 0.0, "acc": 0.0, "P": 0.0, "dS": 0.0}
    zeros_ok, m_ok = True, True
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
            got_p = floats(machine, p, BLOCK * BLOCK).reshape(BLOCK, BLOCK)
            zeros_ok &= bool(np.all(got_p[~vis] == 0))
            m_ok &= bool(np.array_equal(floats(machine, m, BLOCK), m_new.astype(np.float32)))
            worst["p"] = max(worst["p"], np.max(np.abs(got_p - p_ref)))
            l_ref = l0 * correction + p_ref.sum(1)
            worst["l"] = max(worst["l"], np.max(np.abs(floats(machine, l, BLOCK) - l_ref) / l_ref))
            acc_ref = acc0 * correction[:, None]
            worst["acc"] = max(worst["acc"], np.max(np.abs(floats(machine, acc, BLOCK * HD).reshape(BLOCK, HD) - acc_ref)))
        # the backward's P = exp(S scale - lse) and dS = P (dP - D) scale
        lse = (np.log(np.where(vis, np.exp(s64), 0).sum(1)) + 0.1).astype(np.float32)
        dp, d = rng.standard_normal((BLOCK, BLOCK)).astype(np.float32), rng.standard_normal(BLOCK).astype(np.float32)
        p, ds = machine.buffer(BLOCK * BLOCK * 4), machine.buffer(BLOCK * BLOCK * 4)
        name = f"probs_and_grads{lanes}" + ("<float>" if lanes == 16 else "")
        machine.call(NS + name, machine.buffer(s.tobytes()), machine.buffer(dp.tobytes()), machine.buffer(lse.tobytes()),
                     machine.buffer(d.tobytes()), scale, causal, q0, k0, p, ds)
        p_ref = np.where(vis, np.exp(s64 - lse[:, None]), 0)
        ds_ref = p_ref * (dp - d[:, None]) * scale
        got_p = floats(machine, p, BLOCK * BLOCK).reshape(BLOCK, BLOCK)
        got_ds = floats(machine, ds, BLOCK * BLOCK).reshape(BLOCK, BLOCK)
        zeros_ok &= bool(np.all(got_p[~vis] == 0) and np.all(got_ds[~vis] == 0))
        worst["P"] = max(worst["P"], np.max(np.abs(got_p - p_ref)))
        worst["dS"] = max(worst["dS"], np.max(np.abs(got_ds - ds_ref)))
    # Bounds: the shifted score's fp32 rounding (|s scale| <= ~4: 5e-7 relative) and 2 ulp of the exp; a sum of 128.
    check(m_ok, f"softmax_step{lanes}: running max equal to float64's")
    check(zeros_ok, f"softmax_step{lanes}, probs_and_grads{lanes}: keys after the query exactly 0")
    for key, bound in (("p", 1e-6), ("l", 4e-6), ("acc", 2e-6), ("P", 1e-6), ("dS", 1e-6)):
        check(worst[key] < bound, f"{lanes} lanes: {key} within {bound:g} of float64's (worst {worst[key]:.3g})")


def main():
    shim, objects = sys.argv[1], sys.argv[2:]
    machine = Avx512Machine(objects, shim)
    check_exp(machine)
    check_lane_ops(machine)
    for lanes in (16, 8):
        check_softmax(machine, lanes, np.random.default_rng(0))
    print(f"{len(failures)} failed: " + "; ".join(failures) if failures else "all passed on the emulated AVX-512 CPU")
    sys.stdout.flush()
    os._exit(1 if failures else 0)  # skips the extension's leak report at interpreter exit


main()
