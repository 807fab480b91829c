//! Tissue label maps: what each voxel of a scan is (background, skull, white matter, left
//! hippocampus, …), for scoring attribution maps against anatomy (how much of a heat map falls
//! inside the hippocampus). Not to be confused with [`super::label`], the diagnostic classes.
//!
//! The labels are the synthetic phantom's own ([`tissue`]), and the structures are counted from
//! them exactly as the generator counts the table's volume columns ([`structure_labels`]).
//!
//! Files, and how they follow the scan through the pipeline:
//! - `adfit synth --labels` writes `X_labels.nii.gz` beside each scan `X.nii.gz`: uint8, the
//!   scan's own voxel grid (same shape and affine), imaged by nearest-neighbour sampling of the
//!   phantom with the scan's pose, no blur or noise; and the legend `labels.json` once per run.
//! - `adfit preprocess` finds that sibling of any scan it reads and replays the scan's geometry
//!   on it (same reorientation, the *same* crop box, nearest-neighbour resize, no normalisation):
//!   `<index folder>/labels/<cache file stem>.nii.gz`, in the cache volume's grid and affine, so
//!   it overlays the cache volume voxel for voxel (and in a NIfTI viewer).

use std::path::{Path, PathBuf};

use super::nifti_io::{read_nifti, write_nifti, OutType};
use super::preprocess::IndexRow;
use super::table::Biomarker;
use super::volume::Volume;
use crate::error::{Error, Result};

/// Label values of the phantom's label map.
pub mod tissue {
    pub const BG: u8 = 0;
    pub const SCALP: u8 = 1;
    pub const SKULL: u8 = 2;
    /// Extra-cerebral CSF, between brain and skull.
    pub const CSF: u8 = 3;
    /// CSF in the sulci of the cortical ribbon.
    pub const SULCAL: u8 = 4;
    /// The cortical ribbon.
    pub const GM: u8 = 5;
    /// White matter; the brainstem is drawn with it.
    pub const WM: u8 = 6;
    pub const DEEP_GM: u8 = 7;
    pub const CEREBELLUM: u8 = 8;
    pub const VENT_R: u8 = 9;
    pub const VENT_L: u8 = 10;
    pub const HIPPO_R: u8 = 11;
    pub const HIPPO_L: u8 = 12;
    pub const ENTO_R: u8 = 13;
    pub const ENTO_L: u8 = 14;
    pub const FUSI_R: u8 = 15;
    pub const FUSI_L: u8 = 16;
    pub const MTG_R: u8 = 17;
    pub const MTG_L: u8 = 18;
    /// Number of labels: values run 0..COUNT.
    pub const COUNT: usize = 19;
}
use tissue::*;

/// Every label value with its structure's name, in value order (what `labels.json` lists).
pub const LEGEND: [(u8, &str); tissue::COUNT] = [
    (BG, "background"),
    (SCALP, "scalp"),
    (SKULL, "skull"),
    (CSF, "extra-cerebral CSF"),
    (SULCAL, "sulcal CSF"),
    (GM, "cortical grey matter"),
    (WM, "white matter and brainstem"),
    (DEEP_GM, "deep grey matter"),
    (CEREBELLUM, "cerebellum"),
    (VENT_R, "right lateral ventricle"),
    (VENT_L, "left lateral ventricle"),
    (HIPPO_R, "right hippocampus"),
    (HIPPO_L, "left hippocampus"),
    (ENTO_R, "right entorhinal cortex"),
    (ENTO_L, "left entorhinal cortex"),
    (FUSI_R, "right fusiform gyrus"),
    (FUSI_L, "left fusiform gyrus"),
    (MTG_R, "right middle temporal gyrus"),
    (MTG_L, "left middle temporal gyrus"),
];

/// The labels each table column counts. The generator measures its volumes with these very
/// constants (`synth/anatomy.rs`, `measure`), so a structure here is what its column measured.
pub mod structure {
    use super::tissue::*;

    pub const HIPPOCAMPUS: [u8; 2] = [HIPPO_R, HIPPO_L];
    /// The lateral ventricles (the phantom has no third or fourth ventricle).
    pub const VENTRICLES: [u8; 2] = [VENT_R, VENT_L];
    pub const ENTORHINAL: [u8; 2] = [ENTO_R, ENTO_L];
    pub const FUSIFORM: [u8; 2] = [FUSI_R, FUSI_L];
    pub const MID_TEMP: [u8; 2] = [MTG_R, MTG_L];
    /// `WholeBrain`: every brain tissue, ventricles and CSF excluded.
    pub const BRAIN: [u8; 12] =
        [GM, WM, DEEP_GM, CEREBELLUM, HIPPO_R, HIPPO_L, ENTO_R, ENTO_L, FUSI_R, FUSI_L, MTG_R, MTG_L];
    /// CSF inside the skull: `ICV` is `BRAIN` plus these.
    pub const FLUID: [u8; 4] = [CSF, SULCAL, VENT_R, VENT_L];
}

