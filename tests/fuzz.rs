//! Fuzzing every reader of outside bytes, on stable Rust: a seeded, structure-aware mutation loop.
//!
//! Each target starts from valid files adfit itself writes (NIfTI, `.vol`, safetensors, run
//! checkpoints) or small hand-written ones (tables, scan lists, JSON), and mutates them: bit flips,
//! "interesting" integers and floats written over the known header fields of NIfTI, format tokens
//! (quotes, CR, LF, BOM, NaN, huge numbers) for the text formats, cuts, splices, duplications, and
//! for `.nii.gz` mutations of the inflated bytes that are then re-compressed (so that they get past
//! the CRC check) as well as of the compressed bytes. A reader may return any error; it must not
//! panic, abort, or allocate more than 1 GiB at once (this binary's allocator refuses, which aborts).
//!
//! `fuzz_readers` is the supervisor: it runs this test binary again as a worker per target
//! (`fuzz_worker`, ignored), so an abort or a crash is caught, the input that caused it is saved
//! under `target/fuzz/crashes/`, and the worker restarts. Budget: `ADFIT_FUZZ_SECS` seconds in all
//! (default 20, shared by the targets; `scripts/fuzz.sh` gives it 30 minutes). Figures (executions
//! per second and in total) are printed per target.
//!
//! `fuzz_regressions` replays every file under `tests/fixtures/fuzz/<target>/`: each crash ever
//! found, kept as a regression case.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use adfit::backend::Cpu;
use adfit::data::volume::{identity, Volume};

/// Refuses any single allocation above 1 GiB: a reader that sizes a buffer from an untrusted
/// header gets caught here (null → abort → the supervisor saves the input).
struct Capped;

const MAX_ALLOC: usize = 1 << 30;

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

// ---------------------------------------------------------------------------------------------
// Random numbers and mutations

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Integers and floats that break parsers, as little-endian byte strings of width 2, 4 or 8.
fn interesting(rng: &mut Rng, width: usize) -> Vec<u8> {
    let ints: [i64; 12] = [0, 1, -1, 2, 7, 255, 348, 352, i16::MAX as i64, i32::MAX as i64, 1 << 31, i64::MAX];
    let floats: [f64; 8] = [0.0, -0.0, 1e30, -1e30, f64::NAN, f64::INFINITY, 1e-40, 352.5];
    let int = rng.below(3) != 0;
    match (width, int) {
        (2, _) => (ints[rng.below(ints.len())] as i16).to_le_bytes().to_vec(),
        (4, true) => (ints[rng.below(ints.len())] as i32).to_le_bytes().to_vec(),
        (4, false) => (floats[rng.below(floats.len())] as f32).to_le_bytes().to_vec(),
        (_, true) => ints[rng.below(ints.len())].to_le_bytes().to_vec(),
        (_, false) => floats[rng.below(floats.len())].to_le_bytes().to_vec(),
    }
}

/// NIfTI-1 header fields (offset, width) worth aiming at.
const NIFTI_FIELDS: &[(usize, usize)] = &[
    (0, 4),   // sizeof_hdr
    (40, 2),  // dim[0]
    (42, 2),  // dim[1]
    (44, 2),  // dim[2]
    (46, 2),  // dim[3]
    (48, 2),  // dim[4]
    (70, 2),  // datatype
    (72, 2),  // bitpix
    (76, 4),  // pixdim[0] (qfac)
    (80, 4),  // pixdim[1]
    (88, 4),  // pixdim[3]
    (108, 4), // vox_offset
    (112, 4), // scl_slope
    (116, 4), // scl_inter
    (252, 2), // qform_code
    (254, 2), // sform_code
    (256, 4), // quatern_b
    (268, 4), // qoffset_x
    (280, 4), // srow_x[0]
    (312, 4), // srow_z[0]
    (344, 4), // magic
];

