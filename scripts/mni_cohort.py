"""A small labelled cohort from a different generator than `adfit synth`: the real MNI152 2009a
T1 template that the nilearn wheel ships (with its grey- and white-matter maps), deformed per
subject. For checking a backbone on anatomy it was never pre-trained on (`adfit probe`).

Each subject draws a latent severity s in [0, 1) and, independently, how large its structures
are to begin with. Atrophy then:
- enlarges the lateral ventricles (the template's CSF near the midline, grown by up to 4 voxels),
- shrinks the medial temporal grey matter (in a box around each hippocampus in MNI space: up to
  45% of its voxels, those nearest its border) and
- thins the cortex (the brain's outer layer eroded by up to 1 voxel),
with tissue turned to CSF intensity. Then a scanner: intensity scale, a smooth bias field and
Gaussian noise, stored as int16. The diagnosis is the tercile of s (NC, MCI, AD), the MMSE falls
with s, and the table's Ventricles, Hippocampus (the medial temporal grey matter), WholeBrain and
ICV are counted from the deformed masks; Entorhinal, Fusiform and MidTemp are left empty.

Writes OUT/images/*.nii.gz, OUT/scans.csv and OUT/ADNIMERGE.csv (adfit's ADNIMERGE reader):

    pip download --no-deps nilearn==0.14.1 -d ~/.cache/adfit-assets/wheels
    python scripts/mni_cohort.py ~/.cache/adfit-assets/wheels/nilearn-0.14.1-py3-none-any.whl OUT [N] [SEED]
    adfit preprocess --scans OUT/scans.csv --table OUT/ADNIMERGE.csv --out OUT/cache --shape 64,64,64
    adfit split --index OUT/cache/index.csv --out OUT/split.csv --folds 5 --seed 0
    adfit probe --backbone backbones/brain-64 --cohort OUT/cache/index.csv --split OUT/split.csv

Needs numpy, scipy and nibabel.
"""

import csv
import gzip
import io
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

MEMBER = "nilearn/datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
STEP_MM = 1.5  # the template (1 mm) is resampled to this grid first, to keep the files small


def load(wheel: Path, kind: str):
    with zipfile.ZipFile(wheel) as z:
        raw = z.read(MEMBER.format(kind))
    fh = nib.FileHolder(fileobj=io.BytesIO(gzip.decompress(raw)))
    img = nib.Nifti1Image.from_file_map({"header": fh, "image": fh})
    data = np.asarray(img.dataobj, dtype=np.float32)
    zoom = 1.0 / STEP_MM
    affine = img.affine.copy()
    affine[:3, :3] *= STEP_MM
    return ndimage.zoom(data, zoom, order=1), affine


def world(affine, shape):
    """MNI coordinates (mm) of every voxel centre, as three arrays of `shape`."""
    idx = np.indices(shape).reshape(3, -1)
    xyz = affine[:3, :3] @ idx + affine[:3, 3:4]
    return [c.reshape(shape) for c in xyz]


def template(wheel: Path):
    t1, affine = load(wheel, "t1")
    gm, _ = load(wheel, "gm")
    wm, _ = load(wheel, "wm")
    brain = t1 > 10
    x, y, z = world(affine, t1.shape)
    csf = brain & (gm < 80) & (wm < 80)
    central = (np.abs(x) < 30) & (y > -45) & (y < 25) & (z > -5) & (z < 32)
    labels, n = ndimage.label(csf & central)
    sizes = ndimage.sum(np.ones_like(labels), labels, range(1, n + 1))
    ventricles = np.isin(labels, 1 + np.argsort(sizes)[-2:])  # the two largest: left and right
    box = (np.abs(x) > 16) & (np.abs(x) < 38) & (y > -42) & (y < -6) & (z > -28) & (z < -4)
    mtl = box & (gm > 110)
    csf_level = float(np.median(t1[ventricles]))
    # Distance (voxels) from the ventricles, and depth inside the medial temporal grey matter
    # (plus a fixed jitter that orders equal depths), for continuous enlargement and shrinkage.
    vent_distance = ndimage.distance_transform_edt(~ventricles)
    jitter = np.random.default_rng(12345).random(t1.shape) * 1e-3
    mtl_depth = ndimage.distance_transform_edt(mtl) + jitter
    return dict(t1=t1, affine=affine, brain=brain, ventricles=ventricles, mtl=mtl, csf=csf_level,
                vent_distance=vent_distance, mtl_depth=mtl_depth)