/// The label values that make up the structure `b` measures, both hemispheres together.
/// `Icv` is everything intracranial (brain and CSF, not skull or scalp).
pub fn structure_labels(b: Biomarker) -> Vec<u8> {
    match b {
        Biomarker::Hippocampus => structure::HIPPOCAMPUS.to_vec(),
        Biomarker::Ventricles => structure::VENTRICLES.to_vec(),
        Biomarker::WholeBrain => structure::BRAIN.to_vec(),
        Biomarker::Entorhinal => structure::ENTORHINAL.to_vec(),
        Biomarker::Fusiform => structure::FUSIFORM.to_vec(),
        Biomarker::MidTemp => structure::MID_TEMP.to_vec(),
        Biomarker::Icv => [structure::BRAIN.as_slice(), &structure::FLUID].concat(),
    }
}

/// The name of a label value, `None` for a value the phantom does not use.
pub fn label_name(label: u8) -> Option<&'static str> {
    LEGEND.get(label as usize).map(|&(_, name)| name)
}

/// The legend as written to `labels.json`: every value with its name, and the values each table
/// column counts.
pub fn legend_json() -> serde_json::Value {
    let labels: Vec<_> =
        LEGEND.iter().map(|&(value, name)| serde_json::json!({"value": value, "name": name})).collect();
    let structures: Vec<_> = [Biomarker::REPORT.as_slice(), &[Biomarker::Icv]]
        .concat()
        .into_iter()
        .map(|b| serde_json::json!({"column": b.column(), "labels": structure_labels(b)}))
        .collect();
    serde_json::json!({
        "description": "Tissue labels of the synthetic phantoms (`<scan>_labels.nii.gz`, uint8, the scan's grid; \
            `adfit preprocess` carries them to labels/<cache stem>.nii.gz in the cache grid). `structures` lists the \
            labels each table column counts.",
        "labels": labels,
        "structures": structures,
    })
}

/// What a scan's label map is called beside it: `X.nii.gz` (or `.nii`, `.hdr`, `.img`, gzipped
/// or not) → `X_labels.nii.gz`.
pub fn sibling_path(scan: &Path) -> PathBuf {
    let name = scan.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let mut stem = name.as_str();
    for ext in [".gz", ".nii", ".hdr", ".img"] {
        if stem.len() > ext.len() && stem[stem.len() - ext.len()..].eq_ignore_ascii_case(ext) {
            stem = &stem[..stem.len() - ext.len()];
        }
    }
    scan.with_file_name(format!("{stem}_labels.nii.gz"))
}

/// Where `preprocess` puts the label map of the cache file `cache` (relative to the index's
/// folder, as [`IndexRow::cache`]): `volumes/X.vol` → `labels/X.nii.gz`.
pub fn cache_labels_rel(cache: &str) -> String {
    let stem = Path::new(cache).file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    format!("labels/{stem}.nii.gz")
}

/// Where `preprocess` put the label map of an index row (which may not exist: only scans with a
/// label sibling get one).
pub fn labels_path(index_csv: &Path, row: &IndexRow) -> PathBuf {
    index_csv.parent().unwrap_or(Path::new("")).join(cache_labels_rel(&row.cache))
}

/// The label map of an index row, in the cache volume's grid and affine, with the label values
/// as f32 (whole numbers 0-255; compare them with `structure_labels` after `as u8`). A missing
/// file is an error that names it and says how to make it.
pub fn read_labels(index_csv: &Path, row: &IndexRow) -> Result<Volume> {
    let path = labels_path(index_csv, row);
    if !path.is_file() {
        return Err(Error::volume(
            path.display().to_string(),
            format!(
                "no label map for scan {}: regenerate the cohort with `adfit synth --labels`, then run `adfit \
                 preprocess` again (it carries each scan's X_labels.nii.gz into the cache grid)",
                row.scan
            ),
        ));
    }
    read_label_map(&path)
}

/// A label NIfTI, checked to hold whole numbers in 0..=255.
pub fn read_label_map(path: &Path) -> Result<Volume> {
    let vol = read_nifti(path)?.volume;
    if let Some(v) = vol.data.iter().find(|&&v| !(v.fract() == 0.0 && (0.0..=255.0).contains(&v))) {
        return Err(Error::volume(
            path.display().to_string(),
            format!("voxel value {v} is not a label (label maps hold whole numbers 0-255)"),
        ));
    }
    Ok(vol)
}

/// Write a label map as uint8 NIfTI, atomically.
pub fn write_label_map(path: &Path, labels: &Volume) -> Result<()> {
    write_nifti(path, labels, OutType::Uint8)
}

