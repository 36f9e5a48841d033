"""What the environment record says of the CPU: the instruction sets that decide the runtimes' kernels."""
import json

from core.environment import collect_environment, describe_environment
from core.host import MATRIX_FEATURES, cpu_features, matrix_features

ZEN5 = ["processor\t: 0\n", "model name\t: AMD EPYC\n",
        "flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 avx512_vbmi2\n", "processor\t: 1\n",
        "flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 avx512_vbmi2\n"]
XEON = ["model name\t: Intel(R) Xeon(R) Processor\n",
        "flags\t\t: fpu avx2 avx512f avx_vnni avx512_bf16 avx512_vnni amx_bf16 avx512_fp16 amx_tile amx_int8\n"]


def test_matrix_features_reads_the_flags_line_in_a_fixed_order():
    assert matrix_features(ZEN5) == ("avx2", "avx512f", "avx512_vnni", "avx512_bf16")
    assert matrix_features(XEON) == ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                                     "amx_int8", "amx_bf16")
    assert matrix_features(["model name\t: no flags here\n"]) == ()


def test_every_report_records_this_hosts_features():
    cpu = collect_environment()["cpu"]
    assert cpu["features"] == list(cpu_features())
    assert set(cpu["features"]) <= set(MATRIX_FEATURES)
    json.dumps(cpu)  # it goes into every bench/pipeline JSON as is


def test_the_one_line_description_names_amx():
    env = {"cpu": {"model": "Intel(R) Xeon(R) Processor", "usable_cores": 2, "features": list(matrix_features(XEON))},
           "gpu": {"available": False}, "libraries": {"torch": "2.14.1", "onnxruntime": "1.31.1"},
           "threads": {"torch_intra_op": 2}}
    assert "(2 cores, AMX-INT8, AMX-BF16)" in describe_environment(env)
    env["cpu"]["features"] = list(matrix_features(ZEN5))
    assert "(2 cores)" in describe_environment(env)
