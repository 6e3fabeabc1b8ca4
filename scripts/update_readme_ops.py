"""Rewrite the README's supported-operator list from the CPU kernel registry.

    python scripts/update_readme_ops.py          # rewrite README.md in place
    python scripts/update_readme_ops.py --check  # exit 1 if the README is out of date (tests)
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BEGIN, END = "<!-- ops:begin -->", "<!-- ops:end -->"


def op_list_markdown() -> str:
    from edgert.runtime.kernels.cpu import registry

    ops = registry().op_types()
    default = [o for o in ops if "." not in o]
    ml = [o.rpartition(".")[2] for o in ops if o.startswith("ai.onnx.ml.")]
    other = [o for o in ops if "." in o and not o.startswith("ai.onnx.ml.")]
    lines = [
        f"The CPU runtime has kernels for {len(default)} ONNX operators (default domain, opsets 7"
        " and newer; older op forms are normalized on import):",
        "",
        ", ".join(f"`{o}`" for o in default),
    ]
    if ml:
        lines += ["", f"`ai.onnx.ml` operators (ML opsets 1-5, the domain of scikit-learn, "
                  f"LightGBM and XGBoost exports), {len(ml)}: " + ", ".join(f"`{o}`" for o in ml)]
    from edgert.importer import contrib, contrib_quant, upgrade

    reg = registry()
    rewritten = sorted(op for op in {*upgrade.RULES, *upgrade.EXPERIMENTAL}
                       if not reg.supports(op))
    lines += ["", "Older or alternative standard operators the importer rewrites into the ones "
              "above: " + ", ".join(f"`{o}`" for o in rewritten)]

    lowered = sorted({*contrib.RULES, *contrib_quant.RULES})
    lines += ["", "onnxruntime's own operators (domain `com.microsoft`, written by its "
              f"transformers optimizer and quantizers), {len(lowered)}, are lowered to the "
              "standard operators they stand for at import: "
              + ", ".join(f"`{o}`" for o in lowered)]
    if other:
        lines += ["", "edgert-domain (fused) operators: " + ", ".join(f"`{o}`" for o in other)]
    lines += [
        "",
        "An operator outside this list, or an unsupported attribute/dtype combination, is reported"
        " at conversion time (`UnsupportedOpError`, all offending nodes at once) or when the"
        " kernel is prepared (`KernelError`/`DTypeError`), never as a wrong answer.",
    ]
    return "\n".join(lines)


def render(readme: str) -> str:
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + "\n" + op_list_markdown() + "\n" + readme[end:]


def main() -> int:
    path = ROOT / "README.md"
    text = path.read_text()
    new = render(text)
    if "--check" in sys.argv:
        if new != text:
            print("README.md's operator list is out of date:"
                  " run python scripts/update_readme_ops.py")
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
