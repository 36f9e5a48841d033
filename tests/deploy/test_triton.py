"""Triton model repositories: config.pbtxt parsed back against Triton's ModelConfig schema and checked field by field
against the ONNX graph, labels, the TensorRT plan variant, atomic writes and overwrite refusal, and the CLI paths."""
from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

import cli
from core.onnx_file import OnnxMeta, write_metadata
from core.contract import MAX_BATCH
from deploy.triton.repository import write_triton_repository
from deploy.triton.config import PlanFile, TritonError, TritonOptions
from runtimes.trt_engine import BatchProfile, engine_manifest, find_engines, store_engine
from core.fileio import sha256_file

CLASSES = ["circle", "cross", "ring", "square", "star"]  # TinyConvNet has 5 outputs


# ---- Triton's ModelConfig schema, the subset we write, with the field numbers and enum values of
# triton-inference-server/common protobuf/model_config.proto. Parsing with protobuf's own text_format rejects any
# misspelled field, wrong nesting, repeated-vs-singular mistake or unknown enum value, as tritonserver would. ----

def _model_config_class():
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="triton_model_config_subset.proto", package="inference",
                                              syntax="proto3")
    enum = file.enum_type.add(name="DataType")
    for i, t in enumerate(["INVALID", "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                           "INT64", "FP16", "FP32", "FP64", "STRING", "BF16"]):
        enum.value.add(name=f"TYPE_{t}", number=i)

    def message(name, fields, parent=None):
        msg = (parent.nested_type if parent else file.message_type).add(name=name)
        for number, field_name, kind, label, type_name in fields:
            field = msg.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name
        return msg

    one, many = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    group = message("ModelInstanceGroup", [(1, "name", f.TYPE_STRING, one, None),
                                           (4, "kind", f.TYPE_ENUM, one, ".inference.ModelInstanceGroup.Kind"),
                                           (2, "count", f.TYPE_INT32, one, None), (3, "gpus", f.TYPE_INT32, many, None),
                                           (5, "profile", f.TYPE_STRING, many, None)])
    kinds = group.enum_type.add(name="Kind")
    for i, k in enumerate(["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"]):
        kinds.value.add(name=k, number=i)
    model_input = message("ModelInput", [(1, "name", f.TYPE_STRING, one, None),
                                         (2, "data_type", f.TYPE_ENUM, one, ".inference.DataType"),
                                         (3, "format", f.TYPE_ENUM, one, ".inference.ModelInput.Format"),
                                         (4, "dims", f.TYPE_INT64, many, None)])
    formats = model_input.enum_type.add(name="Format")
    for i, k in enumerate(["FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"]):
        formats.value.add(name=k, number=i)
    message("ModelOutput", [(1, "name", f.TYPE_STRING, one, None),
                            (2, "data_type", f.TYPE_ENUM, one, ".inference.DataType"),
                            (3, "dims", f.TYPE_INT64, many, None), (4, "label_filename", f.TYPE_STRING, one, None)])
    message("ModelDynamicBatching", [(1, "preferred_batch_size", f.TYPE_INT32, many, None),
                                     (2, "max_queue_delay_microseconds", f.TYPE_UINT64, one, None),
                                     (3, "preserve_ordering", f.TYPE_BOOL, one, None)])
    message("ModelParameter", [(1, "string_value", f.TYPE_STRING, one, None)])
    config = message("ModelConfig", [(1, "name", f.TYPE_STRING, one, None), (2, "platform", f.TYPE_STRING, one, None),
                            (17, "backend", f.TYPE_STRING, one, None), (4, "max_batch_size", f.TYPE_INT32, one, None),
                            (5, "input", f.TYPE_MESSAGE, many, ".inference.ModelInput"),
                            (6, "output", f.TYPE_MESSAGE, many, ".inference.ModelOutput"),
                            (11, "dynamic_batching", f.TYPE_MESSAGE, one, ".inference.ModelDynamicBatching"),
                            (7, "instance_group", f.TYPE_MESSAGE, many, ".inference.ModelInstanceGroup"),
                            (8, "default_model_filename", f.TYPE_STRING, one, None),
                            (14, "parameters", f.TYPE_MESSAGE, many, ".inference.ModelConfig.ParametersEntry")])
    entry = message("ParametersEntry", [(1, "key", f.TYPE_STRING, one, None),
                                        (2, "value", f.TYPE_MESSAGE, one, ".inference.ModelParameter")], config)
    entry.options.map_entry = True  # map<string, ModelParameter> parameters = 14
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return pool, message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


POOL, ModelConfig = _model_config_class()


def enum(name: str, value: str) -> int:
    """The number of an enum value, e.g. enum("DataType", "TYPE_FP32") == 11."""
    return POOL.FindEnumTypeByName(f"inference.{name}").values_by_name[value].number


def parse_config(model_dir: Path):
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), ModelConfig())