def subject(tpl, rng):
    s = rng.random()
    t1 = tpl["t1"].copy()
    brain = tpl["brain"].copy()
    # How large each structure is to begin with, independent of the disease.
    vent_base = rng.normal(0, 0.7)
    mtl_base = rng.normal(0, 0.06)
    reach = max(0.0, 4 * s + vent_base + rng.normal(0, 0.5))
    vent = (tpl["vent_distance"] <= reach) & brain
    # Medial temporal grey matter loses the share f of its voxels nearest its border.
    f = float(np.clip(0.45 * s + mtl_base + rng.normal(0, 0.05), 0, 0.9))
    depth = tpl["mtl_depth"]
    mtl = tpl["mtl"] & (depth >= np.quantile(depth[tpl["mtl"]], f))
    thin = int(rng.random() < s)
    shrunk = ndimage.binary_erosion(brain, iterations=thin) if thin else brain
    t1[(brain & ~shrunk) | vent | (tpl["mtl"] & ~mtl)] = tpl["csf"]
    t1[~brain] = 0
    # Scanner: scale, smooth bias field, noise.
    x, y, z = (np.linspace(-1, 1, n) for n in t1.shape)
    bias = 1 + 0.1 * (rng.normal() * x[:, None, None] + rng.normal() * y[None, :, None] + rng.normal() * z[None, None, :])
    t1 = t1 * bias * rng.uniform(4, 8) + rng.normal(0, 6, t1.shape)
    t1 = np.clip(np.round(t1), -32768, 32767).astype(np.int16)
    voxel = STEP_MM**3
    volumes = dict(
        Ventricles=vent.sum() * voxel,
        Hippocampus=mtl.sum() * voxel,
        WholeBrain=(shrunk & ~vent).sum() * voxel,
        ICV=brain.sum() * voxel,
    )
    dx = "CN" if s < 1 / 3 else "MCI" if s < 2 / 3 else "Dementia"
    mmse = int(np.clip(round(29.5 - 9 * s + rng.normal(0, 1.2)), 0, 30))
    return t1, volumes, dx, mmse


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    wheel, out = Path(sys.argv[1]), Path(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 150
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    rng = np.random.default_rng(seed)
    tpl = template(wheel)
    (out / "images").mkdir(parents=True, exist_ok=True)
    columns = ["RID", "PTID", "VISCODE", "EXAMDATE", "AGE", "PTGENDER", "MMSE"]
    columns += ["Ventricles", "Hippocampus", "WholeBrain", "Entorhinal", "Fusiform", "MidTemp", "ICV", "DX"]
    with open(out / "ADNIMERGE.csv", "w", newline="") as table, open(out / "scans.csv", "w", newline="") as scans:
        t, sc = csv.writer(table), csv.writer(scans)
        t.writerow(columns)
        sc.writerow(["path", "subject", "date"])
        for i in range(n):
            t1, vol, dx, mmse = subject(tpl, rng)
            ptid = f"900_S_{i:04d}"
            path = f"images/{ptid}_bl.nii.gz"
            nib.save(nib.Nifti1Image(t1, tpl["affine"]), str(out / path))
            age = round(float(rng.uniform(60, 85)), 1)
            sex = "Female" if rng.random() < 0.5 else "Male"
            t.writerow([9000 + i, ptid, "bl", "2020-01-15", age, sex, mmse]
                       + [round(vol["Ventricles"]), round(vol["Hippocampus"]), round(vol["WholeBrain"]), "", "", ""]
                       + [round(vol["ICV"]), dx])
            sc.writerow([path, ptid, "2020-01-15"])
    print(f"{n} subjects → {out}")


if __name__ == "__main__":
    main()
