//! End-to-end checks of the generator: determinism, the tables' formats, the disease signal
//! (the calibrated difficulty is checked in `calibration.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::anatomy::{measure, paint, ICV_TEMPLATE};
use super::atrophy::{Anatomy, Traits};
use super::tables::{ADNI_COLUMNS, OASIS_COLUMNS};
use super::*;
use crate::data::nifti_io::read_nifti;

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Rows of a CSV as maps from column name to cell.
pub(super) fn read_table(path: &Path) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let rows =
        r.records().map(|rec| header.iter().cloned().zip(rec.unwrap().iter().map(String::from)).collect()).collect();
    (header, rows)
}

#[test]
fn same_seed_same_bytes() {
    let cfg = SynthConfig::preset(Preset::Tiny, 7);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sa = generate(a.path(), &cfg).unwrap();
    // One thread against the default pool: scheduling must not matter.
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let sb = one.install(|| generate(b.path(), &cfg)).unwrap();
    assert_eq!(sa, sb);
    let files = files_under(a.path());
    assert_eq!(files, files_under(b.path()));
    assert_eq!(files.len(), sa.adni_scans + sa.oasis_scans + 6);
    for f in &files {
        let (x, y) = (std::fs::read(a.path().join(f)).unwrap(), std::fs::read(b.path().join(f)).unwrap());
        assert!(x == y, "{} differs between runs", f.display());
    }
    // gzip header: no timestamp (bytes 4..8), so files do not depend on when they were written.
    let img = files.iter().find(|f| f.extension().is_some_and(|e| e == "gz")).unwrap();
    let bytes = std::fs::read(a.path().join(img)).unwrap();
    assert_eq!(&bytes[4..8], &[0, 0, 0, 0]);

    // Tables do not depend on whether images are written; another seed gives another cohort.
    let c = tempfile::tempdir().unwrap();
    generate(c.path(), &SynthConfig { write_images: false, ..cfg.clone() }).unwrap();
    for f in ["adni/ADNIMERGE.csv", "adni/scans.csv", "oasis/oasis_longitudinal.csv"] {
        assert_eq!(std::fs::read(a.path().join(f)).unwrap(), std::fs::read(c.path().join(f)).unwrap(), "{f}");
    }
    let d = tempfile::tempdir().unwrap();
    generate(d.path(), &SynthConfig { write_images: false, ..SynthConfig::preset(Preset::Tiny, 8) }).unwrap();
    let f = "adni/ADNIMERGE.csv";
    assert_ne!(std::fs::read(a.path().join(f)).unwrap(), std::fs::read(d.path().join(f)).unwrap());
}