/// Read the label sibling `path` of a scan and check it is in the scan's voxel grid (same shape,
/// same affine up to the float32 a NIfTI header stores). The returned map carries the scan's
/// affine exactly, so reorienting it picks the very permutation the scan's reorientation did.
pub fn read_sibling(path: &Path, scan: &Volume, scan_name: &str) -> Result<Volume> {
    let mut labels = read_label_map(path)?;
    let what = path.display().to_string();
    if labels.shape != scan.shape {
        return Err(Error::volume(
            what,
            format!(
                "label map has shape {:?} but its scan {scan_name} has {:?}: a label map must be in its scan's grid",
                labels.shape, scan.shape
            ),
        ));
    }
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs()));
    let same = (0..4).all(|r| (0..4).all(|c| close(labels.affine[r][c], scan.affine[r][c])));
    if !same {
        return Err(Error::volume(
            what,
            format!(
                "label map's affine {:?} differs from its scan {scan_name}'s {:?}: a label map must be in its scan's grid",
                &labels.affine[..3],
                &scan.affine[..3]
            ),
        ));
    }
    labels.affine = scan.affine;
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::volume::identity;

    #[test]
    fn file_names() {
        assert_eq!(sibling_path(Path::new("a/images/x_bl.nii.gz")), Path::new("a/images/x_bl_labels.nii.gz"));
        assert_eq!(sibling_path(Path::new("y.NII")), Path::new("y_labels.nii.gz"));
        assert_eq!(sibling_path(Path::new("z.hdr")), Path::new("z_labels.nii.gz"));
        assert_eq!(cache_labels_rel("volumes/images_x.v2.vol"), "labels/images_x.v2.nii.gz");
        let row = IndexRow::bare("images/x", "s", "volumes/images_x.vol");
        assert_eq!(labels_path(Path::new("out/index.csv"), &row), Path::new("out/labels/images_x.nii.gz"));
        assert_eq!(labels_path(Path::new("index.csv"), &row), Path::new("labels/images_x.nii.gz"));
    }

    #[test]
    fn legend_and_structures() {
        for (i, &(v, _)) in LEGEND.iter().enumerate() {
            assert_eq!(v as usize, i);
        }
        assert_eq!(label_name(HIPPO_L), Some("left hippocampus"));
        assert_eq!(label_name(tissue::COUNT as u8), None);
        // ICV is the disjoint union of whole brain and the CSF spaces; skull and scalp are out.
        let icv = structure_labels(Biomarker::Icv);
        assert_eq!(icv.len(), structure::BRAIN.len() + structure::FLUID.len());
        assert!(!icv.contains(&SKULL) && !icv.contains(&SCALP) && !icv.contains(&BG));
        for b in Biomarker::REPORT {
            let ls = structure_labels(b);
            assert!(!ls.is_empty() && ls.iter().all(|l| icv.contains(l)), "{b:?}");
        }
        let json = legend_json();
        assert_eq!(json["labels"][12]["name"], "left hippocampus");
        assert_eq!(json["structures"][0]["column"], "Hippocampus");
        assert_eq!(json["structures"][0]["labels"], serde_json::json!([11, 12]));
    }

    #[test]
    fn reading_checks_values_grid_and_presence() {
        let dir = tempfile::tempdir().unwrap();
        let scan = Volume::from_fn([3, 4, 5], identity(), |i, _, _| i as f32 * 100.0);
        let labels = Volume::from_fn([3, 4, 5], identity(), |i, j, _| (i + j) as f32);
        let p = dir.path().join("x_labels.nii.gz");
        write_label_map(&p, &labels).unwrap();
        assert_eq!(read_sibling(&p, &scan, "x.nii.gz").unwrap(), labels);

        let other = Volume::from_fn([3, 4, 6], identity(), |_, _, _| 0.0);
        let err = read_sibling(&p, &other, "x.nii.gz").unwrap_err().to_string();
        assert!(err.contains("x_labels.nii.gz") && err.contains("shape"), "{err}");
        let mut moved = scan.clone();
        moved.affine[0][3] = 2.0;
        let err = read_sibling(&p, &moved, "x.nii.gz").unwrap_err().to_string();
        assert!(err.contains("x_labels.nii.gz") && err.contains("affine"), "{err}");

        let f = dir.path().join("f.nii");
        write_nifti(&f, &Volume::from_fn([2, 2, 2], identity(), |_, _, _| 0.5), OutType::Float32).unwrap();
        assert!(read_label_map(&f).unwrap_err().to_string().contains("not a label"));

        let row = IndexRow::bare("images/y", "s", "volumes/images_y.vol");
        let err = read_labels(&dir.path().join("index.csv"), &row).unwrap_err().to_string();
        assert!(err.contains("labels/images_y.nii.gz") && err.contains("adfit synth --labels"), "{err}");
    }
}
