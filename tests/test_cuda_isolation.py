"""The CPU runtime never loads numba.cuda: the CUDA path is an optional extra (issue 8)."""

import subprocess
import sys


def test_cpu_interpreter_does_not_import_numba_cuda():
    code = (
        "import sys, numpy as np\n"
        "from onnx import TensorProto, helper\n"
        "from edgert.converter import convert\n"
        "from edgert.runtime import Interpreter\n"
        "g = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g',\n"
        "    [helper.make_tensor_value_info('x', TensorProto.FLOAT, [2])],\n"
        "    [helper.make_tensor_value_info('y', TensorProto.FLOAT, [2])])\n"
        "m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])\n"
        "out = Interpreter(convert(m)).run({'x': np.array([-1, 2], np.float32)})['y']\n"
        "assert out.tolist() == [0, 2], out\n"
        "print(sorted(m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda',"
        " 'cuda.', 'edgert.runtime.kernels.cuda', 'edgert.runtime.cuda'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
