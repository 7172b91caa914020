"""The PyTorch side of scripts/gpu-check: what a user would run on the GPU instead of vlmprep.

    python3 benches/gpu_compare.py make-model --out DIR
        Random-weight SigLIP with so400m-patch14-384's shapes (vision and text: hidden 1152,
        27 layers, 16 heads, MLP 4304; 384 px images in 14 px patches), saved as a Hugging
        Face folder in bf16, with the tiny test tokenizer (the tokenizer does not change the
        image tower's compute).
    python3 benches/gpu_compare.py siglip --model DIR [--batch 64] [--iters 10]
        transformers SiglipModel.get_image_features in bf16 on cuda (eager, SDPA attention).
    python3 benches/gpu_compare.py decode --images DIR [--count 4096] [--batch 256]
        torchvision.io.decode_jpeg on cuda (nvJPEG) + antialiased bicubic resize to 384 +
        SigLIP normalization to bf16: the GPU decode + resize a PyTorch user would write.

    python3 benches/gpu_compare.py parity --model DIR --features-bin PATH [--batch 8]
        The model alone at full size: transformers' get_image_features in float32 (TF32 off)
        against `siglip_features MODEL PIXELS OUT cuda` (our CUDA forward, bf16 GEMMs) on the
        same random pixel values; prints the relative error per image (max |a-b| / max |b|).
    python3 benches/gpu_compare.py pool --images DIR --count 2048 --out FILE.tar
        A WebDataset shard of COUNT samples (the photos cycled, each with a .txt caption) for
        the end-to-end `vlmprep embed --device cuda` run.

Each prints `RESULT <name> <value> <unit>` lines, as examples/gpu_bench.rs does.
"""

import argparse
import json
import pathlib
import shutil
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "fixtures" / "siglip" / "tiny-a"


def result(name, value, unit):
    print(f"RESULT {name} {value:.1f} {unit}", flush=True)


def make_model(args):
    import torch
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(5)
    tower = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                 num_attention_heads=16)
    config = SiglipConfig(
        vision_config=dict(tower, image_size=384, patch_size=14),
        text_config=dict(tower, vocab_size=32000, max_position_embeddings=64),
    )
    model = SiglipModel(config).to(torch.bfloat16)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for name in ("spiece.model", "tokenizer_config.json"):
        shutil.copy(TINY / name, out / name)
    pre = json.loads((TINY / "preprocessor_config.json").read_text())
    pre["size"] = {"height": 384, "width": 384}
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    print(f"wrote {out}")


def siglip(args):
    import torch
    from transformers import SiglipModel

    model = SiglipModel.from_pretrained(args.model, dtype=torch.bfloat16,
                                        attn_implementation="sdpa").cuda().eval()
    side = model.config.vision_config.image_size
    g = torch.Generator(device="cuda").manual_seed(3)
    pixels = torch.rand(args.batch, 3, side, side, device="cuda", generator=g,
                        dtype=torch.bfloat16) * 2 - 1
    with torch.inference_mode():
        for _ in range(2):
            model.get_image_features(pixel_values=pixels)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(args.iters):
            out = model.get_image_features(pixel_values=pixels)
            out = out.pooler_output if hasattr(out, "pooler_output") else out
            out.float().cpu()
        seconds = time.perf_counter() - t
    result("torch_siglip_images_per_s", args.batch * args.iters / seconds, "images/s")


def decode(args):
    import torch
    import torchvision
    from torchvision.io import decode_jpeg

    files = sorted(p for p in pathlib.Path(args.images).iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg"))
    data = [torchvision.io.read_file(str(p)) for p in files]
    jpegs = [data[i % len(data)] for i in range(args.count)]
    mean = torch.tensor([0.5, 0.5, 0.5], device="cuda").view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.5, 0.5], device="cuda").view(1, 3, 1, 1)

    def one_pass():
        n = 0
        for i in range(0, len(jpegs), args.batch):
            images = decode_jpeg(jpegs[i:i + args.batch], device="cuda")
            batch = torch.stack([
                torch.nn.functional.interpolate(im.unsqueeze(0).float(), size=(384, 384),
                                                mode="bicubic", antialias=True)[0]
                for im in images
            ])
            out = ((batch.clamp(0, 255).round() / 255 - mean) / std).to(torch.bfloat16)
            n += out.shape[0]
        torch.cuda.synchronize()
        return n

    one_pass()
    t = time.perf_counter()
    n = one_pass()
    result("torch_decode_resize_fixed384_bf16", n / (time.perf_counter() - t), "images/s")


def parity(args):
    import subprocess
    import tempfile

    import numpy as np
    import torch
    from transformers import SiglipModel

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = SiglipModel.from_pretrained(args.model, dtype=torch.float32).cuda().eval()
    side = model.config.vision_config.image_size
    g = torch.Generator().manual_seed(9)
    pixels = torch.rand(args.batch, 3, side, side, generator=g) * 2 - 1
    with torch.inference_mode():
        out = model.get_image_features(pixel_values=pixels.cuda())
        out = out.pooler_output if hasattr(out, "pooler_output") else out
        ref = out.float().cpu().numpy()
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/px.npy", pixels.numpy())
        subprocess.run([args.features_bin, args.model, f"{tmp}/px.npy", f"{tmp}/ours.npy",
                        "cuda"], check=True)
        ours = np.load(f"{tmp}/ours.npy")
    err = np.abs(ours - ref).max(1) / np.abs(ref).max(1)
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    print("relative error per image", np.array2string(err, precision=5))
    result("siglip_cuda_vs_torch_f32_max_rel_err_x1e4", float(err.max()) * 1e4, "1e-4")
    result("siglip_cuda_vs_torch_f32_min_cosine_x1e6", float(cos.min()) * 1e6, "1e-6")


def pool(args):
    import io
    import random
    import tarfile

    files = sorted(p for p in pathlib.Path(args.images).iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg"))
    r = random.Random(1)
    words = "a photo of the sky over a lake with trees and mountains at sunset".split()
    with tarfile.open(args.out, "w") as tar:
        for i in range(args.count):
            for ext, data in ((".jpg", files[i % len(files)].read_bytes()),
                              (".txt", " ".join(r.choice(words) for _ in range(12)).encode())):
                info = tarfile.TarInfo(f"{i:08d}{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    print(f"wrote {args.out}")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-model")
    m.add_argument("--out", required=True)
    s = sub.add_parser("siglip")
    s.add_argument("--model", required=True)
    s.add_argument("--batch", type=int, default=64)
    s.add_argument("--iters", type=int, default=10)
    d = sub.add_parser("decode")
    d.add_argument("--images", required=True)
    d.add_argument("--count", type=int, default=4096)
    d.add_argument("--batch", type=int, default=256)
    q = sub.add_parser("parity")
    q.add_argument("--model", required=True)
    q.add_argument("--features-bin", required=True)
    q.add_argument("--batch", type=int, default=8)
    o = sub.add_parser("pool")
    o.add_argument("--images", required=True)
    o.add_argument("--count", type=int, default=2048)
    o.add_argument("--out", required=True)
    args = p.parse_args()
    commands = {"make-model": make_model, "siglip": siglip, "decode": decode, "pool": pool,
                "parity": parity}
    commands[args.cmd](args)


if __name__ == "__main__":
    main()
