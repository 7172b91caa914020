"""Base-size SigLIP run: vlmprep embed against transformers, same model, same images, same cores.

The model has google/siglip-base-patch16-224's shapes (vision and text: hidden 768, 12 layers,
12 heads, MLP 3072; 224 px images in 16 px patches; 64 text positions; 32000-row vocabulary)
with random weights made here (no hub access), saved as a Hugging Face folder in f32. The
tokenizer is a SentencePiece unigram model trained here on generated text: smaller than the real
one (it only uses the first ids of the 32000-row embedding), which changes nothing in the compute.

    /work/venv/bin/python benches/siglip_base.py make [--images 256]
    /work/venv/bin/python benches/siglip_base.py run --vlmprep target/release/vlmprep [--threads 2]

`make` writes target/siglip-base/{model,pool/base-000000.tar}: JPEG photos from
bench-data/web (scripts/fetch-photos.sh) re-encoded at random sizes, or generated images if that
folder is empty, each with a .txt caption.

`run` embeds the pool twice, in one run, on the same cores:
  * transformers (PyTorch eager, torch.set_num_threads(threads)): tarfile, Pillow decode +
    convert("RGB"), SiglipImageProcessorPil, SiglipTokenizer (padding to max_length), then
    get_image_features and get_text_features per batch — what a user would write;
  * `vlmprep embed --threads N --batch B` as a subprocess (wall time of the whole process,
    model load included),
then compares the embeddings per sample (max |a - b| / max |b| per row, and cosine): text
features from the same captions, and image features twice — end to end (each side decodes and
resizes: JPEG decoders and resize rounding differ by a level here and there) and from the same
pixel values (transformers' own, fed to `cargo build --release --example siglip_features`),
which isolates the model. The 1e-3 check applies to the same-input comparisons.
"""

import argparse
import io
import json
import os
import pathlib
import random
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "siglip-base"

WORDS = (
    "a an the photo picture image of on in with and at by cat cats dog dogs red blue green "
    "white black sofa snow sunset ocean sailing boat boats sky tree trees house street car man "
    "woman child playing sitting standing running mountain river city night day light people "
    "flower flowers field grass forest beach sand stone rock bridge road window door table chair"
).split()


def caption(r):
    return " ".join(r.choice(WORDS) for _ in range(r.randint(4, 40)))


def train_spm(path):
    import sentencepiece as spm

    r = random.Random(7)
    lines = [caption(r) for _ in range(20000)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=600, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>",
        unk_piece="<unk>", hard_vocab_limit=False, num_threads=2, minloglevel=2,
    )
    path.write_bytes(model.getvalue())


def make_model(folder):
    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel, SiglipTokenizer

    torch.manual_seed(5)
    config = SiglipConfig(
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, image_size=224, patch_size=16),
        text_config=dict(vocab_size=32000, hidden_size=768, intermediate_size=3072,
                         num_hidden_layers=12, num_attention_heads=12,
                         max_position_embeddings=64),
    )
    model = SiglipModel(config).eval()
    # As in the parity fixtures: move zeros/ones off their defaults so every tensor matters.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
        model.logit_scale.fill_(4.7)
        model.logit_bias.fill_(-10.0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    spm_path = folder / "_spiece_src.model"
    train_spm(spm_path)
    SiglipTokenizer(vocab_file=str(spm_path), model_max_length=64).save_pretrained(folder)
    spm_path.unlink()
    SiglipImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(folder)


def pool_images(n, r):
    from PIL import Image

    photos = sorted((ROOT / "bench-data" / "web").glob("*.jpg"))
    for i in range(n):
        w, h = r.randint(200, 900), r.randint(200, 900)
        if photos:
            im = Image.open(photos[i % len(photos)]).convert("RGB").resize((w, h), Image.BICUBIC)
        else:
            y, x = np.mgrid[0:h, 0:w].astype(np.float32)
            arr = np.stack([127 + 120 * np.sin(x / (5 + i % 17) + y / 13),
                            255 * x / w, 255 * y / h], axis=-1)
            arr += np.random.default_rng(i).normal(0, 12, arr.shape)
            im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        yield buf.getvalue()


def make(args):
    make_model(WORK / "model")
    (WORK / "pool").mkdir(parents=True, exist_ok=True)
    r = random.Random(11)
    with tarfile.open(WORK / "pool" / "base-000000.tar", "w") as tar:
        for i, jpg in enumerate(pool_images(args.images, r)):
            for ext, data in (("jpg", jpg), ("txt", caption(r).encode())):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    print(f"wrote {WORK / 'model'} and {args.images} samples in {WORK / 'pool'}")


def read_pool(path):
    """(key, jpeg bytes, caption) in tar order."""
    members = {}
    with tarfile.open(path) as tar:
        for m in tar:
            key, ext = m.name.split(".", 1)
            members.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return [(k, v["jpg"], v.get("txt", b"").decode()) for k, v in members.items()]


def run_transformers(model_dir, samples, batch, threads):
    import torch
    from PIL import Image
    from transformers import SiglipImageProcessorPil, SiglipModel, SiglipTokenizer

    torch.set_num_threads(threads)
    load_start = time.perf_counter()
    model = SiglipModel.from_pretrained(model_dir).eval()
    tok = SiglipTokenizer.from_pretrained(model_dir)
    proc = SiglipImageProcessorPil.from_pretrained(model_dir)
    load = time.perf_counter() - load_start
    image_out, text_out = [], []
    forward = 0.0
    first_pixels = None
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(samples), batch):
            chunk = samples[i:i + batch]
            images = [Image.open(io.BytesIO(jpg)).convert("RGB") for _, jpg, _ in chunk]
            pixels = proc(images=images, return_tensors="pt")["pixel_values"]
            if first_pixels is None:
                first_pixels = pixels.numpy()
            ids = tok([c for _, _, c in chunk], padding="max_length", truncation=True,
                      max_length=64, return_tensors="pt")["input_ids"]
            t = time.perf_counter()
            image_out.append(model.get_image_features(pixel_values=pixels).pooler_output.numpy())
            text_out.append(model.get_text_features(input_ids=ids).pooler_output.numpy())
            forward += time.perf_counter() - t
    seconds = time.perf_counter() - start
    return (np.concatenate(image_out), np.concatenate(text_out), seconds, forward, first_pixels,
            load)