const CSV_TOKENS: &[&[u8]] = &[
    b",",
    b"\"",
    b"\"\"",
    b"\r\n",
    b"\r",
    b"\n",
    b"\xEF\xBB\xBF",
    b"NaN",
    b"-1",
    b"1e308",
    b"inf",
    b"",
    b" ",
    b"\0",
    b"\xff\xfe",
    b"9999-99-99",
    b"2005-02-30",
    b"bl",
    b"Dementia",
    b"CN",
    b"MCI",
    b"AD",
    b"train",
    b"test",
    b"I123",
];
const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\"",
    b"null",
    b"true",
    b"1e999",
    b"-1",
    b"0",
    b"18446744073709551616",
    b"\"gelu\"",
    b"\\u0000",
    b"1.5",
];
const BIN_TOKENS: &[&[u8]] = &[b"\0\0\0\0", b"\xff\xff\xff\xff", b"{\"", b"\"F32\"", b"\"shape\":[", b"data_offsets"];

fn mutate(rng: &mut Rng, seed: &[u8], corpus: &[Vec<u8>], tokens: &[&[u8]], fields: &[(usize, usize)]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = [0u8, 1, 0x7f, 0x80, 0xff, b'0', b'9'][rng.below(7)];
            }
            2 => {
                // A field-aware overwrite when the format has known fields, else anywhere.
                let (at, w) = if !fields.is_empty() && rng.below(4) != 0 {
                    fields[rng.below(fields.len())]
                } else {
                    (rng.below(len.max(1)), [2, 4, 8][rng.below(3)])
                };
                let bytes = interesting(rng, w);
                if at + w <= len {
                    v[at..at + w].copy_from_slice(&bytes);
                }
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64.min(len - a))).min(len);
                v.drain(a..b);
            }
            4 | 5 => {
                let at = rng.below(len + 1);
                let tok = tokens[rng.below(tokens.len())];
                v.splice(at..at, tok.iter().copied());
            }
            6 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(256.min(len - a))).min(len);
                let chunk = v[a..b].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            7 => v.truncate(rng.below(len + 1)),
            8 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            _ if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Targets

/// A reader under test: where its input goes and how it is read.
struct Target {
    name: &'static str,
    /// The file name the mutated bytes are written to, inside the worker's folder.
    file: &'static str,
    tokens: &'static [&'static [u8]],
    fields: &'static [(usize, usize)],
    /// Mutate the inflated bytes and re-compress (half the time).
    gz_payload: bool,
    read: fn(&Path, &Path),
}

fn nifti_seeds(dir: &Path, ext: &str) -> Vec<Vec<u8>> {
    use adfit::data::nifti_io::{write_nifti, OutType};
    let mut aff = identity();
    aff[0][0] = -1.5;
    aff[1][3] = 20.0;
    let vol = Volume::from_fn([5, 4, 3], aff, |i, j, k| (i * 7 + j * 3 + k) as f32 - 4.0);
    [OutType::Float32, OutType::Int16, OutType::Uint8]
        .iter()
        .map(|&t| {
            let p = dir.join(format!("seed{ext}"));
            write_nifti(&p, &vol, t).unwrap();
            std::fs::read(&p).unwrap()
        })
        .collect()
}

fn read_nifti(_dir: &Path, p: &Path) {
    let _ = adfit::data::nifti_io::read_nifti(p);
}

const ADNI: &str = "RID,PTID,VISCODE,EXAMDATE,DX_bl,AGE,PTGENDER,MMSE,Hippocampus,Ventricles,WholeBrain,Entorhinal,Fusiform,MidTemp,ICV,IMAGEUID,DX\n\
2,011_S_0002,bl,2005-09-08,CN,74.3,Male,28,8336,118233,1229740,4177,16559,27936,1984660,35475,CN\n\
2,011_S_0002,m06,2006-03-06,CN,74.3,Male,,,,,,,,,,MCI\n\
3,011_S_0003,bl,2005-09-12,AD,81.3,Female,20,5319,84599,1129830,1791,15506,18422,1920690,32237,Dementia\n\
4,011_S_0004,bl,2005-09-13,LMCI,67.5,Male,27,,,,,,,,,\n";