#[test]
fn tiny_tables_and_images_have_the_real_formats() {
    let dir = tempfile::tempdir().unwrap();
    let s = generate(dir.path(), &SynthConfig::preset(Preset::Tiny, 1)).unwrap();
    assert_eq!(s.adni_subjects, 14);
    assert!(s.adni_scans_by_label.iter().all(|&n| n > 0), "{s:?}");
    let root = dir.path();

    let (header, rows) = read_table(&root.join("adni/ADNIMERGE.csv"));
    assert_eq!(header, ADNI_COLUMNS);
    assert_eq!(rows.len(), s.adni_rows);
    let dx_codes: BTreeSet<&str> = ["", "CN", "MCI", "Dementia"].into();
    let bl_codes: BTreeSet<&str> = ["CN", "SMC", "EMCI", "LMCI", "AD"].into();
    for r in &rows {
        assert!(dx_codes.contains(r["DX"].as_str()), "{r:?}");
        assert!(bl_codes.contains(r["DX_bl"].as_str()), "{r:?}");
        let p = &r["PTID"];
        assert!(p.len() == 10 && &p[3..6] == "_S_", "{p}");
        assert!(r["VISCODE"] == "bl" || r["VISCODE"].starts_with('m'));
        assert_eq!(r["EXAMDATE"].len(), 10);
        if !r["MMSE"].is_empty() {
            assert!(r["MMSE"].parse::<u32>().unwrap() <= 30);
        }
        if r["IMAGEUID"].is_empty() {
            assert!(r["Hippocampus"].is_empty() && r["ICV"].is_empty());
        }
    }
    let (header, scans) = read_table(&root.join("adni/scans.csv"));
    assert_eq!(header, ["path", "subject", "date"]);
    assert_eq!(scans.len(), s.adni_scans);
    let (header, by_id) = read_table(&root.join("adni/scans_by_id.csv"));
    assert_eq!(header, ["path", "image_id"]);
    let uids: BTreeSet<&str> = rows.iter().map(|r| r["IMAGEUID"].as_str()).filter(|u| !u.is_empty()).collect();
    assert_eq!(uids.len(), s.adni_scans);
    for r in &by_id {
        assert!(uids.contains(r["image_id"].as_str()));
        assert!(root.join("adni").join(&r["path"]).is_file());
    }

    // Matching by subject and nearest date (within 120 days) finds the row of the same image.
    let day = |s: &str| {
        let p: Vec<u32> = s.split('-').map(|x| x.parse().unwrap()).collect();
        super::cohort::days_from_civil(p[0] as i64, p[1], p[2])
    };
    let uid_of: BTreeMap<&str, &str> = by_id.iter().map(|r| (r["path"].as_str(), r["image_id"].as_str())).collect();
    for sc in &scans {
        let nearest = rows
            .iter()
            .filter(|r| r["PTID"] == sc["subject"])
            .min_by_key(|r| (day(&r["EXAMDATE"]) - day(&sc["date"])).abs())
            .unwrap();
        assert!((day(&nearest["EXAMDATE"]) - day(&sc["date"])).abs() <= 120);
        assert_eq!(nearest["IMAGEUID"], uid_of[sc["path"].as_str()], "{sc:?}");
    }

    let (header, orows) = read_table(&root.join("oasis/oasis_longitudinal.csv"));
    assert_eq!(header, OASIS_COLUMNS);
    assert_eq!(orows.len(), s.oasis_scans);
    for r in &orows {
        assert!(["Nondemented", "Demented", "Converted"].contains(&r["Group"].as_str()));
        assert!(["0", "0.5", "1", "2"].contains(&r["CDR"].as_str()), "{r:?}");
        assert!(r["MRI ID"].starts_with(&r["Subject ID"]));
        let nwbv: f64 = r["nWBV"].parse().unwrap();
        assert!((0.6..0.85).contains(&nwbv), "nWBV {nwbv}");
    }
    let (_, oscans) = read_table(&root.join("oasis/scans.csv"));
    for r in &oscans {
        let vol = read_nifti(&root.join("oasis").join(&r["path"])).unwrap().volume;
        assert!(vol.shape.iter().all(|&n| (28..=56).contains(&n)), "{:?}", vol.shape);
    }
    // Raw-looking ADNI volumes: int16, ~40 voxels a side, a head in the middle, several voxel orders.
    let mut orders = BTreeSet::new();
    for r in scans.iter().take(8) {
        let nv = read_nifti(&root.join("adni").join(&r["path"])).unwrap();
        let vol = nv.volume;
        assert_eq!(nv.info.datatype.name(), "int16");
        assert!(vol.shape.iter().all(|&n| (28..=56).contains(&n)), "{:?}", vol.shape);
        let c = vol.get(vol.shape[0] / 2, vol.shape[1] / 2, vol.shape[2] / 2);
        assert!(c > 100.0 && nv.stats.min >= 0.0, "centre {c}");
        let dominant: Vec<usize> = (0..3)
            .map(|c| (0..3).max_by(|&a, &b| vol.affine[a][c].abs().total_cmp(&vol.affine[b][c].abs())).unwrap())
            .collect();
        orders.insert(dominant);
    }
    assert!(orders.len() > 1, "every scan has the same voxel order");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("cohort.json")).unwrap()).unwrap();
    assert_eq!(json["config"]["seed"], 1);
}

