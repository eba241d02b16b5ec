"""The audit (verifier/audit): exact queries and balls, the data checks, formal radii that no
attack or dense sampling contradicts, falsifications with confirmed counterexamples, the report,
resume, process and Ray runs, and the command line's bad inputs."""
from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

import vnnlib
from conftest import run_cli
from verifier.audit.data import AuditInputError, load_data
from verifier.audit.queries import in_ball, robustness_query, up

EPS = ["0.02", "0.05", "0.1"]


# --------------------------------------------------------------------------- queries and balls
def test_query_is_exactly_the_clipped_ball():
    rng = np.random.default_rng(0)
    x0 = rng.random(12).astype(np.float32)
    x0[0], x0[1] = 0.0, 1.0
    prop = vnnlib.parse_text(robustness_query(x0, 2, 4, "0.1", (0.0, 1.0), (1, 12), (1, 4)))
    (case,) = prop.cases
    for i, v in enumerate(x0.astype(np.float64)):
        lo = max(Fraction(v) - Fraction("0.1"), Fraction(0))
        hi = min(Fraction(v) + Fraction("0.1"), Fraction(1))
        assert Fraction(case.lo[i]) <= lo and Fraction(case.hi[i]) >= hi   # outward
        assert case.exact_box().lo[i] == lo and case.exact_box().hi[i] == hi
    # the label loses to j < 2 on a tie, not to j > 2
    assert case.violated_by(np.array([1.0, 0.0, 1.0, 0.0]))
    assert not case.violated_by(np.array([0.0, 0.0, 1.0, 1.0]))
    assert case.violated_by(np.array([0.0, 0.0, 1.0, 1.5]))


def test_in_ball_is_exact():
    x0 = np.array([0.5, 0.25])
    e = "0.1"
    edge = np.array([0.5 + 0.1, 0.25])            # 0.6 as a float: above 0.5 + 1/10 or not, exactly
    assert in_ball(edge, x0, e, "linf", None) == (Fraction(0.5 + 0.1) - Fraction(0.5) <= Fraction(1, 10))
    assert in_ball(np.array([0.55, 0.3]), x0, e, "linf", (0, 1))
    assert not in_ball(np.array([0.55, 0.3]), x0, e, "linf", (0, 0.5))
    o, p = np.zeros(2), np.array([0.375, 0.5])                  # at distance 0.625 exactly
    assert in_ball(p, o, "0.625", "l2", None) and not in_ball(p, o, "0.62499999999999999999", "l2", None)
    assert in_ball(p, o, "0.5", "linf", None) and not in_ball(p, o, "0.49999999999999999999", "linf", None)
    assert not in_ball(np.array([np.nan, 0.25]), x0, e, "linf", None)
    assert up("0.1") >= 0.1 and Fraction(up("0.1")) >= Fraction(1, 10)
    assert Fraction(up("0.3")) >= Fraction(3, 10) and Fraction(np.nextafter(up("0.3"), 0)) < Fraction(3, 10)


# --------------------------------------------------------------------------- data
@pytest.mark.parametrize("x,y,msg", [
    (np.zeros((3, 63), np.float32), np.zeros(3, np.int64), "shape"),
    (np.zeros((3, 64), np.int32), np.zeros(3, np.int64), "floats expected"),
    (np.zeros((3, 64), np.float32), np.zeros(4, np.int64), "y has shape"),
    (np.zeros((3, 64), np.float32), np.array([0, 10, 1]), "not one of the model's 10 classes"),
    (np.zeros((3, 64), np.float32), np.array([0.0, 1.0, 1.0]), "integer labels"),
    (np.full((3, 64), np.nan, np.float32), np.zeros(3, np.int64), "NaN"),
    (np.full((3, 64), 2.0, np.float32), np.zeros(3, np.int64), "outside the input range"),
    (np.full((3, 64), 0.1, np.float64), np.zeros(3, np.int64), "cannot represent exactly"),
])
def test_bad_data_is_refused(tmp_path, x, y, msg):
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(AuditInputError, match=msg):
        load_data(path, (1, 64), 10, (0.0, 1.0))