const OASIS: &str = "Subject ID,MRI ID,Group,Visit,MR Delay,M/F,Hand,Age,EDUC,SES,MMSE,CDR,eTIV,nWBV,ASF\n\
OAS2_0001,OAS2_0001_MR1,Nondemented,1,0,M,R,87,14,2,27,0,1987,0.696,0.883\n\
OAS2_0002,OAS2_0002_MR1,Demented,1,0,M,R,75,12,,23,0.5,1678,0.736,1.046\n\
OAS2_0003,OAS2_0003_MR1,Converted,1,0,F,R,80,12,,29,0,1689,0.712,1.039\n";

fn read_table(_dir: &Path, p: &Path) {
    use adfit::data::table::{read_table, TableOptions};
    let _ = read_table(p, &TableOptions::default());
    let _ = read_table(p, &TableOptions { skip_bad_rows: true, ..Default::default() });
}

fn read_scan_list(_dir: &Path, p: &Path) {
    let _ = adfit::data::scanlist::read_scan_list(p);
}

fn read_index(_dir: &Path, p: &Path) {
    let _ = adfit::data::preprocess::read_index(p);
}

fn read_split(_dir: &Path, p: &Path) {
    let _ = adfit::data::split::read_split(p);
}

fn read_safetensors(_dir: &Path, p: &Path) {
    let _ = adfit::model::weights::read_safetensors(p);
    let _ = adfit::model::weights::read_safetensors_metadata(p);
}

fn read_vol(_dir: &Path, p: &Path) {
    let _ = adfit::data::cache::read_cached(p);
    let _ = adfit::data::cache::cached_shape(p);
}

fn load_backbone(dir: &Path, _p: &Path) {
    use adfit::model::backbones::m3d::Backbone;
    let _ = Backbone::<Cpu>::load(&dir.join("backbone"), None, Default::default(), &Default::default());
}

fn read_vocab(_dir: &Path, p: &Path) {
    if let Ok(t) = adfit::model::tokenizer::TextTokenizer::from_file(p, 32) {
        let _ = t.encode_one("Hippocampus volume 7.1 cm³, ventricles enlarged; A photo of AD.");
    }
}

fn read_settings(_dir: &Path, p: &Path) {
    let _ = adfit::settings::RunSettings::from_file(p);
    let _ = adfit::data::report::ReportTemplate::from_json(p);
}

fn load_checkpoint(dir: &Path, _p: &Path) {
    checkpoint::load(dir);
}

/// The run checkpoint targets: a tiny model, its optimiser, and `checkpoint::load`.
mod checkpoint {
    use super::*;
    use adfit::model::method::{AdClip, MethodConfig};
    use burn::backend::Autodiff;
    use burn::optim::AdamWConfig;

    type B = Autodiff<Cpu>;

    fn method() -> MethodConfig {
        MethodConfig { visual_prompts: 2, text_prompts: 2, embed_dim: 16, mmse_hidden: 8, ..Default::default() }
    }

    fn model(dir: &Path) -> AdClip<B> {
        use adfit::model::backbones::m3d::Backbone;
        let device = Default::default();
        let b = Backbone::<B>::load(&dir.join("backbone"), None, Default::default(), &device).unwrap();
        AdClip::new(b.model, &method(), &device)
    }

    /// Write a checkpoint of the tiny model under `dir/run`; return its three files' bytes.
    pub fn seeds(dir: &Path) -> [Vec<u8>; 3] {
        let m = model(dir);
        let optim = AdamWConfig::new().init::<B, AdClip<B>>();
        let run = dir.join("run");
        let scale = adfit::run_folder::MmseScale { mean: 27.0, std: 2.5 };
        adfit::train::checkpoint::save(&run, 1, &m, &optim, scale, &serde_json::json!({"epoch": 1})).unwrap();
        let ck = run.join("checkpoint-1");
        ["trainable.safetensors", "optimizer.mpk", "state.json"].map(|f| std::fs::read(ck.join(f)).unwrap())
    }

    pub fn load(dir: &Path) {
        let m = model(dir);
        let optim = AdamWConfig::new().init::<B, AdClip<B>>();
        let _ = adfit::train::checkpoint::load::<B, serde_json::Value>(
            &dir.join("run").join("checkpoint-1"),
            m,
            optim,
            &method(),
            &Default::default(),
        );
    }
}

fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "nifti",
            file: "x.nii",
            tokens: BIN_TOKENS,
            fields: NIFTI_FIELDS,
            gz_payload: false,
            read: read_nifti,
        },
        Target {
            name: "nifti-gz",
            file: "x.nii.gz",
            tokens: BIN_TOKENS,
            fields: NIFTI_FIELDS,
            gz_payload: true,
            read: read_nifti,
        },
        Target {
            name: "table",
            file: "table.csv",
            tokens: CSV_TOKENS,
            fields: &[],
            gz_payload: false,
            read: read_table,
        },
        Target {
            name: "scan-list",
            file: "scans.csv",
            tokens: CSV_TOKENS,
            fields: &[],
            gz_payload: false,
            read: read_scan_list,
        },
        Target {
            name: "index",
            file: "index.csv",
            tokens: CSV_TOKENS,
            fields: &[],
            gz_payload: false,
            read: read_index,
        },
        Target {
            name: "split",
            file: "split.csv",
            tokens: CSV_TOKENS,
            fields: &[],
            gz_payload: false,
            read: read_split,
        },
        Target {
            name: "safetensors",
            file: "w.safetensors",
            tokens: BIN_TOKENS,
            fields: &[(0, 8)],
            gz_payload: false,
            read: read_safetensors,
        },
        Target {
            name: "vol",
            file: "x.vol",
            tokens: BIN_TOKENS,
            fields: &[(8, 4), (12, 4), (16, 4), (20, 4), (24, 8)],
            gz_payload: false,
            read: read_vol,
        },
        Target {
            name: "config-json",
            file: "backbone/config.json",
            tokens: JSON_TOKENS,
            fields: &[],
            gz_payload: false,
            read: load_backbone,
        },
        Target {
            name: "backbone-weights",
            file: "backbone/model.safetensors",
            tokens: BIN_TOKENS,
            fields: &[(0, 8)],
            gz_payload: false,
            read: load_backbone,
        },
        Target {
            name: "vocab",
            file: "vocab.txt",
            tokens: CSV_TOKENS,
            fields: &[],
            gz_payload: false,
            read: read_vocab,
        },
        Target {
            name: "settings-json",
            file: "settings.json",
            tokens: JSON_TOKENS,
            fields: &[],
            gz_payload: false,
            read: read_settings,
        },
        Target {
            name: "checkpoint-trainable",
            file: "run/checkpoint-1/trainable.safetensors",
            tokens: BIN_TOKENS,
            fields: &[(0, 8)],
            gz_payload: false,
            read: load_checkpoint,
        },
        Target {
            name: "checkpoint-optimizer",
            file: "run/checkpoint-1/optimizer.mpk",
            tokens: BIN_TOKENS,
            fields: &[],
            gz_payload: false,
            read: load_checkpoint,
        },
        Target {
            name: "checkpoint-state",
            file: "run/checkpoint-1/state.json",
            tokens: JSON_TOKENS,
            fields: &[],
            gz_payload: false,
            read: load_checkpoint,
        },
    ]
}