def graph_io(path: Path):
    """(name, elem_type, dims with None for symbolic) of every input and output, straight from the ONNX graph."""
    model = onnx.load(str(path), load_external_data=False)

    def rows(values):
        return [(v.name, v.type.tensor_type.elem_type,
                 [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim])
                for v in values]
    return rows(model.graph.input), rows(model.graph.output)


def assert_io_matches(config, path: Path, batched: bool) -> None:
    inputs, outputs = graph_io(path)
    for entries, graph in ((config.input, inputs), (config.output, outputs)):
        assert [e.name for e in entries] == [name for name, _, _ in graph]
        for entry, (_, elem, dims) in zip(entries, graph):
            assert elem == onnx.TensorProto.FLOAT and entry.data_type == enum("DataType", "TYPE_FP32")
            assert (dims[0] is None) == batched
            assert list(entry.dims) == (dims[1:] if batched else dims)


# ---- fixtures ----

@pytest.fixture(scope="module")
def tiny_with_meta(tiny_onnx, tmp_path_factory) -> Path:
    """The tiny conv net (symbolic batch) with alexnet_deploy metadata naming 5 classes."""
    model = onnx.load(str(tiny_onnx.path))
    write_metadata(model, OnnxMeta(class_names=CLASSES, mean=[0.5] * 3, std=[0.25] * 3, input_shape=[3, 16, 16],
                                   precision="fp32", checkpoint_sha256="", checkpoint_path=""))
    path = tmp_path_factory.mktemp("triton") / "model.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def tiny_static(tiny_onnx, onnx_exporter, tmp_path_factory) -> Path:
    return onnx_exporter(tiny_onnx.model, tmp_path_factory.mktemp("static") / "b4.onnx", (3, 16, 16),
                         dynamic_batch=False, batch=4)


def fake_plan(folder: Path, onnx_path: Path, profile=BatchProfile(1, 32, 128)) -> Path:
    """A plan as the engine cache stores it (bytes + manifest). Triton-side only: nothing deserializes it here."""
    manifest = engine_manifest(sha256_file(onnx_path), "11.4.0.106", "NVIDIA H100 80GB HBM3", "9.0", (profile,),
                               {"tf32": False, "workspace_bytes": 1 << 30, "optimization_level": None})
    return store_engine(folder, manifest, np.random.default_rng(0).bytes(4096))


