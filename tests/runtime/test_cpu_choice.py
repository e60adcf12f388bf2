"""CPU features and what they decide: the flags read from cpuinfo text, bf16 refused in one line on a CPU without
native bfloat16, the backend ``auto`` picks per precision from the machine's CPU and installed runtimes (and the
reason it gives), and the one-line tip for a faster precision whose gate passed."""

from __future__ import annotations

import pytest

from sk_deploy.bundle import Bundle
from sk_deploy.machine import BackendUnavailable, CpuFeatures, Machine, parse_cpuinfo, probe_machine
from sk_deploy.precisions import Precision
from sk_deploy.runtime.cpu_choice import cpu_backend, faster_tip
from sk_deploy.runtime.predictor import Predictor, plan

CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
model name\t: {name}
flags\t\t: fpu sse sse2 {flags}

processor\t: 1
model name\t: {name}
flags\t\t: fpu sse sse2 {flags}
"""
AVX2_EPYC = parse_cpuinfo(CPUINFO.format(vendor="AuthenticAMD", name="AMD EPYC 7B12", flags="avx avx2 fma"))
ZEN4_EPYC = parse_cpuinfo(CPUINFO.format(vendor="AuthenticAMD", name="AMD EPYC 9B14",
                                         flags="avx avx2 avx512f avx512_vnni avx512_bf16"))
SAPPHIRE = parse_cpuinfo(CPUINFO.format(vendor="GenuineIntel", name="Intel(R) Xeon(R) Platinum 8481C",
                                        flags="avx2 avx512f avx512_vnni amx_tile amx_bf16 amx_int8"))


def machine(cpu: CpuFeatures, openvino: str | None = "2026.4.1") -> Machine:
    return Machine(cuda=False, gpu_name=None, compute_capability=None, ort_providers=("CPUExecutionProvider",),
                   tensorrt_version=None, openvino_version=openvino, cpu=cpu)


def test_flags_come_from_cpuinfo_and_decide_bf16() -> None:
    assert AVX2_EPYC.name == "AMD EPYC 7B12" and "avx2" in AVX2_EPYC.flags and not AVX2_EPYC.native_bf16
    assert ZEN4_EPYC.native_bf16 and ZEN4_EPYC.int8_dot  # AVX-512 BF16 without AMX
    assert SAPPHIRE.native_bf16 and SAPPHIRE.reported()[:2] == ["amx_bf16", "amx_int8"]
    assert parse_cpuinfo("").flags == frozenset()  # a kernel that lists nothing: nothing is claimed
    assert Precision.BF16.cpu_refusal(ZEN4_EPYC) is None and Precision.BF16.cpu_refusal(SAPPHIRE) is None
    refusal = Precision.BF16.cpu_refusal(AVX2_EPYC)
    assert refusal is not None and "\n" not in refusal
    assert refusal.startswith("bf16 needs a CPU with native bfloat16 (avx512_bf16 or amx_bf16)")
    assert "AMD EPYC 7B12 (avx2)" in refusal and "--precision fp32" in refusal


def test_bf16_on_a_cpu_without_it_is_refused_in_one_line_by_name_and_by_auto(small_bundle: Bundle) -> None:
    manifest = small_bundle.manifest
    for backend in ("openvino", "auto"):
        with pytest.raises(BackendUnavailable, match=r"^bf16 needs a CPU with native bfloat16") as caught:
            plan(manifest, backend, "bf16", machine(AVX2_EPYC))
        assert "\n" not in str(caught.value)
    with pytest.raises(BackendUnavailable, match="bf16 runs on the openvino backend, and OpenVINO is not installed"):
        plan(manifest, "auto", "bf16", machine(SAPPHIRE, openvino=None))
    with pytest.raises(BackendUnavailable, match=r"bf16 runs on the openvino backend only .* not on ort-cpu"):
        plan(manifest, "ort-cpu", "bf16", machine(SAPPHIRE))
    with pytest.raises(BackendUnavailable, match="the openvino backend runs fp32, bf16, int8, not fp16"):
        plan(manifest, "openvino", "fp16", machine(SAPPHIRE))
    choice = plan(manifest, "openvino", "bf16", machine(ZEN4_EPYC))
    assert (choice.backend, choice.file) == ("openvino", "model.onnx")


def test_auto_picks_per_precision_from_cpu_and_runtimes_and_says_why(small_bundle: Bundle) -> None:
    manifest = {**small_bundle.manifest, "files": {**small_bundle.manifest["files"], "model.int8.onnx": {},
                                                   "model.int8-cpu.onnx": {}}}
    fp32 = plan(manifest, "auto", "fp32", machine(SAPPHIRE))
    assert fp32.backend == "openvino" and "f32 pinned is faster than ONNX Runtime on AVX-512 CPUs" in fp32.reason
    bf16 = plan(manifest, "auto", "bf16", machine(ZEN4_EPYC))
    assert bf16.backend == "openvino" and "computes bfloat16 natively (avx512_bf16" in bf16.reason
    int8 = plan(manifest, "auto", "int8", machine(ZEN4_EPYC))
    assert (int8.backend, int8.file) == ("openvino", "model.int8.onnx") and "int8 graph faster" in int8.reason
    avx2 = plan(manifest, "auto", "fp32", machine(AVX2_EPYC))
    assert avx2.backend == "ort-cpu" and "no AVX-512" in avx2.reason and "not measured" in avx2.reason
    avx2_int8 = plan(manifest, "auto", "int8", machine(AVX2_EPYC))
    assert (avx2_int8.backend, avx2_int8.file) == ("ort-cpu", "model.int8-cpu.onnx")
    assert "no int8 dot products" in avx2_int8.reason
    bare = plan(manifest, "auto", "int8", machine(SAPPHIRE, openvino=None))
    assert (bare.backend, bare.file) == ("ort-cpu", "model.int8-cpu.onnx")
    assert "OpenVINO, faster still on AVX-512 CPUs: OpenVINO is not installed: pip install openvino" in bare.reason


def test_auto_here_is_the_cpu_rule_for_this_machine(small_bundle: Bundle) -> None:
    here = probe_machine()
    if here.cuda:
        pytest.skip("this machine has a GPU: auto picks a GPU backend for fp32")
    expected, why = cpu_backend(small_bundle, "fp32", here)
    with Predictor(small_bundle) as predictor:
        assert predictor.backend == expected and predictor.reason == f"no CUDA GPU here: {why}"
        assert predictor.predict(predictor.example(2)).shape == (2, 1000)


def gated(manifest: dict, **entries: bool) -> dict:
    stages = {**manifest.get("stages", {}), "precision": {
        key: {"accuracy": {"passed": passed, "cosine_mean": 0.99996 if passed else 0.9}}
        for key, passed in entries.items()}}
    return {**manifest, "stages": stages}


def test_the_tip_names_a_faster_precision_only_once_its_gate_passed(small_bundle: Bundle) -> None:
    manifest = small_bundle.manifest
    here = machine(SAPPHIRE)
    assert faster_tip(manifest, "openvino", "fp32", here) is None  # nothing measured yet
    assert faster_tip(gated(manifest, bf16=False), "openvino", "fp32", here) is None
    tip = faster_tip(gated(manifest, bf16=True), "openvino", "fp32", here)
    assert tip is not None and tip.startswith("tip: --precision bf16 runs faster") and "0.99996" in tip
    assert "\n" not in tip
    assert faster_tip(gated(manifest, bf16=True), "openvino", "bf16", here) is None  # already on it
    assert faster_tip(gated(manifest, bf16=True), "openvino", "fp32", machine(AVX2_EPYC)) is None  # cannot run
    with_int8 = {**gated(manifest, **{"bf16": True, "model.int8-cpu.onnx": True}),
                 "files": {**manifest["files"], "model.int8-cpu.onnx": {}}}
    # int8: its gate as judged on each CPU backend (quantize's record), not only on the reference
    assert faster_tip(with_int8, "ort-cpu", "fp32", machine(AVX2_EPYC)) is None  # judged on no backend
    entry = with_int8["stages"]["precision"]["model.int8-cpu.onnx"]
    entry["backends"] = {"ort-cpu": {"accuracy": {"passed": False, "failures": ["mean cosine 0.9 < 0.99"]}},
                         "openvino": {"accuracy": {"passed": False, "failures": ["mean cosine 0.9 < 0.99"]}}}
    assert faster_tip(with_int8, "ort-cpu", "fp32", machine(AVX2_EPYC)) is None  # failed on each
    entry["backends"]["openvino"] = {"accuracy": {"passed": True, "cosine_mean": 0.99871}}
    int8_tip = faster_tip(with_int8, "ort-cpu", "fp32", machine(AVX2_EPYC))
    assert int8_tip is not None and int8_tip.startswith("tip: --precision int8 runs faster on this CPU "
                                                        "(model.int8-cpu.onnx on openvino; its gate passed there: "
                                                        "mean cosine 0.99871"), int8_tip