/// The folder a worker reads from (a tiny backbone, a run checkpoint) and the target's seeds.
fn prepare(dir: &Path, target: &Target) -> Vec<Vec<u8>> {
    let need_backbone = target.name.starts_with("config")
        || target.name.starts_with("backbone")
        || target.name.starts_with("checkpoint");
    if need_backbone {
        common::tiny_backbone(&dir.join("backbone"));
    }
    let text = |s: &str| vec![s.as_bytes().to_vec()];
    match target.name {
        "nifti" => nifti_seeds(dir, ".nii"),
        "nifti-gz" => nifti_seeds(dir, ".nii.gz"),
        "table" => vec![ADNI.as_bytes().to_vec(), OASIS.as_bytes().to_vec(), ADNI.replace('\n', "\r\n").into_bytes()],
        "scan-list" => vec![
            b"path,image_id\nadni/a.nii.gz,I35475\nadni/b.nii.gz,32237\n".to_vec(),
            b"path,subject,date\r\nx.nii,011_S_0002,2005-09-08\r\ny.hdr,011_S_0003,2005-09-12\r\n".to_vec(),
        ],
        "index" => text(
            "scan,subject,visit,date,label,mmse,age,sex,hippocampus,ventricles,whole_brain,entorhinal,fusiform,mid_temp,icv,report,cache,source,table_line\n\
             a,011_S_0002,bl,2005-09-08,NC,28,74.3,Male,8336,118233,1229740,4177,16559,27936,1984660,\"The hippocampus is normal.\",volumes/a.vol,adni/a.nii.gz,2\n\
             b,011_S_0003,bl,2005-09-12,AD,20,81.3,Female,,,,,,,,\"A report, quoted\",volumes/b.vol,adni/b.nii.gz,4\n",
        ),
        "split" => text("fold,subject,part,stratum\n0,s1,train,NC\n0,s2,val,AD\n0,s3,test,MCI\n1,s1,test,NC\n1,s2,train,AD\n1,s3,train,MCI\n"),
        "safetensors" => {
            let backbone = dir.join("b");
            common::tiny_backbone(&backbone);
            vec![std::fs::read(backbone.join("model.safetensors")).unwrap()]
        }
        "vol" => {
            let p = dir.join("seed.vol");
            let v = Volume::from_fn([3, 4, 5], identity(), |i, j, k| (i + j * k) as f32);
            adfit::data::cache::write_cached(&p, &v).unwrap();
            vec![std::fs::read(&p).unwrap()]
        }
        "config-json" => vec![std::fs::read(dir.join("backbone/config.json")).unwrap()],
        "backbone-weights" => vec![std::fs::read(dir.join("backbone/model.safetensors")).unwrap()],
        "vocab" => {
            let words = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\nphoto\nof\nad\nmci\nnc\nhip\n##po\n##campus\nvolume\n.\n,\n";
            vec![words.as_bytes().to_vec()]
        }
        "settings-json" => vec![
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/finetune.json")).unwrap(),
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/report.json")).unwrap(),
        ],
        name if name.starts_with("checkpoint") => {
            let [trainable, optimizer, state] = checkpoint::seeds(dir);
            vec![match name {
                "checkpoint-trainable" => trainable,
                "checkpoint-optimizer" => optimizer,
                _ => state,
            }]
        }
        other => panic!("no seeds for {other}"),
    }
}

/// One execution: write the input where the target reads it, and read it.
fn execute(dir: &Path, target: &Target, input: &[u8]) {
    let p = dir.join(target.file);
    std::fs::write(&p, input).unwrap();
    (target.read)(dir, &p);
}

fn crash_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz/crashes")
}

/// The worker: mutate and execute until the deadline; panics are caught and saved, an abort
/// ends the process (the supervisor saves `current`).
#[test]
#[ignore = "run by fuzz_readers"]
fn fuzz_worker() {
    let Ok(name) = std::env::var("ADFIT_FUZZ_TARGET") else { return };
    let secs: f64 = std::env::var("ADFIT_FUZZ_WORKER_SECS").unwrap().parse().unwrap();
    let seed: u64 = std::env::var("ADFIT_FUZZ_SEED").unwrap().parse().unwrap();
    let current = PathBuf::from(std::env::var("ADFIT_FUZZ_CURRENT").unwrap());
    let all = targets();
    let target = all.iter().find(|t| t.name == name).unwrap();
    let dir = tempfile::tempdir().unwrap();
    if let Some(parent) = dir.path().join(target.file).parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let seeds = prepare(dir.path(), target);
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(seed);
    let mut corpus = seeds.clone();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let (mut execs, mut panics) = (0u64, 0u64);
    let started = Instant::now();
    while Instant::now() < deadline {
        let base = &corpus[rng.below(corpus.len())];
        let input = if target.gz_payload && rng.below(2) == 0 {
            gzip(&mutate(&mut rng, &gunzip(base), &[], target.tokens, target.fields))
        } else {
            mutate(&mut rng, base, &corpus, target.tokens, target.fields)
        };
        std::fs::write(&current, &input).unwrap();
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| execute(dir.path(), target, &input)));
        execs += 1;
        if ok.is_err() {
            panics += 1;
            let out = crash_dir().join(format!("{}-panic-{seed}-{execs}", target.name));
            std::fs::create_dir_all(crash_dir()).unwrap();
            std::fs::write(&out, &input).unwrap();
        } else if corpus.len() < 64 && rng.below(50) == 0 {
            // Keep a few mutants as new starting points (a cheap stand-in for coverage feedback).
            corpus.push(input);
        }
    }
    println!(
        "FUZZ {{\"target\":\"{}\",\"execs\":{execs},\"secs\":{:.2},\"panics\":{panics}}}",
        target.name,
        started.elapsed().as_secs_f64()
    );
}