def compare(name, ours, ref):
    rel = np.abs(ours - ref).max(axis=1) / np.abs(ref).max(axis=1)
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    print(f"{name}: max rel diff {rel.max():.2e} (median {np.median(rel):.2e}), "
          f"min cosine {cos.min():.6f}")
    return float(rel.max())


def run(args):
    model_dir = WORK / "model"
    shard = WORK / "pool" / "base-000000.tar"
    samples = read_pool(shard)
    n = len(samples)
    print(f"{n} samples, batch {args.batch}, {args.threads} threads, "
          f"load {os.getloadavg()[0]:.2f}")

    # Alternate the two sides, best of `repeat` each, so that load from anything else on the
    # machine hits both alike.
    best = None
    ref_img, ref_txt, py_seconds, py_forward, py_load = None, None, None, None, None
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeat):
            t = time.perf_counter()
            subprocess.run([args.vlmprep, "embed", "--model", str(model_dir), "--input", str(shard),
                            "--out", out, "--batch", str(args.batch), "--threads",
                            str(args.threads)], check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t
            if best is None or wall < best:
                best = wall
                summary = json.loads(pathlib.Path(out, "summary.json").read_text())
            img, txt, seconds, forward, pixels, load = run_transformers(
                model_dir, samples, args.batch, args.threads)
            if py_seconds is None or seconds < py_seconds:
                ref_img, ref_txt, py_seconds, py_forward, py_load = img, txt, seconds, forward, load
            print(f"  vlmprep {wall:.2f} s, transformers {seconds:.2f} s, "
                  f"load {os.getloadavg()[0]:.2f}")
        keys = pathlib.Path(out, "keys.txt").read_text().split()
        ours_img = np.load(pathlib.Path(out, "image_embeds.npy"))
        ours_txt = np.load(pathlib.Path(out, "text_embeds.npy"))

    # The forward alone: vlmprep's image tower on exactly the pixels transformers computed.
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/pixels.npy", pixels.astype(np.float32))
        subprocess.run([args.features, str(model_dir), f"{tmp}/pixels.npy", f"{tmp}/out.npy"],
                       check=True)
        forward_only = np.load(f"{tmp}/out.npy")
    forward_worst = compare(f"image features, same pixel values ({len(pixels)} images)",
                            forward_only, ref_img[:len(pixels)])

    order = {k: i for i, (k, _, _) in enumerate(samples)}
    rows = [order[k] for k in keys]
    if len(rows) != n:
        print(f"vlmprep embedded {len(rows)} of {n} samples")
    end_to_end = compare("image features, each side decoding and resizing", ours_img,
                         ref_img[rows])
    worst = max(forward_worst, compare("text features", ours_txt, ref_txt[rows]))
    ours = summary["seconds"]
    print(f"vlmprep embed, model loaded (summary.json seconds, best of {args.repeat}): "
          f"{ours:.2f} s, {n / ours:.2f} samples/s (decode + preprocess "
          f"{summary['decode_seconds']:.2f} s, image tower {summary['image_tower_seconds']:.2f} s, "
          f"text {summary['text_tower_seconds']:.2f} s); whole process {best:.2f} s")
    print(f"transformers, model loaded (decode + processor + tokenizer + forward, best of "
          f"{args.repeat}): {py_seconds:.2f} s, {n / py_seconds:.2f} samples/s (forward "
          f"{py_forward:.2f} s); with from_pretrained {py_seconds + py_load:.2f} s")
    print(f"ratio vlmprep / transformers: {py_seconds / ours:.3f}x model loaded, "
          f"{(py_seconds + py_load) / best:.3f}x including the load (vlmprep: whole process), "
          f"{py_forward / (summary['image_tower_seconds'] + summary['text_tower_seconds']):.3f}x "
          f"model compute only")
    if worst > 1e-3:
        print(f"FAIL: relative difference {worst:.2e} above 1e-3 on the same model inputs")
        sys.exit(1)
    print(f"end to end (decode + resize on each side): max relative difference {end_to_end:.2e}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--images", type=int, default=256)
    r = sub.add_parser("run")
    r.add_argument("--vlmprep", default=str(ROOT / "target" / "release" / "vlmprep"))
    r.add_argument("--features",
                   default=str(ROOT / "target" / "release" / "examples" / "siglip_features"))
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--batch", type=int, default=32)
    r.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()
    make(args) if args.cmd == "make" else run(args)


if __name__ == "__main__":
    main()
