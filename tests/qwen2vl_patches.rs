//! Qwen2-VL patches against transformers' `Qwen2VLImageProcessor` (fixture made by
//! tests/fixtures/qwen2vl/make_qwen2vl.py): the CPU backend's normalized CHW output, cut by
//! `image::qwen2vl_patches`, equals the processor's `pixel_values` and `image_grid_thw`.

use vlmprep::backend::{Backend, CpuBackend, TileSpec};
use vlmprep::image::decode::{DecodeOptions, decode_rgb8};
use vlmprep::image::normalize::{Dtype, Normalization};
use vlmprep::image::qwen2vl_patches::{patch_of_factor, patchify_chw, row_len};
use vlmprep::image::resize::ResizeFilter;
use vlmprep::image::tiling::TilePlan;
use vlmprep::sink::npy::read_f32_npy;

#[test]
fn patches_equal_the_processors_pixel_values() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen2vl");
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("grid.json")).unwrap()).unwrap();
    let patch = patch_of_factor(28).unwrap();
    let spec = TileSpec {
        filter: ResizeFilter::Bicubic,
        dtype: Dtype::F32,
        norm: Normalization::CLIP,
    };
    let images = golden["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for (i, entry) in images.iter().enumerate() {
        let file = entry["file"].as_str().unwrap();
        let img = decode_rgb8(
            &std::fs::read(dir.join(file)).unwrap(),
            &DecodeOptions::default(),
        )
        .unwrap();
        let (w, h) = (img.width, img.height);
        // Sides already on the 28 px grid: the plan keeps the size, as the fixture's processor
        // ran with its resize off.
        let plan = TilePlan {
            resize: (w, h),
            grid: (1, 1),
            tile: (w, h),
            thumbnail: None,
        };
        let chw = CpuBackend.tile_batch(&[&img], &[plan], &spec).unwrap().data;
        let mut rows = Vec::new();
        let grid = patchify_chw(&chw, 4, w as usize, h as usize, patch, &mut rows).unwrap();
        let expected_grid: Vec<usize> = entry["grid_thw"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(vec![grid.t, grid.h, grid.w], expected_grid, "{file}");
        let (shape, expected) =
            read_f32_npy(&dir.join(format!("img{i}_pixel_values.npy"))).unwrap();
        assert_eq!(shape, vec![grid.rows(), row_len(patch)], "{file}");
        let got: Vec<f32> = rows
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(got.len(), expected.len());
        let worst = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-5, "{file}: max abs difference {worst}");
    }
}