/// The supervisor: every target for its share of the budget, restarting after aborts.
#[test]
fn fuzz_readers() {
    let budget: f64 = std::env::var("ADFIT_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20.0);
    let only = std::env::var("ADFIT_FUZZ_ONLY").ok();
    let all: Vec<Target> =
        targets().into_iter().filter(|t| only.as_deref().is_none_or(|o| o.split(',').any(|n| n == t.name))).collect();
    let share = budget / all.len() as f64;
    let exe = std::env::current_exe().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut found = Vec::new();
    let (mut total_execs, mut total_secs) = (0u64, 0.0f64);
    println!("fuzzing {} readers, {share:.1} s each", all.len());
    for t in &all {
        let current = work.path().join(format!("{}.current", t.name));
        let started = Instant::now();
        let (mut execs, mut secs, mut seed) = (0u64, 0.0f64, 0x5eed_0000u64);
        while started.elapsed().as_secs_f64() < share - 0.5 {
            let left = share - started.elapsed().as_secs_f64();
            let out = Command::new(&exe)
                .args(["fuzz_worker", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
                .env("ADFIT_FUZZ_TARGET", t.name)
                .env("ADFIT_FUZZ_WORKER_SECS", format!("{left:.2}"))
                .env("ADFIT_FUZZ_SEED", seed.to_string())
                .env("ADFIT_FUZZ_CURRENT", &current)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            if let Some(line) = stdout.lines().find_map(|l| l.find("FUZZ {").map(|i| &l[i + 5..])) {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                execs += v["execs"].as_u64().unwrap();
                secs += v["secs"].as_f64().unwrap();
                if v["panics"].as_u64().unwrap() > 0 {
                    found.push(format!("{}: {} panic(s), inputs in {}", t.name, v["panics"], crash_dir().display()));
                }
            }
            if !out.status.success() {
                std::fs::create_dir_all(crash_dir()).unwrap();
                let saved = crash_dir().join(format!("{}-abort-{seed}", t.name));
                let _ = std::fs::copy(&current, &saved);
                let tail: String =
                    String::from_utf8_lossy(&out.stderr).lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                found.push(format!(
                    "{}: worker died ({}): {tail}; input saved as {}",
                    t.name,
                    out.status,
                    saved.display()
                ));
            }
            seed += 1;
        }
        println!(
            "  {:<22} {:>9} execs in {:>6.1} s = {:>8.0} execs/s",
            t.name,
            execs,
            secs,
            execs as f64 / secs.max(1e-9)
        );
        total_execs += execs;
        total_secs += secs;
    }
    println!("fuzzing total: {total_execs} executions in {total_secs:.1} s, {} finding(s)", found.len());
    assert!(found.is_empty(), "fuzzing found:\n{}", found.join("\n"));
}

/// Every crash the fuzzer ever found, replayed through its reader.
#[test]
fn fuzz_regressions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let Ok(entries) = std::fs::read_dir(&root) else { return };
    let all = targets();
    let mut replayed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let target = all.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no fuzz target {name}"));
        let dir = tempfile::tempdir().unwrap();
        if let Some(parent) = dir.path().join(target.file).parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        let _ = prepare(dir.path(), target);
        for case in std::fs::read_dir(entry.path()).unwrap().flatten() {
            let input = std::fs::read(case.path()).unwrap();
            execute(dir.path(), target, &input);
            replayed += 1;
        }
    }
    println!("replayed {replayed} fuzz regression case(s)");
}
