//! NIfTI reading, reorientation and resizing against nibabel and torch, on the committed
//! fixtures that `scripts/make_nifti_fixtures.py` and `scripts/make_resize_fixtures.py` write.

use std::path::{Path, PathBuf};

use adfit::data::nifti_io::{read_nifti, AffineSource};
use adfit::data::orient::{axcodes, to_canonical};
use adfit::data::resample::resize;
use adfit::data::volume::{identity, Volume};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

fn check_affine(name: &str, got: &[[f64; 4]; 4], want: &Value) {
    for (r, row) in want.as_array().unwrap().iter().enumerate() {
        for (c, w) in floats(row).into_iter().enumerate() {
            assert!(close(got[r][c], w, 1e-6), "{name}: affine[{r}][{c}] = {} want {w}", got[r][c]);
        }
    }
}

fn check_geometry(name: &str, vol: &Volume, want: &Value) {
    let shape: Vec<usize> = floats(&want["shape"]).iter().map(|&x| x as usize).collect();
    assert_eq!(vol.shape.to_vec(), shape, "{name}: shape");
    check_affine(name, &vol.affine, &want["affine"]);
    for (g, w) in vol.voxel_size().iter().zip(floats(&want["voxel_size"])) {
        assert!(close(*g, w, 1e-6), "{name}: voxel size {g} want {w}");
    }
    let codes: Vec<&str> = want["axcodes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(axcodes(&vol.affine).to_vec(), codes, "{name}: axcodes");
    let data = floats(&want["data"]);
    assert_eq!(vol.data.len(), data.len(), "{name}: voxel count");
    for (i, (g, w)) in vol.data.iter().zip(&data).enumerate() {
        // Values are f32 in memory; the reference is float64.
        assert!(close(*g as f64, *w, 1e-6), "{name}: voxel {i} = {g} want {w}");
    }
}

#[test]
fn every_fixture_matches_nibabel() {
    let dir = fixtures().join("nifti");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let files = reference["files"].as_object().unwrap();
    assert!(files.len() >= 15, "fixture set shrank: {}", files.len());
    for (name, want) in files {
        let img = read_nifti(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(img.info.datatype.name(), want["datatype"].as_str().unwrap(), "{name}: datatype");
        let source = match img.info.affine_source {
            AffineSource::Sform => "sform",
            AffineSource::Qform => "qform",
            AffineSource::Pixdim => "pixdim",
        };
        assert_eq!(source, want["affine_source"].as_str().unwrap(), "{name}: affine source");
        let (slope, inter) = match img.info.scaling {
            Some((s, i)) => (Value::from(s), Value::from(i)),
            None => (Value::Null, Value::Null),
        };
        assert_eq!(slope, want["scl_slope"], "{name}: scl_slope");
        assert_eq!(inter, want["scl_inter"], "{name}: scl_inter");
        for key in ["min", "max", "mean", "std", "sum"] {
            let w = want["stats"][key].as_f64().unwrap();
            let g = match key {
                "min" => img.stats.min,
                "max" => img.stats.max,
                "mean" => img.stats.mean,
                "std" => img.stats.std,
                _ => img.stats.sum,
            };
            assert!(close(g, w, 1e-9), "{name}: stats.{key} = {g} want {w}");
        }
        check_geometry(name, &img.volume, want);
        check_geometry(&format!("{name} (canonical)"), &to_canonical(img.volume.clone()), &want["canonical"]);
    }
}

#[test]
fn every_malformed_fixture_gets_its_intended_error() {
    let dir = fixtures().join("nifti");
    // fixture → words the error must contain
    let expected = [
        ("bad_truncated_data.nii", "truncated"),
        ("bad_truncated.nii.gz", "voxel data"),
        ("bad_truncated_header.nii", "inside the 348-byte header"),
        ("bad_magic.nii", "magic"),
        ("bad_bitpix.nii", "bitpix 32 does not match datatype int16"),
        ("bad_huge_dims.nii", "voxels is more than"),
        ("bad_negative_dim.nii", "dim[2] = -3"),
        ("bad_vox_offset.nii", "vox_offset 100"),
        ("bad_sizeof_hdr_540.nii", "NIfTI-2"),
        ("bad_not_gzip.nii.gz", "invalid gzip header"),
        ("bad_complex64.nii", "complex64"),
        ("bad_4d_three_volumes.nii", "dim[4] = 3"),
        ("bad_missing_img.hdr", "image file of the .hdr/.img pair is missing"),
    ];
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    assert_eq!(
        reference["malformed"].as_object().unwrap().len(),
        expected.len(),
        "a malformed case has no expectation"
    );
    for (file, words) in expected {
        let path = dir.join(file);
        let err = match read_nifti(&path) {
            Ok(_) => panic!("{file}: read without error"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(words), "{file}: error {err:?} lacks {words:?}");
        assert!(err.contains("bad_"), "{file}: error does not name the file: {err}");
    }
}

#[test]
fn resize_matches_torch_trilinear() {
    let text = std::fs::read_to_string(fixtures().join("resize/reference.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reference["align_corners"], Value::Bool(false));
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let shape = |k: &str| -> [usize; 3] {
            let v = floats(&case[k]);
            [v[0] as usize, v[1] as usize, v[2] as usize]
        };
        let input: Vec<f32> = floats(&case["input"]).into_iter().map(|x| x as f32).collect();
        let vol = Volume { shape: shape("in_shape"), data: input, affine: identity() };
        let out = resize(&vol, shape("out_shape")).unwrap();
        let want = floats(&case["output"]);
        let worst = out.data.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
        assert!(worst <= 1e-5, "{name}: max abs error {worst}");
    }
}
