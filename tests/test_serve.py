"""edgert serve: the Open Inference Protocol server, driven by real clients (tritonclient's HTTP
and gRPC clients, curl, a plain gRPC stub) against a server in a subprocess on loopback.

Skipped when the serve extra (or tritonclient) is not installed.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

for _mod in ("starlette", "uvicorn", "grpc", "prometheus_client", "tritonclient.http",
             "tritonclient.grpc"):
    pytest.importorskip(_mod)

import tritonclient.grpc as tgrpc  # noqa: E402
import tritonclient.http as thttp  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

import edgert  # noqa: E402
from edgert.runtime import Interpreter  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
X = np.load(MODELS / "digits_sample.npy")  # float32 [8, 1, 8, 8]
CURL = shutil.which("curl")


def _two_input_onnx(path: pathlib.Path) -> None:
    """a: FP32 [N, M], b: INT64 [N, M] -> sum = a + float(b) (FP32), sq = b * b (INT64)."""
    import onnx
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", "M"])
    b = helper.make_tensor_value_info("b", TensorProto.INT64, ["N", "M"])
    s = helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", "M"])
    q = helper.make_tensor_value_info("sq", TensorProto.INT64, ["N", "M"])
    nodes = [helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["a", "bf"], ["sum"]),
             helper.make_node("Mul", ["b", "b"], ["sq"])]
    g = helper.make_graph(nodes, "two_inputs", [a, b], [s, q])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


def _text_onnx(path: pathlib.Path) -> None:
    """s: BYTES [N] -> upper = s in upper case (BYTES), same = s == s (BOOL)."""
    import onnx
    from onnx import TensorProto, helper

    s = helper.make_tensor_value_info("s", TensorProto.STRING, ["N"])
    u = helper.make_tensor_value_info("upper", TensorProto.STRING, ["N"])
    e = helper.make_tensor_value_info("same", TensorProto.BOOL, ["N"])
    nodes = [helper.make_node("StringNormalizer", ["s"], ["upper"], case_change_action="UPPER"),
             helper.make_node("Equal", ["s", "s"], ["same"])]
    m = helper.make_model(helper.make_graph(nodes, "text", [s], [u, e]),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


def _start(args: list[str], tmp: pathlib.Path, timeout: float = 240.0):
    ready = tmp / f"ready-{time.monotonic_ns()}.json"
    log = open(tmp / f"server-{time.monotonic_ns()}.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "edgert.serve", *args, "--http-port", "auto",
                             "--grpc-port", "auto", "--ready-file", str(ready)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.seek(0)
            raise AssertionError(f"the server did not start:\n{log.read()}")
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    return proc, info, log


def _stop(proc, log) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.seek(0)
    text = log.read()
    log.close()
    return text


class Srv:
    def __init__(self, info, repo):
        self.http = f"127.0.0.1:{info['http_port']}"
        self.grpc = f"127.0.0.1:{info['grpc_port']}"
        self.url = f"http://{self.http}"
        self.repo = repo

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def infer_json(self, model: str, obj, version: str = "") -> tuple[int, dict]:
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        status, _, data = self.request("POST", path, body,
                                       {"Content-Type": "application/json"})
        return status, json.loads(data)

    def metrics(self) -> str:
        return self.request("GET", "/metrics")[2].decode()


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    out = {}
    for name, src in (("cnn1", "digits_cnn.onnx"), ("cnn2", "digits_edgert_cnn.onnx"),
                      ("mlp", "digits_edgert_mlp.onnx")):
        p = d / f"{name}.edgert"
        edgert.convert(str(MODELS / src), str(p))
        out[name] = p
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory, refs):
    tmp = tmp_path_factory.mktemp("serve")
    repo = tmp / "repo"
    for v, key in (("1", "cnn1"), ("2", "cnn2")):
        (repo / "cnn" / v).mkdir(parents=True)
        shutil.copy(refs[key], repo / "cnn" / v / "model.edgert")
    # A long batching window, so that concurrent requests certainly meet in one batch.
    (repo / "cnn" / "config.json").write_text(json.dumps(
        {"max_batch_size": 16, "max_queue_delay_ms": 40, "instances": 1}))
    (repo / "twoin" / "1").mkdir(parents=True)
    _two_input_onnx(repo / "twoin" / "1" / "model.onnx")  # converted when loaded
    (repo / "twoin" / "config.json").write_text(json.dumps(
        {"max_batch_size": 8, "max_queue_delay_ms": 40, "instances": 1}))
    (repo / "text" / "1").mkdir(parents=True)
    _text_onnx(repo / "text" / "1" / "model.onnx")
    for name, key in (("mlp", "mlp"), ("swap", "cnn1")):
        (repo / name / "1").mkdir(parents=True)
        shutil.copy(refs[key], repo / name / "1" / "model.edgert")
    proc, info, log = _start([str(repo), "--poll-s", "0.2", "--max-body-mb", "1",
                              "--log-level", "debug", "--log-format", "json"], tmp)
    yield Srv(info, repo)
    text = _stop(proc, log)
    assert proc.returncode == 0, text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    infer = [x for x in lines if x.get("message") == "infer"]  # --log-level debug: one a request
    assert infer and {"model", "version", "status", "total_ms", "compute_ms"} <= set(infer[0])


def _ref(path, feeds):
    return Interpreter(str(path)).run(feeds)


# ----- REST --------------------------------------------------------------------------------------
def test_health_and_metadata(server):
    assert server.request("GET", "/v2/health/live")[0] == 200
    assert server.request("GET", "/v2/health/ready")[0] == 200
    status, _, body = server.request("GET", "/v2")
    meta = json.loads(body)
    assert status == 200 and meta["name"] == "edgert" and "binary_tensor_data" in meta[
        "extensions"]
    status, _, body = server.request("GET", "/v2/models/cnn")
    md = json.loads(body)
    assert md["versions"] == ["1", "2"] and md["platform"] == "edgert"
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert md["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    md = json.loads(server.request("GET", "/v2/models/twoin/versions/1")[2])
    assert [(t["name"], t["datatype"]) for t in md["inputs"]] == [("a", "FP32"), ("b", "INT64")]
    assert server.request("GET", "/v2/models/cnn/versions/1/ready")[0] == 200
    assert server.request("GET", "/v2/models/cnn/versions/7/ready")[0] == 404
    assert server.request("GET", "/v2/models/nope/ready")[0] == 404


def test_tritonclient_http_matches_interpreter(server, refs):
    c = thttp.InferenceServerClient(server.http)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("cnn")
    for version, key in (("1", "cnn1"), ("2", "cnn2"), ("", "cnn2")):
        want = _ref(refs[key], {"input": X})["probabilities"]
        for binary in (True, False):
            i = thttp.InferInput("input", list(X.shape), "FP32")
            i.set_data_from_numpy(X, binary_data=binary)
            o = thttp.InferRequestedOutput("probabilities", binary_data=binary)
            r = c.infer("cnn", [i], model_version=version, outputs=[o], request_id="r7")
            got = r.as_numpy("probabilities")
            assert got.dtype == np.float32 and got.shape == (8, 10)
            np.testing.assert_array_equal(got, want)  # JSON floats round-trip exactly
            assert r.get_response()["id"] == "r7"
            assert r.get_response()["model_version"] == (version or "2")
    # the two-input model (an .onnx file, converted by the server when it loaded it)
    a = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    b = np.array([[1, -2, 3], [4, 5, -6]], np.int64)
    ia = thttp.InferInput("a", [2, 3], "FP32")
    ia.set_data_from_numpy(a)
    ib = thttp.InferInput("b", [2, 3], "INT64")
    ib.set_data_from_numpy(b, binary_data=False)
    r = c.infer("twoin", [ia, ib], outputs=[thttp.InferRequestedOutput("sq")])
    np.testing.assert_array_equal(r.as_numpy("sq"), b * b)
    assert r.as_numpy("sum") is None  # only what was asked for
    r = c.infer("twoin", [ia, ib], request_compression_algorithm="gzip")  # a gzip body
    np.testing.assert_array_equal(r.as_numpy("sum"), a + b.astype(np.float32))


def test_tritonclient_grpc_matches_interpreter(server, refs):
    c = tgrpc.InferenceServerClient(server.grpc)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("cnn", "1")
    md = c.get_model_metadata("cnn")
    assert list(md.versions) == ["1", "2"] and list(md.inputs[0].shape) == [-1, 1, 8, 8]
    assert "model_repository" in c.get_server_metadata().extensions
    for version, key in (("1", "cnn1"), ("", "cnn2")):
        i = tgrpc.InferInput("input", list(X.shape), "FP32")
        i.set_data_from_numpy(X)  # raw_input_contents
        r = c.infer("cnn", [i], model_version=version, request_id="g1")
        np.testing.assert_array_equal(r.as_numpy("probabilities"),
                                      _ref(refs[key], {"input": X})["probabilities"])
        assert r.get_response().id == "g1"
    a = np.ones((1, 3), np.float32)
    b = np.array([[7, 8, 9]], np.int64)
    ia, ib = tgrpc.InferInput("a", [1, 3], "FP32"), tgrpc.InferInput("b", [1, 3], "INT64")
    ia.set_data_from_numpy(a)
    ib.set_data_from_numpy(b)
    r = c.infer("twoin", [ia, ib], outputs=[tgrpc.InferRequestedOutput("sum")])
    np.testing.assert_array_equal(r.as_numpy("sum"), [[8, 9, 10]])
    assert r.as_numpy("sq") is None


def test_bytes_and_bool_tensors(server):
    words = np.array(["abc", "Grün", ""], dtype=object)
    c = thttp.InferenceServerClient(server.http)
    for binary in (True, False):
        i = thttp.InferInput("s", [3], "BYTES")
        i.set_data_from_numpy(words, binary_data=binary)
        outs = [thttp.InferRequestedOutput(n, binary_data=binary) for n in ("upper", "same")]
        r = c.infer("text", [i], outputs=outs)
        up = [v.decode() if isinstance(v, bytes) else v for v in r.as_numpy("upper")]
        assert up == ["ABC", "GRÜN", ""]
        assert r.as_numpy("same").tolist() == [True, True, True]
    g = tgrpc.InferenceServerClient(server.grpc)
    i = tgrpc.InferInput("s", [3], "BYTES")
    i.set_data_from_numpy(np.array([w.encode() for w in words], dtype=object))
    r = g.infer("text", [i])
    assert [v.decode() for v in r.as_numpy("upper")][0] == "ABC"
    assert r.as_numpy("same").dtype == np.bool_
    status, r = server.infer_json("text", {"inputs": [{"name": "s", "datatype": "BYTES",
                                                       "shape": [2], "data": ["x", "y"]}]})
    assert status == 200 and r["outputs"][0]["data"] == ["X", "Y"]
    assert r["outputs"][1] == {"name": "same", "datatype": "BOOL", "shape": [2],
                               "data": [True, True]}


def test_grpc_typed_contents(server, refs):
    """A KServe-style client sends InferTensorContents instead of raw bytes."""
    import grpc

    from edgert.serve.proto import grpc_predict_v2_pb2 as pb
    from edgert.serve.proto import grpc_predict_v2_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server.grpc) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        assert stub.ServerLive(pb.ServerLiveRequest()).live
        req = pb.ModelInferRequest(model_name="cnn", model_version="1", id="typed")
        t = req.inputs.add(name="input", datatype="FP32", shape=[2, 1, 8, 8])
        t.contents.fp32_contents.extend(X[:2].ravel().tolist())
        r = stub.ModelInfer(req)
        assert r.id == "typed" and r.outputs[0].name == "probabilities"
        got = np.frombuffer(r.raw_output_contents[0], np.float32).reshape(r.outputs[0].shape)
        np.testing.assert_array_equal(got, _ref(refs["cnn1"], {"input": X[:2]})["probabilities"])
        req = pb.ModelInferRequest(model_name="twoin")
        ta = req.inputs.add(name="a", datatype="FP32", shape=[1, 3])
        ta.contents.fp32_contents.extend([1, 2, 3])
        tb = req.inputs.add(name="b", datatype="INT64", shape=[1, 3])
        tb.contents.int64_contents.extend([1, 2, 3])
        r = stub.ModelInfer(req)
        names = [o.name for o in r.outputs]
        sq = np.frombuffer(r.raw_output_contents[names.index("sq")], np.int64)
        assert sq.tolist() == [1, 4, 9]
        with pytest.raises(grpc.RpcError) as e:  # int data given for an FP32 tensor type
            bad = pb.ModelInferRequest(model_name="twoin")
            ta = bad.inputs.add(name="a", datatype="INT64", shape=[1, 3])
            ta.contents.int64_contents.extend([1, 2, 3])
            tb = bad.inputs.add(name="b", datatype="INT64", shape=[1, 3])
            tb.contents.int64_contents.extend([1, 2, 3])
            stub.ModelInfer(bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_json_nested_lists_binary_outputs_and_id(server, refs):
    want = _ref(refs["cnn2"], {"input": X[:2]})["probabilities"]
    status, r = server.infer_json("cnn", {
        "id": "nested", "parameters": {"custom": 1},
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 1, 8, 8],
                    "data": X[:2].tolist()}]})  # nested lists
    assert status == 200 and r["id"] == "nested" and r["model_name"] == "cnn"
    out = r["outputs"][0]
    assert out["shape"] == [2, 10] and out["datatype"] == "FP32"
    np.testing.assert_array_equal(np.array(out["data"], np.float32).reshape(2, 10), want)
    # binary input and binary output, by hand
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 1, 8, 8],
                                     "parameters": {"binary_data_size": X[:2].nbytes}}],
                         "outputs": [{"name": "probabilities",
                                      "parameters": {"binary_data": True}}]}).encode()
    status, headers, body = server.request(
        "POST", "/v2/models/cnn/infer", header + X[:2].tobytes(),
        {"Inference-Header-Content-Length": str(len(header)),
         "Content-Type": "application/octet-stream"})
    assert status == 200
    n = int({k.lower(): v for k, v in headers.items()}["inference-header-content-length"])
    meta = json.loads(body[:n])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 80
    np.testing.assert_array_equal(np.frombuffer(body[n:], np.float32).reshape(2, 10), want)


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl(server, tmp_path):
    def curl(*args):
        r = subprocess.run([CURL, "-s", "-w", "\n%{http_code}", *args], capture_output=True,
                           timeout=30)
        body, _, code = r.stdout.rpartition(b"\n")
        return int(code), body

    assert curl(server.url + "/v2/health/ready")[0] == 200
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8],
                        "data": X[0].ravel().tolist()}]}
    code, out = curl("-X", "POST", "-H", "Content-Type: application/json", "-d",
                     json.dumps(body), server.url + "/v2/models/cnn/versions/2/infer")
    assert code == 200
    assert int(np.argmax(json.loads(out)["outputs"][0]["data"])) == 2  # the first digit: 2
    f = tmp_path / "req.bin"
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8],
                                     "parameters": {"binary_data_size": 256}}]}).encode()
    f.write_bytes(header + X[0].tobytes())
    code, out = curl("-X", "POST", "-H", f"Inference-Header-Content-Length: {len(header)}",
                     "--data-binary", f"@{f}", server.url + "/v2/models/cnn/infer")
    assert code == 200 and json.loads(out)["outputs"][0]["shape"] == [1, 10]
    code, out = curl("-X", "POST", "-d", "{not json", server.url + "/v2/models/cnn/infer")
    assert code == 400 and "error" in json.loads(out)


def _good(server):
    status, r = server.infer_json("cnn", {"inputs": [
        {"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8],
         "data": X[0].ravel().tolist()}]})
    assert status == 200, r


def test_errors_are_400_or_404_and_the_server_keeps_serving(server):
    x = X[0].ravel().tolist()

    def inp(**kw):
        d = {"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": x}
        d.update(kw)
        return {"inputs": [d]}

    cases = [
        (inp(shape=[1, 1, 8, 7]), 400, "shape"),  # wrong shape (count does not match either)
        (inp(shape=[1, 64], data=x), 400, "expects"),  # right count, wrong shape
        (inp(datatype="FP64"), 400, "datatype"),  # wrong dtype
        (inp(datatype="FP99"), 400, "datatype"),  # unknown dtype
        (inp(name="image"), 400, "no input"),  # wrong name
        (inp(data=x[:10]), 400, "needs 64"),  # too little data
        (inp(data=["a"] * 64), 400, "numbers"),  # strings in FP32
        ({"inputs": []}, 400, "inputs"),
        ({"inputs": [{"name": "input"}]}, 400, "shape"),
        ({"inputs": inp()["inputs"], "outputs": [{"name": "nope"}]}, 400, "no output"),
        (b"{malformed", 400, "malformed JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (inp(parameters={"binary_data_size": 256}, data=None), 400, "binary"),
    ]
    for body, status, words in cases:
        got, r = server.infer_json("cnn", body)
        assert got == status and words in r["error"], (body, got, r)
        _good(server)
    # unknown model / version: 404
    assert server.infer_json("nope", inp())[0] == 404
    assert server.infer_json("cnn", inp(), version="9")[0] == 404
    # binary: the header length past the body, leftover bytes
    for hdr, tail in (("9999", b""), ("2", b"")):
        status, _, data = server.request("POST", "/v2/models/cnn/infer",
                                         json.dumps(inp()).encode() + tail,
                                         {"Inference-Header-Content-Length": hdr})
        assert status == 400 and b"error" in data
    header = json.dumps(inp(parameters={"binary_data_size": 256}, data=None)).encode()
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8],
                                     "parameters": {"binary_data_size": 256}}]}).encode()
    for extra in (X[0].tobytes()[:100], X[0].tobytes() + b"xx"):
        status, _, data = server.request("POST", "/v2/models/cnn/infer", header + extra,
                                         {"Inference-Header-Content-Length": str(len(header))})
        assert status == 400, data
    # oversized body (the server runs with --max-body-mb 1)
    big = json.dumps(inp(shape=[5000, 1, 8, 8], data=[0.5] * (5000 * 64))).encode()
    assert len(big) > 1 << 20
    status, r = server.infer_json("cnn", big)
    assert status == 400 and "limit" in r["error"]
    # an unknown route is a JSON 404 too
    status, _, data = server.request("GET", "/v2/nothing/here")
    assert status == 404 and "error" in json.loads(data)
    # tritonclient sees the errors as exceptions; gRPC as INVALID_ARGUMENT / NOT_FOUND
    c = tgrpc.InferenceServerClient(server.grpc)
    i = tgrpc.InferInput("input", [1, 64], "FP32")
    i.set_data_from_numpy(np.zeros((1, 64), np.float32))
    with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT"):
        c.infer("cnn", [i])
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        c.infer("nope", [i])
    _good(server)
    m = server.metrics()
    assert re.search(r'edgert_request_errors_total\{protocol="http",status="400"\} (\d+)', m)
    assert re.search(r'edgert_inference_requests_total\{model="cnn",outcome="failure",'
                     r'version="2"\} [1-9]', m)


def _hist(metrics: str, name: str, labels: str) -> dict[str, float]:
    out = {}
    for m in re.finditer(rf'{name}_bucket\{{le="([^"]+)",{labels}\}} (\S+)', metrics):
        out[m.group(1)] = float(m.group(2))
    for m in re.finditer(rf'{name}_bucket\{{{labels},le="([^"]+)"\}} (\S+)', metrics):
        out[m.group(1)] = float(m.group(2))
    return out


def test_dynamic_batching_merges_requests(server, refs):
    labels = 'model="cnn",version="1"'
    before = _hist(server.metrics(), "edgert_batch_requests", labels)
    want = _ref(refs["cnn1"], {"input": X})["probabilities"]

    def one(k):
        c = thttp.InferenceServerClient(server.http)
        x = X[k % 8:k % 8 + 1]
        i = thttp.InferInput("input", [1, 1, 8, 8], "FP32")
        i.set_data_from_numpy(x)
        return k, c.infer("cnn", [i], model_version="1").as_numpy("probabilities")

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        results = list(ex.map(one, range(32)))
    for k, got in results:  # each request gets its own rows back
        np.testing.assert_allclose(got, want[k % 8:k % 8 + 1], rtol=1e-5, atol=1e-6)
    after = _hist(server.metrics(), "edgert_batch_requests", labels)
    executions = after["+Inf"] - before.get("+Inf", 0)
    alone = after["1.0"] - before.get("1.0", 0)
    assert executions < 32 and alone < executions, (before, after)  # some merged


def test_batching_keeps_requests_with_other_dims_apart(server):
    """The two-input model batches over N; requests with another M cannot join a batch."""
    labels = 'model="twoin",version="1"'
    before = _hist(server.metrics(), "edgert_batch_requests", labels)

    def one(k):
        m = 2 + k % 3  # three shapes: [1, 2], [2, 3], [1, 4]
        rows = 1 + k % 2
        a = np.full((rows, m), k, np.float32)
        b = np.arange(rows * m, dtype=np.int64).reshape(rows, m) + k
        c = tgrpc.InferenceServerClient(server.grpc)
        ia, ib = tgrpc.InferInput("a", [rows, m], "FP32"), tgrpc.InferInput("b", [rows, m],
                                                                             "INT64")
        ia.set_data_from_numpy(a)
        ib.set_data_from_numpy(b)
        r = c.infer("twoin", [ia, ib])
        np.testing.assert_array_equal(r.as_numpy("sum"), a + b)
        np.testing.assert_array_equal(r.as_numpy("sq"), b * b)

    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        list(ex.map(one, range(24)))
    after = _hist(server.metrics(), "edgert_batch_requests", labels)
    executions = after["+Inf"] - before.get("+Inf", 0)
    assert 3 <= executions < 24, (before, after)  # merged, but at least one run per shape


def test_repository_index_load_unload(server, refs):
    status, _, body = server.request("POST", "/v2/repository/index")
    index = json.loads(body)
    assert status == 200
    assert {(m["name"], m.get("version"), m["state"]) for m in index} >= {
        ("cnn", "1", "READY"), ("cnn", "2", "READY"), ("twoin", "1", "READY"),
        ("mlp", "1", "READY")}
    inp = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8],
                       "data": X[0].ravel().tolist()}]}
    assert server.infer_json("mlp", inp)[0] == 200
    assert server.request("POST", "/v2/repository/models/mlp/unload")[0] == 200
    status, r = server.infer_json("mlp", inp)
    assert status == 404 and "not loaded" in r["error"]
    assert server.request("GET", "/v2/models/mlp/ready")[0] == 400
    index = json.loads(server.request("POST", "/v2/repository/index", b"{}")[2])
    assert {"name": "mlp", "state": "UNAVAILABLE", "reason": "unloaded"} in index
    assert server.request("GET", "/v2/health/ready")[0] == 200  # unloaded on purpose
    # the poller leaves an unloaded model alone
    time.sleep(0.5)
    assert server.infer_json("mlp", inp)[0] == 404
    c = tgrpc.InferenceServerClient(server.grpc)
    c.load_model("mlp")  # gRPC RepositoryModelLoad
    status, r = server.infer_json("mlp", inp)
    assert status == 200
    want = _ref(refs["mlp"], {"input": X[:1]})[r["outputs"][0]["name"]]
    np.testing.assert_allclose(r["outputs"][0]["data"], want.ravel(), rtol=1e-6)
    assert server.request("POST", "/v2/repository/models/nope/load")[0] == 404
    assert server.request("POST", "/v2/repository/models/nope/unload")[0] == 404


def test_reload_when_the_model_file_changes(server, refs):
    inp = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 1, 8, 8],
                       "data": X[:2].ravel().tolist()}]}
    old = _ref(refs["cnn1"], {"input": X[:2]})["probabilities"]
    new = _ref(refs["cnn2"], {"input": X[:2]})["probabilities"]
    status, r = server.infer_json("swap", inp)
    np.testing.assert_array_equal(np.array(r["outputs"][0]["data"], np.float32), old.ravel())
    target = server.repo / "swap" / "1" / "model.edgert"
    tmp = target.with_suffix(".tmp")
    shutil.copy(refs["cnn2"], tmp)
    os.replace(tmp, target)
    deadline = time.monotonic() + 15
    while True:  # requests keep being answered during the swap
        status, r = server.infer_json("swap", inp)
        assert status == 200, r
        got = np.array(r["outputs"][0]["data"], np.float32)
        if np.array_equal(got, new.ravel()):
            break
        np.testing.assert_array_equal(got, old.ravel())
        assert time.monotonic() < deadline, "the changed model was not reloaded"
        time.sleep(0.1)
    # a broken file: the loaded version stays, the failure shows in the index
    target.write_bytes(b"not a model")
    time.sleep(1.0)
    status, r = server.infer_json("swap", inp)
    assert status == 200
    index = json.loads(server.request("POST", "/v2/repository/index")[2])
    assert any(m["name"] == "swap" and m.get("reason") for m in index), index
    shutil.copy(refs["cnn1"], target)


def test_metrics_exposition(server):
    m = server.metrics()
    for name in ("edgert_inference_requests_total", "edgert_inference_queue_duration_seconds",
                 "edgert_inference_compute_duration_seconds",
                 "edgert_inference_request_duration_seconds", "edgert_batch_size",
                 "edgert_model_ready"):
        assert f"# TYPE {name.removesuffix('_total')}" in m, name
    assert re.search(r'edgert_inference_requests_total\{model="cnn",outcome="success",'
                     r'version="1"\} [1-9]', m)


# ----- a second server: one .onnx file, graceful shutdown ----------------------------------------
def test_single_onnx_file_and_graceful_shutdown(tmp_path):
    proc, info, log = _start([str(MODELS / "digits_cnn.onnx"), "--max-batch-size", "8",
                              "--batch-delay-ms", "800", "--instances", "1"], tmp_path)
    srv = Srv(info, None)
    try:
        md = json.loads(srv.request("GET", "/v2/models/digits_cnn")[2])
        assert md["versions"] == ["1"]
        inp = {"id": "last", "inputs": [{"name": "input", "datatype": "FP32",
                                         "shape": [1, 1, 8, 8], "data": X[0].ravel().tolist()}]}
        result = {}

        def grpc_infer():
            i = tgrpc.InferInput("input", [2, 1, 8, 8], "FP32")
            i.set_data_from_numpy(X[:2])
            r = tgrpc.InferenceServerClient(srv.grpc).infer("digits_cnn", [i])
            result["g"] = r.as_numpy("probabilities").shape

        threads = [threading.Thread(target=lambda: result.update(
            r=srv.infer_json("digits_cnn", inp))), threading.Thread(target=grpc_infer)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # the requests now wait in their batching window
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert result["r"][0] == 200 and result["r"][1]["id"] == "last"
        assert result["g"] == (2, 10)
        proc.wait(30)
        assert proc.returncode == 0
    finally:
        text = _stop(proc, log)
    assert "shutting down" in text


# ----- in-process pieces -------------------------------------------------------------------------
def test_generated_grpc_code_is_current():
    pytest.importorskip("grpc_tools")
    r = subprocess.run([sys.executable, "-m", "edgert.serve.proto.generate", "--check"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_cli_parser_needs_no_serve_extra():
    code = ("import argparse, sys; from edgert.serve.cli import add_parser; "
            "p = argparse.ArgumentParser(); add_parser(p.add_subparsers()); "
            "a = p.parse_args(['serve', 'm.edgert', '--grpc-port', '0', '--max-batch-size', "
            "'8']); assert a.grpc_port == 0 and a.max_batch_size == 8; "
            "assert not {'starlette', 'uvicorn', 'grpc'} & set(sys.modules), sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_model_config_is_checked():
    from edgert.serve.model import ModelConfig

    base = ModelConfig()
    cfg = ModelConfig.from_json({"max_batch_size": 8, "timeout_s": 2, "versions": [1, 3]}, base,
                                "c")
    assert cfg.max_batch_size == 8 and cfg.versions == [1, 3] and cfg.threads == 1
    for bad in ({"max_batch_size": -1}, {"instances": 0}, {"threads": "2"},
                {"versions": "newest"}, {"max_queue_delay_ms": 1e9}, {"warmup": 1},
                {"timeout_s": 0}, {"nope": 1}, []):
        with pytest.raises(ValueError):
            ModelConfig.from_json(bad, base, "c")


def test_protocol_tensor_codecs():
    from edgert.serve.protocol import (
        ProtocolError,
        array_from_json,
        array_from_raw,
        datatype_of,
        json_from_array,
        raw_from_array,
    )

    for dt, vals in (("BOOL", [True, False]), ("UINT8", [0, 255]), ("INT8", [-128, 127]),
                     ("UINT16", [0, 65535]), ("INT16", [-5, 5]), ("UINT32", [0, 2**32 - 1]),
                     ("INT32", [-1, 1]), ("UINT64", [0, 2**64 - 1]), ("INT64", [-2**63, 1]),
                     ("FP16", [0.5, -2.0]), ("FP32", [1.5, 2]), ("FP64", [1e300, -1]),
                     ("BYTES", ["héllo", ""])):
        a = array_from_json(vals, dt, (2,), "t")
        assert datatype_of(a.dtype) == dt
        b = array_from_raw(raw_from_array(a), dt, (2,), "t")
        assert b.tolist() == a.tolist() and json_from_array(b) == a.tolist()
    assert array_from_json([[1, 2], [3, 4]], "INT32", (2, 2), "t").tolist() == [[1, 2], [3, 4]]
    for bad in (([256], "UINT8", (1,)), ([1.5], "INT32", (1,)), ([1], "BOOL", (1,)),
                ([[1, 2], [3]], "INT32", (2, 2)), ([1], "BF99", (1,))):
        with pytest.raises(ProtocolError):
            array_from_json(*bad, "t")
    with pytest.raises(ProtocolError):
        array_from_raw(b"\x05\x00\x00\x00ab", "BYTES", (1,), "t")  # length past the end
    with pytest.raises(ProtocolError):
        array_from_raw(b"\x02", "BOOL", (1,), "t")


def test_layers():
    """serve imports the runtime (and the converter only inside a function, for .onnx files);
    the runtime never imports serve; importing the server pulls in no onnx."""
    import ast

    allowed = {"edgert", "edgert.runtime", "edgert.format", "edgert.errors", "edgert.serve"}
    for path in (ROOT / "edgert" / "serve").rglob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                mod = node.module
            elif isinstance(node, ast.Import):
                mod = node.names[0].name
            else:
                continue
            if not mod.startswith("edgert"):
                continue
            if mod == "edgert.converter":
                assert id(node) not in top_level, f"{path}: the converter at module level"
                continue
            assert any(mod == a or mod.startswith(a + ".") for a in allowed - {"edgert"}) or \
                mod == "edgert", f"{path}: imports {mod}"
    for path in (ROOT / "edgert" / "runtime").rglob("*.py"):
        assert "edgert.serve" not in path.read_text(), path
    code = ("import sys, edgert.serve.server, edgert.serve.rest, edgert.serve.grpc_server; "
            "assert 'onnx' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
