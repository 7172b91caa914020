//! Post-decode kernels for the nvJPEG path (src/backend/cuda/nvjpeg.rs): nvJPEG writes pixels in
//! stored orientation, and grayscale JPEGs are decoded to one plane, so these finish the job of
//! producing the packed RGB8 `DeviceImage` the rest of the pipeline expects.
//
// NVRTC compiles this file without any headers, so only builtin types are used.

// EXIF orientation (1..=8) applied to packed RGB8, with exactly the mapping of
// src/image/orientation.rs (Pillow's ImageOps.exif_transpose). `w`, `h` are the source size; the
// output is `w x h` for 1..=4 and `h x w` for 5..=8. One thread per output pixel, so every output
// byte is written once (the output buffer may be uninitialised); reads are scattered for 5..=8,
// which is acceptable because this runs once per image, far from the hot resize/tile kernels.
extern "C" __global__ void orient_rgb8(const unsigned char* __restrict__ src,
                                       unsigned char* __restrict__ dst,
                                       unsigned int w, unsigned int h, int orientation) {
    const bool swap = orientation >= 5 && orientation <= 8;
    const unsigned int ow = swap ? h : w;
    const unsigned int oh = swap ? w : h;
    const unsigned int x = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= ow || y >= oh) return;
    unsigned int sx = x, sy = y;
    switch (orientation) {
        case 2: sx = w - 1 - x; sy = y; break;          // mirror
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;  // rotate 180
        case 4: sx = x; sy = h - 1 - y; break;          // flip
        case 5: sx = y; sy = x; break;                  // transpose
        case 6: sx = y; sy = h - 1 - x; break;          // rotate 90 cw
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;  // transverse
        case 8: sx = w - 1 - y; sy = x; break;          // rotate 90 ccw
        default: break;                                 // 1 and invalid values: identity
    }
    // 64-bit offsets: a 89 Mpx image is 268 MB, beyond what 32-bit byte offsets can safely hold
    // once multiplied out with larger --max-pixels settings.
    const unsigned long long s = 3ull * ((unsigned long long)sy * w + sx);
    const unsigned long long d = 3ull * ((unsigned long long)y * ow + x);
    dst[d] = src[s];
    dst[d + 1] = src[s + 1];
    dst[d + 2] = src[s + 2];
}

// One luma plane (pitch `pitch` bytes) to packed RGB8 with R = G = B = Y: what Pillow's
// convert("RGB") gives for an "L" image, and what the CPU decoder produces for grayscale JPEGs.
extern "C" __global__ void gray_to_rgb8(const unsigned char* __restrict__ src, unsigned int pitch,
                                        unsigned char* __restrict__ dst,
                                        unsigned int w, unsigned int h) {
    const unsigned int x = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    const unsigned char v = src[(unsigned long long)y * pitch + x];
    const unsigned long long d = 3ull * ((unsigned long long)y * w + x);
    dst[d] = v;
    dst[d + 1] = v;
    dst[d + 2] = v;
}