def _one_output_model(tmp_path):
    """A 64 -> 1 linear model: not a classifier."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((64, 1), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "one",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], [w])
    path = tmp_path / "one.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_bad_inputs_on_the_command_line(tmp_path, digits):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((2, 5), np.float32), y=np.zeros(2, np.int64))
    model, data = digits["digits_mlp"], digits["digits_test"]
    for args in ([model, "--data", bad, "--eps", "0.1"],
                 [model, "--data", tmp_path / "missing.npz", "--eps", "0.1"],
                 [model, "--data", data, "--eps", "0.1,-1"],
                 [model, "--data", data, "--eps", "0.1", "--methods", "formal,magic"],
                 [model, "--data", data, "--eps", "0.1", "--input-range", "1,0"],
                 [tmp_path / "nope.onnx", "--data", data, "--eps", "0.1"],
                 [_one_output_model(tmp_path), "--data", data, "--eps", "0.1"]):
        r = run_cli("audit", *args, "--out", tmp_path / "o")
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stdout == ""


# --------------------------------------------------------------------------- soundness per sample
def _ort_labels(model, xs):
    import onnxruntime as ort

    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name, shape = s.get_inputs()[0].name, s.get_inputs()[0].shape
    return np.array([int(np.argmax(s.run(None, {name: x.reshape(shape).astype(np.float32)})[0])) for x in xs])


def _ball_points(x0, r, k, rng, input_range=(0.0, 1.0)):
    """k points of the clipped L-inf ball: random, corners and single-coordinate extremes."""
    n = x0.size
    d = rng.uniform(-r, r, size=(k, n))
    d[: k // 2] = np.sign(d[: k // 2]) * r
    pts = np.clip(x0.astype(np.float64) + d, *input_range).astype(np.float32)
    return np.array([p for p in pts if in_ball(p, x0, repr(r), "linf", input_range)])


@pytest.fixture(scope="module")
def formal_audit(digits, tmp_path_factory):
    from verifier.audit import audit

    out = tmp_path_factory.mktemp("audit")
    report = audit(digits["digits_mlp"], digits["digits_test"], EPS, out, input_range=(0, 1),
                   timeout_per_sample=6, limit=6, smoothing_n=2000, sigma=0.1, progress=False)
    return report, out


def test_formal_radii_are_never_contradicted(digits, formal_audit):
    report, _ = formal_audit
    data = np.load(digits["digits_test"])
    rng = np.random.default_rng(1)
    for s in report.samples:
        x0 = data["x"][s["index"]]
        if s["predicted"] != s["label"]:
            continue
        for method in ("formal", "lipschitz"):
            r = s[method]["radius_lower"]
            assert r >= 0
            if r > 0:
                pts = _ball_points(x0, r, 400, rng)
                assert (_ort_labels(digits["digits_mlp"], pts) == s["label"]).all(), (method, s)
            assert r <= s["formal"]["radius_upper"] if s["formal"]["radius_upper"] is not None else True
        r = s["formal"]["radius_lower"]
        for e, st in s["formal"]["status"].items():
            if st == "certified":   # the largest certified radius, rounded down to a float
                assert r >= float(e) * (1 - 1e-15), (s, e)
            if s["attack"]["status"][e] == "falsified":
                assert st != "certified", (s, e)


def test_falsified_means_a_confirmed_counterexample(digits, formal_audit):
    report, _ = formal_audit
    data = np.load(digits["digits_test"])
    for s in report.samples:
        cex = s["formal"].get("counterexample")
        falsified = [e for e, st in s["formal"]["status"].items() if st == "falsified"]
        if s["predicted"] != s["label"] or not falsified:
            continue
        assert cex is not None
        x = np.array(cex, dtype=np.float32)
        assert _ort_labels(digits["digits_mlp"], [x])[0] != s["label"]
        for e in falsified:
            assert in_ball(x, data["x"][s["index"]], e, "linf", (0.0, 1.0))
        assert s["formal"]["radius_upper"] is not None
        assert Fraction(s["formal"]["radius_upper"]) >= max(abs(Fraction(float(a)) - Fraction(float(b)))
                                                             for a, b in zip(x, data["x"][s["index"]]))


def test_report_files_and_schema(formal_audit):
    report, out = formal_audit
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "certified_accuracy.png",
                                              "samples.jsonl", "audit.json"}
    j = json.loads((out / "report.json").read_text())
    assert j["n"] == 6 and j["norm"] == "linf" and 0 <= j["clean_accuracy"] <= 1
    for m in ("formal", "lipschitz", "smoothing", "attack"):
        assert set(j["methods"][m]["certified_accuracy"]) == set(EPS)
    assert j["methods"]["formal"]["acr"] >= 0 and j["methods"]["lipschitz"]["acr"] >= 0
    for s in j["samples"]:
        assert {"index", "label", "predicted", "formal", "lipschitz", "smoothing", "attack"} <= set(s)
        assert set(s["formal"]["status"].values()) <= {"certified", "falsified", "unknown"}
        sm = s["smoothing"]
        assert sm["sigma"] == 0.1 and 0 <= sm["pA_lower"] <= 1
        assert (sm["radius"] is None) == (sm["predicted"] is None or sm["pA_lower"] <= 0.5)
    # certified accuracy never exceeds what the attack leaves
    for e in EPS:
        assert j["methods"]["formal"]["certified_accuracy"][e] <= j["methods"]["attack"]["certified_accuracy"][e]
    md = (out / "report.md").read_text()
    assert "| formal (our engine) |" in md and "| randomized smoothing |" in md and "gap" in md
    assert "probability 0.999" in md


def test_resume_skips_finished_samples_and_restarts_on_new_arguments(digits, tmp_path):
    from verifier.audit import audit

    kw = dict(input_range=(0, 1), methods=["attack"], limit=3, progress=False)
    audit(digits["digits_mlp"], digits["digits_test"], ["0.05"], tmp_path, **kw)
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 3
    # a run cut short: one record lost, one half-written
    (tmp_path / "samples.jsonl").write_text("\n".join(lines[:2]) + '\n{"index": 2, "lab')
    r = audit(digits["digits_mlp"], digits["digits_test"], ["0.05"], tmp_path, **dict(kw, limit=4))
    recs = [json.loads(l) for l in (tmp_path / "samples.jsonl").read_text().splitlines()[2:]]
    assert sorted(rec["index"] for rec in recs) == [2, 3] and r.n == 4
    audit(digits["digits_mlp"], digits["digits_test"], ["0.05", "0.1"], tmp_path, **kw)   # new arguments
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 3


def test_processes_and_ray_give_the_serial_records(digits, tmp_path):
    from verifier.audit import audit

    # easy questions (decided in well under a second), a budget that a loaded machine cannot exhaust
    kw = dict(input_range=(0, 1), methods=["formal", "attack"], timeout_per_sample=30, limit=3, progress=False)
    serial = audit(digits["digits_mlp_ibp"], digits["digits_test"], ["0.05"], tmp_path / "s", **kw)
    pooled = audit(digits["digits_mlp_ibp"], digits["digits_test"], ["0.05"], tmp_path / "p", jobs=2, **kw)
    on_ray = audit(digits["digits_mlp_ibp"], digits["digits_test"], ["0.05"], tmp_path / "r", ray="local", **kw)
    strip = lambda rep: [(s["index"], s["predicted"], s["formal"]["status"], s["attack"]["status"])
                         for s in rep.samples]
    assert strip(serial) == strip(pooled) == strip(on_ray)


def test_l2_audit_is_sound(digits, tmp_path):
    """L2 balls: certified radii survive dense sampling on the sphere's surface and inside it, and
    every falsification carries a counterexample in the ball that onnxruntime confirms."""
    from verifier.audit import audit

    model, data = digits["digits_mlp_ibp"], np.load(digits["digits_test"])
    rep = audit(model, digits["digits_test"], ["0.1", "0.3", "0.6"], tmp_path, norm="l2", input_range=(0, 1),
                methods=["formal", "attack"], timeout_per_sample=30, limit=5, progress=False)
    rng = np.random.default_rng(5)
    statuses = set()
    for s in rep.samples:
        statuses |= set(s["formal"]["status"].values())
        x0 = data["x"][s["index"]].astype(np.float64)
        r = s["formal"]["radius_lower"]
        if r > 0:
            d = rng.normal(size=(300, x0.size))
            d *= (r * rng.uniform(0.5, 1.0, size=(300, 1)) ** 0.1) / np.linalg.norm(d, axis=1, keepdims=True)
            pts = np.clip(x0 + d, 0, 1).astype(np.float32)
            pts = np.array([p for p in pts if in_ball(p, x0, repr(r), "l2", (0.0, 1.0))])
            assert len(pts) > 100 and (_ort_labels(model, pts) == s["label"]).all(), s
        cex = s["formal"].get("counterexample")
        for e, st in s["formal"]["status"].items():
            if st == "falsified" and s["predicted"] == s["label"]:
                assert in_ball(np.array(cex, np.float32), x0, e, "l2", (0.0, 1.0))
                assert _ort_labels(model, [np.array(cex, np.float32)])[0] != s["label"]
    assert "certified" in statuses


def test_command_line_audit_of_the_cnn(digits, tmp_path):
    """The whole command on an image-shaped model and data: the table on stdout, the files in DIR,
    and a second run that finds every sample done."""
    args = ["audit", digits["digits_cnn_ibp"], "--data", digits["digits_test_img"], "--eps", "0.02,0.05",
            "--input-range", "0,1", "--out", tmp_path, "--limit", "3", "--timeout-per-sample", "5",
            "--smoothing-n", "500", "-q"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "| formal (our engine) |" in r.stdout and "| Lipschitz |" in r.stdout
    j = json.loads((tmp_path / "report.json").read_text())
    assert j["n"] == 3 and set(j["methods"]) == {"formal", "lipschitz", "smoothing", "attack"}
    before = (tmp_path / "samples.jsonl").read_text()
    r = run_cli(*args)
    assert r.returncode == 0 and (tmp_path / "samples.jsonl").read_text() == before
