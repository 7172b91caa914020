#!/usr/bin/env bash
# Reproduces the decode + tile table of BENCHMARKS.md: builds both binaries (pure Rust and
# --features turbojpeg), fetches the photos, and times vlmprep, Pillow and OpenCV side by side on
# one core, for the three tiling rules, on web-size and wallpaper-size photos.
# Usage: benches/run_comparison.sh [PYTHON]   (PYTHON with Pillow, numpy, opencv-python-headless)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
cargo build --release --quiet
cargo build --release --quiet --features turbojpeg --target-dir target/turbo
[ -d bench-data/wallpapers ] || scripts/fetch-photos.sh "$python"
# JPEG photos only, the same 20 in both sizes.
mkdir -p bench-data/photos-wallpaper bench-data/photos-web
for f in bench-data/wallpapers/*.jpg; do
    b=$(basename "$f")
    ln -f "$f" bench-data/photos-wallpaper/
    ln -f "bench-data/web/$b" bench-data/photos-web/
done
bins=(--vlmprep vlmprep=target/release/vlmprep --vlmprep "vlmprep turbojpeg=target/turbo/release/vlmprep")
for set in web wallpaper; do
    repeat=5; [ $set = wallpaper ] && repeat=1
    for mode in internvl qwen2vl fixed; do
        "$python" benches/compare_decode_tile.py "bench-data/photos-$set" --mode $mode --repeat $repeat "${bins[@]}"
        echo
    done
done