/// `--labels` adds a label map beside each scan and the legend, listed in no scan list, and
/// changes no other byte.
#[test]
fn label_maps_sit_beside_the_scans() {
    let cfg = SynthConfig::preset(Preset::Tiny, 5);
    let (plain, labelled) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = generate(plain.path(), &cfg).unwrap();
    let sl = generate(labelled.path(), &SynthConfig { write_labels: true, ..cfg.clone() }).unwrap();
    assert!(sl.bytes_written > s.bytes_written);
    assert_eq!(SynthSummary { bytes_written: 0, ..sl }, SynthSummary { bytes_written: 0, ..s.clone() });
    let (files, with_labels) = (files_under(plain.path()), files_under(labelled.path()));
    let is_label_map = |f: &PathBuf| f.to_string_lossy().ends_with("_labels.nii.gz");
    assert!(!files.iter().any(is_label_map));
    let (maps, rest): (Vec<_>, Vec<_>) = with_labels.iter().cloned().partition(is_label_map);
    assert_eq!(maps.len(), s.adni_scans + s.oasis_scans);
    let mut expected = [files.as_slice(), &[PathBuf::from("labels.json")]].concat();
    expected.sort();
    assert_eq!(rest, expected);
    for f in files.iter().filter(|f| f.as_os_str() != "cohort.json") {
        let same = std::fs::read(plain.path().join(f)).unwrap() == std::fs::read(labelled.path().join(f)).unwrap();
        assert!(same, "{} differs with --labels", f.display());
    }
    for cohort in ["adni", "oasis"] {
        let (_, scans) = read_table(&labelled.path().join(cohort).join("scans.csv"));
        assert!(scans.iter().all(|r| !r["path"].contains("_labels")));
        for r in scans.iter().take(3) {
            let scan = labelled.path().join(cohort).join(&r["path"]);
            let image = read_nifti(&scan).unwrap().volume;
            let map = read_nifti(&crate::data::labels::sibling_path(&scan)).unwrap();
            assert_eq!(map.info.datatype.name(), "uint8");
            assert_eq!((map.volume.shape, map.volume.affine), (image.shape, image.affine));
            assert!(map.volume.data.contains(&(crate::data::labels::tissue::HIPPO_L as f32)));
        }
    }
    let legend: serde_json::Value =
        serde_json::from_slice(&std::fs::read(labelled.path().join("labels.json")).unwrap()).unwrap();
    assert_eq!(legend["labels"].as_array().unwrap().len(), crate::data::labels::tissue::COUNT);
    assert!(cfg.validate().is_ok());
    assert!(SynthConfig { write_images: false, write_labels: true, ..cfg }.validate().is_err());
}

/// Each biomarker's labels, counted on a label map, give exactly the volume the table reports.
#[test]
fn structure_labels_count_the_table_volumes() {
    use crate::data::labels::structure_labels;
    use crate::data::table::Biomarker;
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let t = Traits::draw(&mut rng, ICV_TEMPLATE);
    let map = paint(&Anatomy::at(&t, 1.5, 77.0, 1.0, &mut rng), 2.0, true);
    let m = measure(&map);
    let v = map.lattice.h.powi(3);
    for (b, table) in [
        (Biomarker::Hippocampus, m.hippocampus),
        (Biomarker::Ventricles, m.ventricles),
        (Biomarker::WholeBrain, m.whole_brain),
        (Biomarker::Entorhinal, m.entorhinal),
        (Biomarker::Fusiform, m.fusiform),
        (Biomarker::MidTemp, m.mid_temp),
        (Biomarker::Icv, m.icv),
    ] {
        let ls = structure_labels(b);
        let counted = map.labels.iter().filter(|l| ls.contains(l)).count() as f64 * v;
        assert!(counted > 0.0 && (counted - table).abs() <= 1e-9 * table, "{b:?}: {counted} vs {table}");
    }
}

/// The same 12 heads at rising severity: hippocampus and whole brain shrink, ventricles grow.
#[test]
fn atrophy_follows_severity() {
    let mut means = Vec::new();
    for severity in [0.0, 1.0, 2.0, 3.0] {
        let mut acc = [0.0; 3];
        for subject in 0..12 {
            let mut rng = ChaCha8Rng::seed_from_u64(subject);
            let t = Traits::draw(&mut rng, ICV_TEMPLATE * (0.85 + 0.025 * subject as f64));
            let m = measure(&paint(&Anatomy::at(&t, severity, 74.0, 1.0, &mut rng), 2.0, false));
            acc[0] += m.hippocampus / 12.0;
            acc[1] += m.whole_brain / 12.0;
            acc[2] += m.ventricles / 12.0;
        }
        means.push(acc);
    }
    for w in means.windows(2) {
        assert!(w[1][0] < w[0][0] && w[1][1] < w[0][1] && w[1][2] > w[0][2], "{means:?}");
    }
}
