#!/usr/bin/env bash
# Fetches real photographs for benchmarks from Debian wallpaper packages (no hub, no dataset
# download): wallpaper-size JPEG/PNG under bench-data/wallpapers, and web-size (~0.3 MP) JPEG
# re-encodings of the same photos under bench-data/web (made with Pillow, quality 90).
# Usage: scripts/fetch-photos.sh [PYTHON]   (PYTHON must have Pillow; default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
mkdir -p bench-data/debs bench-data/root bench-data/wallpapers bench-data/web
(cd bench-data/debs && apt-get download gnome-backgrounds mate-backgrounds ukui-wallpapers)
for deb in bench-data/debs/*.deb; do dpkg -x "$deb" bench-data/root; done
find bench-data/root -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) -size +100k \
    -exec cp -n {} bench-data/wallpapers/ \;
"$python" - <<'PY'
import pathlib
from PIL import Image
src = sorted(pathlib.Path("bench-data/wallpapers").iterdir())
for p in src:
    im = Image.open(p).convert("RGB")
    # ~0.3 MP at the photo's own aspect ratio, like a typical web image in LAION/DataComp.
    scale = (300_000 / (im.width * im.height)) ** 0.5
    small = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BICUBIC)
    small.save(f"bench-data/web/{p.stem}.jpg", quality=90)
print(f"{len(src)} wallpapers, {len(src)} web-size copies")
PY
