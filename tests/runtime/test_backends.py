"""The shared Backend base on real ONNX Runtime sessions: one constructor shape, capabilities as attributes,
run_timed refused, an idempotent close that drops the session; the Predictor's backend table; the machine's
CPU features; the bundle's one precision -> file table."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sk_deploy.backends import BACKENDS
from sk_deploy.bundle import GRAPH_FORMS, Bundle, MissingGraph, graph_form, graph_forms
from sk_deploy.machine import CPU_FEATURES, BackendUnavailable, cgroup_cpu_limit, cpu_features
from sk_deploy.precisions import PRECISIONS
from sk_deploy.runtime.backend import Backend
from sk_deploy.runtime.ort_backend import OrtCpuBackend, OrtOptions
from sk_deploy.runtime.predictor import Predictor


def test_ort_backend_shares_the_base_and_frees_its_session(small_bundle: Bundle) -> None:
    backend = OrtCpuBackend(small_bundle.check_file("model.onnx"), small_bundle, precision="fp32")
    assert isinstance(backend, Backend) and backend.name == "ort-cpu"
    assert backend.device_timing is False and backend.max_batch is None
    batch = small_bundle.input_spec.example(2)
    logits = backend.run(batch)
    assert logits.shape == (2, small_bundle.classes) and logits.dtype == np.float32
    with pytest.raises(BackendUnavailable, match="no device-side split"):
        backend.run_timed(batch)
    backend.close()
    assert backend.closed and backend.session is None
    backend.close()  # a second close does nothing
    assert backend.closed


def test_an_ort_session_keeps_to_the_cpus_its_process_is_confined_to(small_bundle: Bundle,
                                                                    every_cpu: set[int]) -> None:
    """ONNX Runtime's default thread pool takes one thread per physical core and pins them, whatever ``taskset`` or
    a container's cpuset says; sk-deploy's sessions size theirs to the CPUs the process may use."""
    if len(every_cpu) < 2:
        pytest.skip("needs a machine with two CPUs or more, to confine the process to one of them")

    def threads() -> int:
        backend = OrtCpuBackend(small_bundle.check_file("model.onnx"), small_bundle, precision="fp32")
        try:
            return backend.session.get_session_options().intra_op_num_threads
        finally:
            backend.close()

    limit = cgroup_cpu_limit()  # a container's CPU limit below the machine's cores confines the process too
    assert threads() == (limit if limit and limit < len(every_cpu) else 0)  # else ONNX Runtime's own default
    os.sched_setaffinity(0, {min(every_cpu)})  # the fixture gives the CPUs back
    assert threads() == 1
    explicit = OrtCpuBackend(small_bundle.check_file("model.onnx"), small_bundle, precision="fp32",
                             options=OrtOptions(threads=3))
    assert explicit.session.get_session_options().intra_op_num_threads == 3  # asked for: kept
    explicit.close()


def test_a_cgroup_cpu_limit_counts_as_cpus(tmp_path: Path) -> None:
    """Docker's --cpus, Kubernetes' limits.cpu: a share of time the process cannot see as a CPU set."""
    pod = tmp_path / "kubepods.slice" / "pod1"
    own = pod / "container"
    own.mkdir(parents=True)
    (own / "cpu.max").write_text("max 100000\n")
    membership = "0::/kubepods.slice/pod1/container\n"
    assert cgroup_cpu_limit(tmp_path, membership) is None  # no limit
    (pod / "cpu.max").write_text("250000 100000\n")  # the pod's limit, above the container's cgroup
    assert cgroup_cpu_limit(tmp_path, membership) == 3  # 2.5 CPUs, rounded up
    (own / "cpu.max").write_text("50000 100000\n")
    assert cgroup_cpu_limit(tmp_path, membership) == 1  # the tightest counts
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(v1.parent, "1:cpu:/\n0::/\n") is None
    (v1 / "cpu.cfs_quota_us").write_text("400000\n")
    assert cgroup_cpu_limit(v1.parent, "1:cpu:/\n0::/\n") == 4


def test_predictor_reads_capabilities_and_closes_once(small_bundle: Bundle) -> None:
    predictor = Predictor(small_bundle, "ort-cpu", "fp32")
    assert predictor.device_timing is False and predictor.max_batch is None
    with pytest.raises(BackendUnavailable, match="no device-side split"):
        predictor.predict_timed(predictor.example(1))
    raw = Predictor(small_bundle, "ort-cpu", "fp32", file="model.raw.onnx")
    np.testing.assert_allclose(raw.predict(raw.example(2)), predictor.predict(predictor.example(2)), atol=1e-4)
    for opened in (predictor, raw):
        opened.close()
        opened.close()


def test_every_backend_is_one_table_entry() -> None:
    assert tuple(BACKENDS) == ("tensorrt", "ort-tensorrt", "ort-cuda", "ort-cpu", "openvino", "torch")
    assert {spec.runs for spec in BACKENDS.values()} == {"engine", "onnx", "network"}


def test_cpu_features_come_from_the_flags_line() -> None:
    text = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_tile\n\nprocessor\t: 1\n"
    assert cpu_features(text) == ("avx2", "avx512f", "avx512_vnni")
    assert cpu_features("") == () and set(cpu_features()) <= set(CPU_FEATURES)


def test_one_precision_to_file_table(small_bundle: Bundle) -> None:
    # one form per file, but for bf16, which OpenVINO compiles from the float32 graph on CPUs
    assert PRECISIONS == ("fp32", "fp16", "int8", "bf16", "tf32")
    separate = [f for f in GRAPH_FORMS if f.precision != "bf16"]
    assert len({f.file for f in separate}) == len(separate)
    assert [(f.file, f.target) for f in graph_forms("bf16", "cpu")] == [("model.onnx", "cpu")]
    assert graph_forms("bf16", "gpu") == ()
    assert small_bundle.graph("bf16", "cpu") == "model.onnx"
    assert [f.file for f in graph_forms("int8", "cpu")] == ["model.int8-cpu.onnx", "model.int8.onnx"]
    assert [f.file for f in graph_forms("int8", "gpu")] == ["model.int8.onnx"]
    assert graph_form("int8", "cpu").file == "model.int8-cpu.onnx" and graph_form("fp16").file == "model.fp16.onnx"
    assert small_bundle.graph("fp32", "gpu") == "model.onnx"
    with pytest.raises(MissingGraph, match=r"no int8 graph model.int8-cpu.onnx \(or model.int8.onnx\); make it: "
                                           r"sk-deploy quantize BUNDLE --precision int8 --target cpu") as caught:
        small_bundle.graph("int8", "cpu")
    assert caught.value.make == graph_form("int8", "cpu").make