def triton_cli(*args):
    result = CliRunner().invoke(cli.main, ["triton", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    return result


# ---- the ONNX Runtime model ----

def test_config_matches_the_onnx_graph(tiny_with_meta, tmp_path):
    options = TritonOptions(instances=2, kind="cpu", max_queue_delay_us=250)
    result = write_triton_repository(tiny_with_meta, tmp_path / "repo", options)
    folder = tmp_path / "repo" / "alexnet"
    assert [m.path for m in result.models] == [folder]
    assert result.models[0].files == (folder / "config.pbtxt", folder / "labels.txt", folder / "1" / "model.onnx")
    config = parse_config(folder)
    assert (config.name, config.platform, config.backend) == ("alexnet", "onnxruntime_onnx", "onnxruntime")
    assert config.max_batch_size == MAX_BATCH
    assert_io_matches(config, tiny_with_meta, batched=True)
    assert config.input[0].format == enum("ModelInput.Format", "FORMAT_NCHW")
    assert config.output[0].label_filename == "labels.txt" and list(config.output[0].dims) == [len(CLASSES)]
    assert config.HasField("dynamic_batching")
    preferred = list(config.dynamic_batching.preferred_batch_size)
    assert preferred == sorted(set(preferred)) and preferred[-1] == MAX_BATCH and 1 <= preferred[0]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert len(config.instance_group) == 1
    group = config.instance_group[0]
    assert group.count == 2 and group.kind == enum("ModelInstanceGroup.Kind", "KIND_CPU")
    assert (folder / "labels.txt").read_text().splitlines() == CLASSES
    assert filecmp.cmp(tiny_with_meta, folder / "1" / "model.onnx", shallow=False)
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["alexnet"]  # no temporary folder left


def test_max_batch_sets_the_limit_and_preferred_sizes(tiny_with_meta, tmp_path):
    write_triton_repository(tiny_with_meta, tmp_path, TritonOptions(name="tiny", max_batch=64))
    config = parse_config(tmp_path / "tiny")
    assert config.name == "tiny" and config.max_batch_size == 64
    assert list(config.dynamic_batching.preferred_batch_size) == [16, 32, 64]


def test_static_batch_gives_full_dims_and_no_batching(tiny_static, tmp_path):
    result = write_triton_repository(tiny_static, tmp_path)
    config = parse_config(tmp_path / "alexnet")
    assert config.max_batch_size == 0
    assert_io_matches(config, tiny_static, batched=False)
    assert list(config.input[0].dims) == [4, 3, 16, 16] and list(config.output[0].dims) == [4, 5]
    assert not config.HasField("dynamic_batching")
    assert config.input[0].format == enum("ModelInput.Format", "FORMAT_NONE")  # FORMAT_NCHW needs 3 dims
    # No alexnet_deploy metadata: no labels, and the result says so.
    assert not config.output[0].label_filename and not (tmp_path / "alexnet" / "labels.txt").exists()
    assert result.notes and "no class names" in result.notes[0]
    with pytest.raises(TritonError, match="max_batch_size 0, so --max-batch does not apply"):
        write_triton_repository(tiny_static, tmp_path / "other", TritonOptions(max_batch=8))


def test_existing_model_is_refused_unless_overwrite(tiny_with_meta, tmp_path):
    write_triton_repository(tiny_with_meta, tmp_path, TritonOptions(instances=1))
    before = (tmp_path / "alexnet" / "config.pbtxt").read_text()
    with pytest.raises(TritonError, match=r"already exists; pass --overwrite"):
        write_triton_repository(tiny_with_meta, tmp_path, TritonOptions(instances=3))
    assert (tmp_path / "alexnet" / "config.pbtxt").read_text() == before
    write_triton_repository(tiny_with_meta, tmp_path, TritonOptions(instances=3, overwrite=True))
    assert parse_config(tmp_path / "alexnet").instance_group[0].count == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alexnet"]  # the replaced folder is gone too


@pytest.mark.parametrize("options, match", [(TritonOptions(name="../escape"), "model name '../escape'"),
                                            (TritonOptions(kind="tpu"), "instance kind 'tpu'")])
def test_bad_options(tiny_with_meta, tmp_path, options, match):
    with pytest.raises(TritonError, match=match):
        write_triton_repository(tiny_with_meta, tmp_path, options)
    assert not list(tmp_path.iterdir())


# ---- the OpenVINO backend variant ----

@pytest.mark.parametrize("bf16", [False, True])
def test_openvino_backend_serves_the_same_file_on_cpu(tiny_with_meta, tmp_path, bf16):
    result = write_triton_repository(tiny_with_meta, tmp_path, TritonOptions(openvino=True, bf16=bf16))
    assert [m.config.name for m in result.models] == ["alexnet", "alexnet_openvino"]
    config = parse_config(tmp_path / "alexnet_openvino")
    assert (config.backend, config.platform, config.default_model_filename) == ("openvino", "", "model.onnx")
    assert config.instance_group[0].kind == enum("ModelInstanceGroup.Kind", "KIND_CPU")
    assert {k: v.string_value for k, v in config.parameters.items()} == {
        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", **({"HINT_BF16": "YES"} if bf16 else {})}
    assert_io_matches(config, tiny_with_meta, batched=True)
    assert config.max_batch_size == MAX_BATCH and config.output[0].label_filename == "labels.txt"
    assert filecmp.cmp(tiny_with_meta, tmp_path / "alexnet_openvino" / "1" / "model.onnx", shallow=False)


def test_cli_openvino_and_its_bf16_flag(tiny_with_meta, tmp_path):
    assert triton_cli(tiny_with_meta, "--repo", tmp_path, "--bf16").exit_code == 2  # bf16 of what? say --openvino
    result = triton_cli(tiny_with_meta, "--repo", tmp_path, "--openvino", "--no-plan")
    assert result.exit_code == 0 and "alexnet_openvino: openvino" in result.output


# ---- the TensorRT plan variant ----

def test_plan_adds_a_tensorrt_model(tiny_with_meta, tmp_path):
    plan = fake_plan(tmp_path / "cache", tiny_with_meta)
    result = write_triton_repository(tiny_with_meta, tmp_path / "repo", TritonOptions(kind="cpu"),
                                     PlanFile.from_path(plan))
    assert [m.config.name for m in result.models] == ["alexnet", "alexnet_trt"]
    folder = tmp_path / "repo" / "alexnet_trt"
    config = parse_config(folder)
    assert (config.name, config.platform, config.backend) == ("alexnet_trt", "tensorrt_plan", "tensorrt")
    assert config.max_batch_size == 128  # the engine profile's max, below the ONNX model's 256
    assert_io_matches(config, tiny_with_meta, batched=True)
    preferred = list(config.dynamic_batching.preferred_batch_size)
    assert 32 in preferred and max(preferred) == 128  # the profile's opt batch is preferred
    assert config.instance_group[0].kind == enum("ModelInstanceGroup.Kind", "KIND_GPU")  # whatever --kind says
    assert config.output[0].label_filename == "labels.txt"
    assert (folder / "labels.txt").read_text().splitlines() == CLASSES
    assert filecmp.cmp(plan, folder / "1" / "model.plan", shallow=False)
    text = (folder / "config.pbtxt").read_text()
    assert "TensorRT 11.4.0.106 on NVIDIA H100 80GB HBM3" in text and "only loads on the TensorRT version" in text


def test_plan_from_another_onnx_file_is_refused(tiny_with_meta, tiny_static, tmp_path):
    plan = fake_plan(tmp_path / "cache", tiny_static)
    with pytest.raises(TritonError, match="built from another ONNX file"):
        write_triton_repository(tiny_with_meta, tmp_path / "repo", plan=PlanFile.from_path(plan))
    assert not (tmp_path / "repo").exists() or not list((tmp_path / "repo").iterdir())


def test_find_engines_skips_other_models_and_damaged_plans(tiny_with_meta, tiny_static, tmp_path):
    good = fake_plan(tmp_path, tiny_with_meta)
    damaged = fake_plan(tmp_path, tiny_with_meta, BatchProfile(1, 8, 64))
    damaged.write_bytes(b"truncated")
    fake_plan(tmp_path, tiny_static)
    found = find_engines(tmp_path, sha256_file(tiny_with_meta))
    assert [path for path, _ in found] == [good]
    assert found[0][1]["profile"] == {"min": 1, "opt": 32, "max": 128}


# ---- CLI ----

def test_cli_help_documents_every_option():
    result = triton_cli("--help")
    assert result.exit_code == 0
    for option in ("--repo", "--name", "--instances", "--kind", "--max-batch", "--max-queue-delay", "--plan",
                   "--engine-cache", "--no-plan", "--openvino", "--bf16", "--overwrite"):
        assert option in result.output
    export_help = CliRunner().invoke(cli.main, ["export", "--help"]).output
    assert "--triton-repo" in export_help and "--triton-name" in export_help


def test_cli_finds_the_cached_engine_and_prints_the_layout(tiny_with_meta, tmp_path):
    plan = fake_plan(tmp_path / "cache", tiny_with_meta)
    result = triton_cli(tiny_with_meta, "--repo", tmp_path / "repo", "--engine-cache", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert "alexnet: onnxruntime_onnx, max_batch_size 256" in result.output
    assert "alexnet_trt: tensorrt_plan, max_batch_size 128" in result.output
    assert str(tmp_path / "repo" / "alexnet_trt" / "1" / "model.plan") in result.output
    assert filecmp.cmp(plan, tmp_path / "repo" / "alexnet_trt" / "1" / "model.plan", shallow=False)
    skipped = triton_cli(tiny_with_meta, "--repo", tmp_path / "r2", "--engine-cache", tmp_path / "cache", "--no-plan")
    assert skipped.exit_code == 0 and sorted(p.name for p in (tmp_path / "r2").iterdir()) == ["alexnet"]


def test_cli_plan_option_and_failures(tiny_with_meta, tmp_path):
    plan = fake_plan(tmp_path / "cache", tiny_with_meta)
    shutil.copy(plan, tmp_path / "loose.plan")  # no manifest beside it: the ONNX model's batch limit is assumed
    ok = triton_cli(tiny_with_meta, "--repo", tmp_path / "repo", "--plan", tmp_path / "loose.plan", "--name", "m")
    assert ok.exit_code == 0, ok.output
    assert parse_config(tmp_path / "repo" / "m_trt").max_batch_size == MAX_BATCH
    again = triton_cli(tiny_with_meta, "--repo", tmp_path / "repo", "--name", "m", "--no-plan")
    assert again.exit_code == 1 and again.output.startswith("Error: ") and "--overwrite" in again.output
    both = triton_cli(tiny_with_meta, "--repo", tmp_path / "repo", "--plan", plan, "--no-plan")
    assert both.exit_code == 2 and "not both" in both.output
    assert triton_cli(tiny_with_meta, "--repo", tmp_path / "x", "--kind", "tpu").exit_code == 2


def test_export_precheck_refuses_an_occupied_model_folder_before_exporting(checkpoint, tmp_path):
    (tmp_path / "repo" / "alexnet_fp16").mkdir(parents=True)
    result = CliRunner().invoke(cli.main, ["export", str(checkpoint), "-o", str(tmp_path / "m.onnx"), "--precision",
                                           "fp16", "--triton-repo", str(tmp_path / "repo")])
    assert result.exit_code == 1 and "alexnet_fp16 already exists" in result.output
    assert not (tmp_path / "m.onnx").exists()  # refused before the export ran


@pytest.mark.slow
def test_export_with_triton_repo(checkpoint, tmp_path):
    out, repo = tmp_path / "model.onnx", tmp_path / "repo"
    result = CliRunner().invoke(cli.main, ["-q", "export", str(checkpoint), "-o", str(out), "--parity-images", "0",
                                           "--triton-repo", str(repo), "--triton-name", "shapes"])
    assert result.exit_code == 0, result.output
    config = parse_config(repo / "shapes")
    assert config.max_batch_size == MAX_BATCH and list(config.input[0].dims) == [3, 227, 227]
    assert_io_matches(config, out, batched=True)
    classes = json.loads((Path(checkpoint) / "model.json").read_text())["class_names"]
    assert (repo / "shapes" / "labels.txt").read_text().splitlines() == classes
    assert list(config.output[0].dims) == [len(classes)]
    assert filecmp.cmp(out, repo / "shapes" / "1" / "model.onnx", shallow=False)


# ---- the configuration measured by `cli.py capacity` ----

def capacity_report(path: Path, model: Path, rows: list[dict]) -> Path:
    """A capacity.json as `cli.py capacity` writes it (the fields the Triton writer reads), for ``model``."""
    from deploy.formats import CAPACITY_FORMAT, CAPACITY_FORMAT_VERSION

    base = {"precision": "fp32", "sha256": sha256_file(model), "server_max_qps": 300.0, "server_p99_ms": 41.5,
            "valid": True, "loadgen_summary": "trials/x/05-server/mlperf_log_summary.txt"}
    path.write_text(json.dumps({"format": CAPACITY_FORMAT, "format_version": CAPACITY_FORMAT_VERSION,
                                "created": "2026-12-07T12:00:00+00:00", "slo_ms": 50.0,
                                "results": [{**base, **row} for row in rows]}))
    return path


def measured(runtime: str, max_batch: int, delay: int, executors: int, threads: int, mode: str = "instances"):
    return {"runtime": runtime, "config": {"max_batch": max_batch, "queue_delay_us": delay, "executors": executors,
                                           "threads": threads, "mode": mode, "preferred_batch_sizes": []}}


def test_capacity_sets_the_measured_batching_instances_and_threads(tiny_with_meta, tmp_path):
    report = capacity_report(tmp_path / "capacity.json", tiny_with_meta, [
        measured("onnxruntime", 4, 500, 2, 1), measured("openvino", 8, 0, 2, 1, "streams")])
    result = triton_cli(tiny_with_meta, "--repo", tmp_path / "repo", "--openvino", "--no-plan", "--capacity", report)
    assert result.exit_code == 0, result.output
    ort = parse_config(tmp_path / "repo" / "alexnet")
    assert ort.max_batch_size == 4 and list(ort.dynamic_batching.preferred_batch_size) == [4]
    assert ort.dynamic_batching.max_queue_delay_microseconds == 500
    assert ort.instance_group[0].count == 2 and ort.instance_group[0].kind == enum("ModelInstanceGroup.Kind",
                                                                                   "KIND_CPU")
    assert {k: v.string_value for k, v in ort.parameters.items()} == {"intra_op_thread_count": "1",
                                                                      "inter_op_thread_count": "1"}
    ov = parse_config(tmp_path / "repo" / "alexnet_openvino")
    assert ov.max_batch_size == 8 and ov.instance_group[0].count == 1  # two streams inside one instance
    assert {k: v.string_value for k, v in ov.parameters.items()} == {
        "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "2", "INFERENCE_NUM_THREADS": "2"}
    text = (tmp_path / "repo" / "alexnet" / "config.pbtxt").read_text()
    assert "measured by alexnet-deploy capacity" in text and "300 QPS at p99 41.5 ms (SLO 50 ms)" in text
    assert "trials/x/05-server/mlperf_log_summary.txt" in text


def test_capacity_of_one_backend_leaves_the_other_at_its_defaults(tiny_with_meta, tmp_path):
    report = capacity_report(tmp_path / "capacity.json", tiny_with_meta, [measured("openvino", 2, 0, 2, 1)])
    result = triton_cli(tiny_with_meta, "--repo", tmp_path / "repo", "--openvino", "--no-plan", "--capacity", report)
    assert result.exit_code == 0 and "no capacity measurement of onnxruntime fp32" in result.output
    assert parse_config(tmp_path / "repo" / "alexnet").max_batch_size == MAX_BATCH
    ov = parse_config(tmp_path / "repo" / "alexnet_openvino")
    assert ov.instance_group[0].count == 2 and ov.parameters["NUM_STREAMS"].string_value == "1"


@pytest.mark.parametrize("case, message", [
    ("another-file", "holds no VALID Server answer for model.onnx"),
    ("not-a-report", "not a capacity report"),
    ("with-instances", "--capacity sets what --instances would"),
])
def test_capacity_misuse_is_a_usage_error(tiny_with_meta, tiny_static, tmp_path, case, message):
    if case == "not-a-report":
        report = tmp_path / "r.json"
        report.write_text(json.dumps({"format": "alexnet-deploy/bench-report", "format_version": 2}))
    else:
        report = capacity_report(tmp_path / "capacity.json", tiny_static if case == "another-file" else
                                 tiny_with_meta, [measured("onnxruntime", 4, 0, 1, 2)])
    extra = ["--instances", "3"] if case == "with-instances" else []
    result = triton_cli(tiny_with_meta, "--repo", tmp_path / "repo", "--no-plan", "--capacity", report, *extra)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "repo").exists()
